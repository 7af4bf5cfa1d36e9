# -*- coding: utf-8 -*-
# Copyright: fleet.azure_iot contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""PRIVATE to fleet.azure_iot: ``content_update: swap`` of iothub_configuration: new content without an outage.

IoT Hub never changes a configuration's content, and deleting one to create it again leaves the devices it
targeted without its modules until the new one is applied (minutes).  A swap keeps the deployment running:

1. the declared content is created as a new *generation* of the deployment, under a derived id
   (``<id>-g<n>``, labelled ``fleetAzureIotDeployment: <id>`` and ``fleetAzureIotGeneration: <n>``), at a priority
   above the current generation's, so that the hub applies it in place of the old one on every targeted device;
2. the task waits until the hub reports it applied where it targets (``appliedCount`` reaches ``targetedCount``,
   bounded by ``content_update_timeout``);
3. then the older generations are deleted, and the new one's priority is set back to the declared one.

The user's ``id`` keeps naming the deployment: the current generation is the newest one with its label (or the
configuration of that id).  A re-run with the same content changes nothing; a run that timed out in step 2 is
continued by the next one (the old generation is still there, so no device lost its modules).  Check mode
predicts the swap and writes nothing.
"""

from __future__ import annotations

import re
import time
from typing import Any, Callable, Dict, List, Optional

from ansible_collections.fleet.azure_iot.plugins.module_utils._diff import changed_paths
from ansible_collections.fleet.azure_iot.plugins.module_utils._errors import IoTApiError, PlanError
from ansible_collections.fleet.azure_iot.plugins.module_utils._resource import Converged
from ansible_collections.fleet.azure_iot.plugins.module_utils._resource_configuration import (
    ID_RE,
    ConfigurationPlan,
    _norm_content,
    _send_content,
    ensure_configuration,
)

LABEL_DEPLOYMENT = "fleetAzureIotDeployment"
LABEL_GENERATION = "fleetAzureIotGeneration"
POLL_SECONDS = (0.2, 0.5, 1.0, 2.0, 5.0)
GENERATION_RE = re.compile(r"^(?P<base>.+)-g(?P<n>[0-9]+)$")


def _copy(spec, **changes):
    """SPEC (a ConfigurationSpec) with CHANGES (already validated values)."""
    return spec.model_copy(update=changes)


def generation_of(cfg: Dict[str, Any], deployment: str) -> Optional[int]:
    """CFG's generation of DEPLOYMENT (1 for the configuration of that id without a label), None when it is not
    one of its generations."""
    labels = cfg.get("labels") or {}
    if labels.get(LABEL_DEPLOYMENT) == deployment:
        try:
            return int(labels.get(LABEL_GENERATION) or 1)
        except ValueError:
            return None
    return 1 if cfg.get("id") == deployment else None


def generations(client, deployment: str) -> List[Dict[str, Any]]:
    """Every generation of DEPLOYMENT in the hub, oldest first."""
    found = [(generation_of(c, deployment), c) for c in client.list_configurations()]
    return [c for n, c in sorted(((n, c) for n, c in found if n is not None), key=lambda x: (x[0], x[1]["id"]))]


def derived_id(deployment: str, n: int) -> str:
    suffix = f"-g{n}"
    cid = deployment[:128 - len(suffix)] + suffix
    if not ID_RE.match(cid):
        raise PlanError(f"id: {cid!r} (the generation id content_update=swap derives) is not a valid configuration id")
    return cid


def with_generation_labels(labels: Optional[Dict[str, str]], deployment: str, n: int) -> Dict[str, str]:
    out = {k: v for k, v in (labels or {}).items() if k not in (LABEL_DEPLOYMENT, LABEL_GENERATION)}
    out.update({LABEL_DEPLOYMENT: deployment, LABEL_GENERATION: str(n)})
    return out


def swap_configuration(client, spec, *, check_mode: bool, timeout: float, hide: Optional[Callable[[Any], None]] = None,
                       sleep: Callable[[float], None] = time.sleep,
                       clock: Callable[[], float] = time.monotonic) -> Converged:
    """Converge DEPLOYMENT (``spec.id``) with content changes made by a swap of generations."""
    gens = generations(client, spec.id)
    for cfg in gens:
        if hide is not None:
            hide(cfg)
    if spec.state == "absent" or not gens:
        return _absent(client, spec, gens, check_mode, hide) if spec.state == "absent" else \
            ensure_configuration(client, spec, check_mode=check_mode, hide=hide)
    current = gens[-1]
    n = generation_of(current, spec.id)
    labels = spec.labels if spec.labels is not None else (current.get("labels") or {})
    same = spec.content is None or _norm_content(spec.content) == _norm_content(current.get("content"))
    if same:
        own = with_generation_labels(labels, spec.id, n) if current["id"] != spec.id or n > 1 else spec.labels
        out = ensure_configuration(client, _copy(spec, id=current["id"], labels=own, recreate=False),
                                   check_mode=check_mode, hide=hide)
        if len(gens) > 1:  # an earlier swap stopped before it removed the old generations: finish it
            out.changed = _finish(client, current["id"], gens[:-1], check_mode, timeout, sleep, clock, out.notes,
                                  spec.priority) or out.changed
        return out
    new_id = derived_id(spec.id, n + 1)
    priority = spec.priority if spec.priority is not None else current.get("priority", 0)
    swap_priority = max(priority, current.get("priority", 0) + 1)
    body = {"id": new_id, "content": _send_content(spec.content),
            "targetCondition": spec.target_condition if spec.target_condition is not None
            else current.get("targetCondition") or "*",
            "priority": swap_priority, "labels": with_generation_labels(labels, spec.id, n + 1),
            "metrics": {"queries": spec.metrics if spec.metrics is not None
                        else (current.get("metrics") or {}).get("queries") or {}}}
    paths = changed_paths(_norm_content(current.get("content")), _norm_content(spec.content))
    plan = ConfigurationPlan(spec.id, "swap", {"content": ({k: v[0] for k, v in paths.items()},
                                                           {k: v[1] for k, v in paths.items()}),
                                               "generation": (current["id"], new_id)}, body, None)
    notes: List[str] = []
    if check_mode:
        notes.append(f"check mode: would create generation {new_id!r} (priority {swap_priority}), wait until it is "
                     f"applied where it targets, then delete {', '.join(repr(g['id']) for g in gens)}")
        return Converged(plan, dict(body), True, notes=notes)
    generation = _copy(spec, id=new_id, content=spec.content, labels=body["labels"],
                       target_condition=body["targetCondition"], priority=swap_priority,
                       metrics=body["metrics"]["queries"], recreate=False)
    created = ensure_configuration(client, generation, check_mode=False, hide=hide)
    notes += created.notes + [f"created generation {new_id!r} at priority {swap_priority}"]
    try:
        _finish(client, new_id, gens, False, timeout, sleep, clock, notes, priority)
    except IoTApiError as exc:
        exc.changed = True  # the new generation exists: the task wrote
        raise
    final = client.get_configuration(new_id)
    if hide is not None and final is not None:
        hide(final)
    out = Converged(plan, final, True, notes=notes, warnings=created.warnings)
    return out


def _finish(client, new_id: str, old: List[Dict[str, Any]], check_mode: bool, timeout: float, sleep, clock,
            notes: List[str], priority: Optional[int]) -> bool:
    """Wait until NEW_ID is applied where it targets, then delete the OLD generations and give NEW_ID the declared
    priority.  Returns whether it wrote."""
    if check_mode:
        notes.append(f"check mode: would delete the older generations {', '.join(repr(g['id']) for g in old)} "
                     f"once {new_id!r} is applied")
        return True
    start, polls = clock(), 0
    while True:
        cfg = client.get_configuration(new_id)
        if cfg is None:
            raise IoTApiError(f"content_update=swap: the new generation {new_id!r} is gone (deleted by someone else); "
                              "nothing else was changed: run again")
        results = (cfg.get("systemMetrics") or {}).get("results") or {}
        targeted, applied = results.get("targetedCount", 0), results.get("appliedCount", 0)
        if applied >= targeted:
            notes.append(f"generation {new_id!r} applied to {applied} of {targeted} targeted device(s)")
            break
        if clock() - start > timeout:
            raise IoTApiError(f"content_update=swap: generation {new_id!r} was created but is applied to {applied} of "
                              f"{targeted} targeted device(s) after {timeout:g} s (content_update_timeout); the older "
                              f"generation {old[-1]['id']!r} is kept, so no device lost its modules. Run again to "
                              "continue the swap")
        sleep(POLL_SECONDS[min(polls, len(POLL_SECONDS) - 1)])
        polls += 1
    for gen in old:
        etag = gen.get("etag")
        if not etag:  # never an unconditional delete: the etag of a strongly consistent read
            current = client.get_configuration(gen["id"])
            if current is None:
                continue
            etag = current.get("etag")
        r = client.delete_configuration(gen["id"], etag)
        if r.status_code in (200, 204, 404):
            notes.append(f"deleted the older generation {gen['id']!r}")
            continue
        raise IoTApiError(f"content_update=swap: deleting the older generation {gen['id']!r} answered HTTP "
                          f"{r.status_code}; generation {new_id!r} is applied, run again to finish", r.status_code)
    if priority is not None and cfg.get("priority") != priority:
        cfg = dict(cfg)
        cfg["priority"] = priority
        r = client.put_configuration(new_id, {k: v for k, v in cfg.items() if k != "systemMetrics"}, cfg.get("etag"))
        if r.status_code in (200, 201):
            notes.append(f"generation {new_id!r} has the declared priority {priority} again")
    return True


def _absent(client, spec, gens: List[Dict[str, Any]], check_mode: bool, hide) -> Converged:
    """state=absent deletes every generation of the deployment (only those: its id, or its label)."""
    plan = ConfigurationPlan(spec.id, "delete" if gens else "none",
                             {"state": ("present", "absent")} if gens else {}, None, None)
    notes: List[str] = []
    for gen in gens:
        if check_mode:
            notes.append(f"check mode: would delete generation {gen['id']!r}")
            continue
        ensure_configuration(client, _copy(spec, id=gen["id"], recreate=False), check_mode=False, hide=hide)
        notes.append(f"deleted generation {gen['id']!r}")
    return Converged(plan, None, bool(gens), notes=notes)
