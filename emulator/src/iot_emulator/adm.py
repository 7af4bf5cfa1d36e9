"""Automatic device management: configurations applied to the twins they target, as the hub does it
(iot-api-2.md §2.4), after a delay (``--adm-delay-s``, the ``adm_delay_s`` knob).

For every device twin, among the configurations of one kind (edge deployments: ``modulesContent``, for IoT Edge
devices; device configurations: ``deviceContent``) whose target condition matches it and whose delay has passed,
the highest priority wins; of two with the same priority, the one created most recently ("If two configurations
have the same priority number, the one that was created most recently wins", DOC 2018).  The winner's content is
written to the desired properties (the whole ``properties.desired`` of ``$edgeAgent``, ``$edgeHub`` and every
listed module, creating module twins that do not exist, as ``applyConfigurationContent`` does; a device
configuration's ``properties.desired.<path>`` values merged into the device twin), once per configuration; the
twin's ``configurations`` says ``Applied`` for the winner and ``Targeted`` for the others, which is what the
``appliedCount`` system metric counts.

Evaluation is lazy: before a request is answered, and only when a twin, a configuration or a due time changed.
CHOICE (sources disagree, §2.4 and §9): a device that no configuration targets any more keeps the content last
applied (the PEER observation; the 2018 docs say its settings are removed); module configurations
(``moduleContent``) are stored and counted but not applied.
"""

from __future__ import annotations

import time
from typing import Any

from . import query as _query
from .configurations import target_query
from .errors import ApiError
from .modules import apply_module_twin, create_module_for_content

KINDS = ("modulesContent", "deviceContent")


def kind_of(content: dict) -> str | None:
    return next((k for k in KINDS if content.get(k)), None)


class Adm:
    def __init__(self, registry, store, delay_s: float = 0.2):
        self.reg = registry
        self.store = store
        self.delay_s = delay_s
        self.applied: dict[str, dict[str, str]] = {}  # device id -> kind -> key of the configuration applied
        self._seen: tuple | None = None
        self._due: float | None = None
        self._matchers: dict[str, Any] = {}  # configuration id + target -> compiled WHERE (None: every device)

    def reset(self) -> None:
        self.applied.clear()
        self._seen = None
        self._due = None
        self._matchers.clear()

    def _matcher(self, cfg: dict):
        key = f"{cfg['id']}\0{cfg['targetCondition']}"
        if key not in self._matchers:
            text = target_query(cfg["targetCondition"])
            if text is None:
                self._matchers[key] = False  # an empty condition targets nothing
            else:
                try:
                    q = _query.parse(text)
                    self._matchers[key] = q.where if q.source == "devices" else False
                except ApiError:
                    self._matchers[key] = False
        return self._matchers[key]

    def tick(self, now: float | None = None) -> None:
        """Apply what is due.  Cheap when nothing changed (no configuration, or the same state as last time)."""
        if not self.store.items and not self.applied:
            return
        now = time.time() if now is None else now
        state = (self.reg.changes, self.store.changes)
        if state == self._seen and (self._due is None or now < self._due):
            return
        ready, due = [], None
        for cfg_id, cfg in self.store.items.items():
            at = self.store.ready_at.get(cfg_id, 0.0)
            if at <= now:
                ready.append(cfg)
            elif due is None or at < due:
                due = at
        self._due = due
        for did in list(self.reg.devices):
            self._evaluate(did, ready)
        self._seen = (self.reg.changes, self.store.changes)

    def _evaluate(self, did: str, ready: list) -> None:
        doc = None
        winners: dict[str, dict] = {}
        statuses: dict[str, str] = {}
        edge = self.reg.devices[did]["capabilities"]["iotEdge"]
        for cfg in ready:
            kind = kind_of(cfg["content"])
            if kind is None or (kind == "modulesContent" and not edge):
                continue
            where = self._matcher(cfg)
            if where is False:
                continue
            if where is not None:
                doc = doc if doc is not None else self.reg._twin_doc(did)
                if not where(doc):
                    continue
            statuses[cfg["id"]] = "Targeted"
            best = winners.get(kind)
            if best is None or (cfg["priority"], cfg["createdTimeUtc"]) > (best["priority"], best["createdTimeUtc"]):
                winners[kind] = cfg
        done = self.applied.setdefault(did, {})
        for kind, cfg in winners.items():
            statuses[cfg["id"]] = "Applied"
            key = f"{cfg['id']}\0{cfg['createdTimeUtc']}"  # content is immutable: one application per configuration
            if done.get(kind) != key:
                self._apply(did, kind, cfg["content"][kind])
                done[kind] = key
        if statuses != (self.reg.twin_configurations.get(did) or {}):
            if statuses:
                self.reg.twin_configurations[did] = statuses
            else:
                self.reg.twin_configurations.pop(did, None)
            self.reg._publish(did)

    def _apply(self, did: str, kind: str, content: dict) -> None:
        if kind == "modulesContent":
            for name, parts in content.items():
                desired = dict(parts.get("properties.desired") or {})
                for path, value in parts.items():  # a layered deployment's properties.desired.<path>
                    if path.startswith("properties.desired."):
                        _set_path(desired, path[len("properties.desired."):].split("."), value)
                if name not in self.reg.modules.get(did, {}):
                    create_module_for_content(self.reg, did, name)
                mode = "replace" if "properties.desired" in parts else "patch"
                apply_module_twin(self.reg, did, name, None, desired, mode)
            self.reg.edge_content[did] = content
            return
        patch: dict = {}
        for path, value in content.items():
            if path == "properties.desired" and isinstance(value, dict):
                patch.update(value)
            elif path.startswith("properties.desired."):
                _set_path(patch, path[len("properties.desired."):].split("."), value)
        self.reg._apply_twin(did, None, patch, "patch")


def _set_path(target: dict, parts: list, value: Any) -> None:
    for part in parts[:-1]:
        target = target.setdefault(part, {})
    target[parts[-1]] = value
