# -*- coding: utf-8 -*-
# Copyright: fleet.azure_iot contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""PRIVATE to fleet.azure_iot: the twin rules, once, for iothub_device, iothub_module and iothub_device_bulk: the
twin plan (``plan_twin``), its limits (``check_twin_limits``), the PATCH body (``patch_body``), the merge
(``merge_patch``) and the diff view (``twin_views``); and the twin half of an identity resource.

When a task declares ``tags`` or ``desired_properties``, the twin is read (``GET /twins/...``), planned with
``plan_twin`` (only the declared keys are managed, nested objects key by key, null removes a key), and written
with one ``PATCH`` (a documented merge, iot-api-2.md §6.1) carrying If-Match of the twin etag read: a 412 means
the twin moved, and the converge loop reads it again and re-plans."""

from __future__ import annotations

import copy
from typing import Any, Dict, Optional

from ansible_collections.fleet.azure_iot.plugins.module_utils._errors import IoTApiError, PlanError
from ansible_collections.fleet.azure_iot.plugins.module_utils._http import error_from_response, maybe_applied
from ansible_collections.fleet.azure_iot.plugins.module_utils._models import TWIN_SECTION_LIMITS, section_size
from ansible_collections.fleet.azure_iot.plugins.module_utils._resource import is_conflict, Written


def declared(spec) -> bool:
    return spec.tags is not None or spec.desired_properties is not None


def read_twin(client, spec, exists: bool, module_id: Optional[str] = None) -> Optional[Dict[str, Any]]:
    """The twin, when the task declares twin content.  It is read even for an identity that does not exist yet:
    the 404 proves the right the twin PATCH needs (ServiceConnect), so a credential without it fails before the
    identity is written instead of after (a 401 here names the right)."""
    if not (declared(spec) and spec.state == "present"):
        return None
    twin = client.get_twin(spec.device_id, module_id)
    return twin if exists else None


def plan_twin_part(plan, spec, twin: Optional[Dict[str, Any]], label: str) -> None:
    """Plan the twin and attach it to the identity plan (the full sections must stay within the limits)."""
    if plan.action == "delete" or spec.state != "present" or not declared(spec):
        return
    twin_plan = plan_twin(spec, twin)
    check_twin_limits(twin_plan, label)
    plan.add_twin(twin_plan, twin)


def check_twin_limits(twin_plan: Dict[str, Any], label: str) -> None:
    """The twin section limits (8 KB of tags, 32 KB of desired properties), on the sections as they would be after
    the plan (what the twin holds already counts): the same rule and message for iothub_device, iothub_module and
    every device of iothub_device_bulk."""
    for part, option in (("tags", "tags"), ("desired", "desired_properties")):
        full = (twin_plan.get("full") or {}).get(part)
        if full is not None and section_size(full) > TWIN_SECTION_LIMITS[option]:
            raise PlanError(f"{option}: {label} would hold {section_size(full)} bytes with what its twin holds "
                            f"already; IoT Hub allows {TWIN_SECTION_LIMITS[option]}: remove keys (value null) or "
                            "shorten values")


def patch_body(twin_plan: Dict[str, Any]) -> Dict[str, Any]:
    """The body of the twin PATCH that applies a twin plan (a documented merge: null removes a key)."""
    patch: Dict[str, Any] = {}
    if "tags" in twin_plan:
        patch["tags"] = twin_plan["tags"]
    if "desired" in twin_plan:
        patch["properties"] = {"desired": twin_plan["desired"]}
    return patch


def twin_views(twin_plan: Dict[str, Any], twin: Optional[Dict[str, Any]]) -> tuple:
    """(before, after) by option name of exactly the twin keys a twin plan changes, old value beside new: what the
    diff and ``changes`` show of a twin, single or bulk."""
    current = twin_sections(twin)
    before: Dict[str, Any] = {}
    after: Dict[str, Any] = {}
    for part, option in (("tags", "tags"), ("desired", "desired_properties")):
        if twin_plan.get(part):
            before[option], after[option] = twin_change_view(twin_plan[part], current[part])
    return before, after


def write_twin(client, plan, device_id: str, landed: bool, module_id: Optional[str] = None) -> Optional[Written]:
    """PATCH the twin; None when applied, else the conflict (the identity part may have ``landed`` already).  A
    failure after a landed identity write says ``changed``: the task's result must not hide that write."""
    if not plan.twin:
        return None
    try:
        return _patch_twin(client, plan, device_id, landed, module_id)
    except IoTApiError as exc:
        if landed:
            exc.changed = True
        raise


def _patch_twin(client, plan, device_id: str, landed: bool, module_id: Optional[str]) -> Optional[Written]:
    patch = patch_body(plan.twin)
    etag = plan.twin_etag
    if etag is None:  # the identity was created just now: read its fresh twin for the If-Match
        etag = (client.get_twin(device_id, module_id) or {}).get("etag")
    r = client.patch_twin(device_id, patch, etag, module_id)
    if r.status_code == 200:
        plan.twin_result = r.json()
        return None
    if is_conflict(r.status_code, "update"):
        return Written(False, None, r.status_code, maybe_applied(r), landed=landed)
    raise error_from_response(r, f"update twin of {device_id!r}" + (f" module {module_id!r}" if module_id else ""))


def twin_patch(declared: Optional[Dict[str, Any]], current: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    """The merge patch that makes ``current`` carry what ``declared`` says (only declared keys are managed;
    a declared ``None`` removes the key).  Empty when nothing differs."""
    if declared is None:
        return {}
    current = current or {}
    patch: Dict[str, Any] = {}
    for key, value in declared.items():
        if value is None:
            if key in current:
                patch[key] = None
        elif isinstance(value, dict) and isinstance(current.get(key), dict):
            sub = twin_patch(value, current[key])
            if sub:
                patch[key] = sub
        elif current.get(key) != value or key not in current:
            patch[key] = _strip_none(value)
    return patch


def _strip_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_none(v) for k, v in value.items() if v is not None}
    return value


def merge_patch(current: Optional[Dict[str, Any]], patch: Dict[str, Any]) -> Dict[str, Any]:
    """The twin PATCH rule (RFC 7386): objects merge key by key, None removes, anything else replaces."""
    out = dict(current or {})
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_patch(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def removes_keys(patch: Any) -> bool:
    """Whether a twin patch removes anything (a None at any depth)."""
    return isinstance(patch, dict) and any(v is None or removes_keys(v) for v in patch.values())


def twin_sections(twin: Optional[Dict[str, Any]]) -> Dict[str, Dict[str, Any]]:
    """The writable sections of a twin as read: tags and desired properties (without $metadata / $version)."""
    desired = ((twin or {}).get("properties") or {}).get("desired") or {}
    return {"tags": (twin or {}).get("tags") or {},
            "desired": {k: v for k, v in desired.items() if not k.startswith("$")}}


def kept_twin(twin: Dict[str, Any]) -> Dict[str, Any]:
    """What planning keeps of a twin it read: the etag and the writable sections.  Reported properties and
    metadata (up to 32 KB a device) are dropped: a fleet holds 100,000 twins while it plans."""
    sections = twin_sections(twin)
    return {"etag": twin.get("etag"), "tags": sections["tags"], "properties": {"desired": sections["desired"]}}


def plan_twin(spec, twin: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    """What the twin content a spec declares needs; an empty dict when nothing differs.  Otherwise:

    - ``tags`` / ``desired``: the merge patch of each section that changes (for PATCH and the diff);
    - ``full``: the complete intended section (what was read, with the declared changes applied and the removed
      keys left out), which gives the same twin whether a bulk updateTwin merges or replaces (iot-api-2.md §3.5);
    - ``removes``: True when a key is removed; a merge would keep a key a full section leaves out, so a
      removal is written with a twin PATCH (documented merge, null removes), never with a bulk updateTwin.
    """
    current = twin_sections(twin)
    out: Dict[str, Any] = {}
    for part, declared in (("tags", spec.tags), ("desired", spec.desired_properties)):
        patch = twin_patch(declared, current[part])
        if patch:
            out[part] = patch
            out.setdefault("full", {})[part] = merge_patch(current[part], patch)
            if removes_keys(patch):
                out["removes"] = True
    return out


_ABSENT = object()


def twin_change_view(patch: Dict[str, Any], current: Optional[Dict[str, Any]]) -> tuple:
    """(before, after) of exactly the keys a twin patch touches, old value beside new (a removed key is absent
    from ``after``, a new one from ``before``)."""
    before: Dict[str, Any] = {}
    after: Dict[str, Any] = {}
    current = current if isinstance(current, dict) else {}
    for key, value in patch.items():
        cur = current.get(key, _ABSENT)
        if isinstance(value, dict) and isinstance(cur, dict):
            before[key], after[key] = twin_change_view(value, cur)
            continue
        if cur is not _ABSENT:
            before[key] = cur
        if value is not None:
            after[key] = value
    return before, after


def twin_after(converged, read: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    """The twin a task leaves (what ``iothub_device`` and ``iothub_module`` return as ``twin``): as the hub answered
    the PATCH; as read when nothing was (left) to write; in check mode, or after a lost answer, what the plan puts
    in (the sections as read with the declared changes merged)."""
    if converged.plan.action == "none" or not converged.acted.twin:
        return read or {}
    if converged.acted.twin_result is not None:
        return converged.acted.twin_result
    full = converged.acted.twin.get("full") or {}
    out = dict(read or {})
    if "tags" in full:
        out["tags"] = full["tags"]
    if "desired" in full:
        out["properties"] = dict(out.get("properties") or {}, desired=full["desired"])
    return out
