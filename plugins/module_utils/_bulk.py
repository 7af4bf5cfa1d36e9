# -*- coding: utf-8 -*-
# Copyright: fleet.azure_iot contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""PRIVATE to fleet.azure_iot: converge a declared fleet with the fewest registry operations.

Reads with paged queries (a scan or ``deviceId IN [...]`` lists, whichever costs fewer pages), plans every
device with the same ``plan_device`` as iothub_device (plus ``plan_twin`` for tags and desired
properties), and writes only the differences through ``POST /devices`` (at most 100 per call), parents
before children.  Every bulk entry is conditional (create, updateIfMatchETag, deleteIfMatchETag,
updateTwinIfMatchETag), so a repeated call can never apply twice; an entry that meets a changed device
(409, 412, or a 404 for a query "ghost") is re-read with GET and re-planned.

Query twins carry no keys, and a bulk update replaces the whole identity (omitted keys are regenerated), so
a SAS device whose identity must be rewritten, or whose declared keys must be compared, is read with GET
first.  Twin-only changes need no GET.
"""

from __future__ import annotations

import copy
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from ansible_collections.fleet.azure_iot.plugins.module_utils._http import IoTApiError, error_from_response
from ansible_collections.fleet.azure_iot.plugins.module_utils._iothub import quote_literal
from ansible_collections.fleet.azure_iot.plugins.module_utils._models import (
    MAX_EDGE_DEPTH,
    DeviceSpec,
    is_planned_scope,
    planned_scope,
)
from ansible_collections.fleet.azure_iot.plugins.module_utils._plan import (
    DevicePlan,
    PlanError,
    display_view,
    plan_device,
    plan_twin,
)

MAX_BATCH = 100
MAX_ROUNDS = 4
MAX_QUERY_CHARS = 8000  # keep IN-list queries well under the service's query size limit
RECONCILE_CODES = {"PreconditionFailed", "EtagDoesNotMatch", "GenericPreconditionFailed", "DeviceAlreadyExists",
                   "DeviceNotFound"}
EXPORT_FIELDS = ("status", "statusReason", "authentication", "capabilities", "deviceScope", "parentScopes")


def identity_from_twin(twin: Dict[str, Any]) -> Dict[str, Any]:
    """What a query twin says of the identity (no keys: twins never carry them)."""
    return {
        "deviceId": twin["deviceId"],
        "etag": twin.get("deviceEtag"),
        "status": twin.get("status", "enabled"),
        "statusReason": twin.get("statusReason"),
        "authentication": {"type": twin.get("authenticationType") or "sas",
                           "symmetricKey": {"primaryKey": None, "secondaryKey": None},
                           "x509Thumbprint": twin.get("x509Thumbprint") or {}},
        "capabilities": twin.get("capabilities") or {"iotEdge": False},
        "deviceScope": twin.get("deviceScope"),
        "parentScopes": twin.get("parentScopes") or [],
    }


@dataclass
class Known:
    identity: Optional[Dict[str, Any]]  # None: absent
    keys_known: bool = False
    twin: Optional[Dict[str, Any]] = None


@dataclass
class Outcome:
    created: List[str] = field(default_factory=list)
    updated: List[str] = field(default_factory=list)
    deleted: List[str] = field(default_factory=list)
    unchanged: List[str] = field(default_factory=list)
    failed: List[Dict[str, Any]] = field(default_factory=list)
    diffs: List[Dict[str, Any]] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)


def validate_fleet(specs: List[DeviceSpec], prune: bool, prune_query: Optional[str], batch_size: int,
                   max_concurrency: int) -> None:
    """Everything that can be checked before the first request."""
    if not 1 <= batch_size <= MAX_BATCH:
        raise PlanError(f"batch_size must be between 1 and {MAX_BATCH} (IoT Hub takes at most {MAX_BATCH} devices per bulk call)")
    if max_concurrency < 1:
        raise PlanError("max_concurrency must be at least 1")
    if prune and not (prune_query or "").strip():
        raise PlanError("prune=true needs prune_query, a WHERE clause that selects the devices this task owns "
                        "(for example tags.fleet = 'plant-7'); pruning the whole hub is refused")
    seen, dups = set(), []
    for s in specs:
        if s.device_id in seen and s.device_id not in dups:
            dups.append(s.device_id)
        seen.add(s.device_id)
    if dups:
        raise PlanError(f"devices: declared more than once: {', '.join(dups[:20])}")
    by_id = {s.device_id: s for s in specs}
    for s in specs:
        if s.state != "present" or not s.parent:
            continue
        parent = by_id.get(s.parent)
        if parent is not None:
            if parent.state == "absent":
                raise PlanError(f"devices: {s.device_id!r} has parent {s.parent!r}, which is declared state=absent")
            if parent.edge_enabled is False:
                raise PlanError(f"devices: {s.device_id!r} has parent {s.parent!r}, which is declared with "
                                "edge_enabled=false; only IoT Edge devices can be parents")
    # Cycles and depth among declared devices.
    for s in specs:
        chain, cur = [s.device_id], s
        edge_layers = 1 if s.edge_enabled else 0
        while cur.parent and cur.parent in by_id:
            if cur.parent in chain:
                raise PlanError(f"devices: parent cycle: {' -> '.join(chain + [cur.parent])}")
            chain.append(cur.parent)
            cur = by_id[cur.parent]
            edge_layers += 1
        if edge_layers > MAX_EDGE_DEPTH:
            raise PlanError(f"devices: {s.device_id!r} would nest IoT Edge devices {edge_layers} layers deep "
                            f"({' -> '.join(reversed(chain))}); IoT Edge supports at most {MAX_EDGE_DEPTH}")


class BulkReconciler:
    def __init__(self, client, specs: List[DeviceSpec], *, prune: bool = False, prune_query: Optional[str] = None,
                 batch_size: int = MAX_BATCH, max_concurrency: int = 4, check_mode: bool = False,
                 prune_children: bool = False):
        self.prune_children = prune_children
        self.client = client
        self.specs = specs
        self.by_id = {s.device_id: s for s in specs}
        self.prune = prune
        self.prune_query = prune_query
        self.batch_size = batch_size
        self.max_concurrency = max_concurrency
        self.check_mode = check_mode
        self.state: Dict[str, Known] = {}
        self.plans: Dict[str, DevicePlan] = {}
        self.twin_plans: Dict[str, Dict[str, Any]] = {}
        self.out = Outcome()
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ reads
    def _pool(self, fn, items):
        if not items:
            return []
        if self.max_concurrency == 1 or len(items) == 1:
            return [fn(i) for i in items]
        with ThreadPoolExecutor(max_workers=min(self.max_concurrency, len(items))) as pool:
            return list(pool.map(fn, items))

    def read(self) -> List[str]:
        """Load the current state of every declared device and referenced parent; return prune candidates."""
        wanted = set(self.by_id)
        wanted |= {s.parent for s in self.specs if s.parent}
        ids = sorted(wanted)
        chunks = self._in_chunks(ids)
        total = next(iter(self.client.query("SELECT COUNT() AS n FROM devices")), {}).get("n", 0)
        scan_pages = max(1, -(-total // 1000))
        if scan_pages <= len(chunks):
            twins = (t for t in self.client.query("SELECT * FROM devices") if t.get("deviceId") in wanted)
        else:
            twins = (t for chunk in chunks for t in self.client.query(chunk))
        for twin in twins:
            self.state[twin["deviceId"]] = Known(identity_from_twin(twin), False, twin)
        # A device the query does not show is taken as absent: a create then meets DeviceAlreadyExists and is
        # reconciled; a device declared absent but created moments ago (not yet indexed) is deleted by the next
        # run.  Confirming every unseen absent device with GET would cost a read per device every night.
        for device_id in ids:
            self.state.setdefault(device_id, Known(None, True, None))
        candidates = []
        if self.prune_children:
            candidates += self._undeclared_children()
        if self.prune:
            for twin in self.client.query(f"SELECT * FROM devices WHERE {self.prune_query}"):
                did = twin.get("deviceId")
                if did and did not in self.by_id:
                    candidates.append(did)
                    self.state[did] = Known(identity_from_twin(twin), False, twin)
        return sorted(set(candidates))

    def _undeclared_children(self) -> List[str]:
        """Devices whose parent is a declared, existing edge device, but which are not declared themselves."""
        scopes = sorted(k.identity["deviceScope"] for did, k in self.state.items()
                        if did in self.by_id and self.by_id[did].state == "present" and k.identity
                        and k.identity["capabilities"].get("iotEdge") and k.identity.get("deviceScope"))
        found = []
        clauses, length = [], 0
        batches = []
        for scope in scopes:
            clause = f"array_contains(parentScopes, {quote_literal(scope)})"
            if clauses and length + len(clause) > MAX_QUERY_CHARS:
                batches.append(clauses)
                clauses, length = [], 0
            clauses.append(clause)
            length += len(clause) + 4
        if clauses:
            batches.append(clauses)
        for batch in batches:
            for twin in self.client.query("SELECT * FROM devices WHERE " + " OR ".join(batch)):
                did = twin.get("deviceId")
                if did and did not in self.by_id:
                    found.append(did)
                    self.state[did] = Known(identity_from_twin(twin), False, twin)
        return found

    @staticmethod
    def _in_chunks(ids: List[str]) -> List[str]:
        chunks, current = [], []
        base = "SELECT * FROM devices WHERE deviceId IN []"
        length = len(base)
        for did in ids:
            lit = quote_literal(did)
            if current and (length + len(lit) + 2 > MAX_QUERY_CHARS or len(current) >= 1000):
                chunks.append(current)
                current, length = [], len(base)
            current.append(lit)
            length += len(lit) + 2
        if current:
            chunks.append(current)
        return [f"SELECT * FROM devices WHERE deviceId IN [{', '.join(c)}]" for c in chunks]

    def refresh(self, ids: List[str], with_twin: bool = False) -> None:
        """GET the full identities (keys included), and the twins when asked."""
        def fetch(did):
            device = self.client.get_device(did)
            twin = self.client.get_twin(did) if (with_twin and device is not None) else None
            return did, device, twin
        for did, device, twin in self._pool(fetch, sorted(set(ids))):
            old = self.state.get(did)
            if device is None:
                self.state[did] = Known(None, True, None)
            else:
                self.state[did] = Known(device, True, twin if twin is not None else (old.twin if old else None))

    # ------------------------------------------------------------- planning
    def check_parents(self, candidates: List[str]) -> None:
        """After the read, before any write: every referenced parent exists (or is declared) and is edge."""
        problems = []
        missing = [s.parent for s in self.specs if s.state == "present" and s.parent and s.parent not in self.by_id
                   and self.state[s.parent].identity is None]
        if missing:
            self.refresh(missing)  # the query index lags: confirm with GET before calling a parent missing
        for s in self.specs:
            if s.state != "present" or not s.parent:
                continue
            if s.parent in candidates:
                problems.append(f"{s.device_id!r}: its parent {s.parent!r} matches prune_query but is not declared; "
                                "declare it or narrow prune_query")
                continue
            declared = self.by_id.get(s.parent)
            known = self.state.get(s.parent)
            current_edge = bool(known and known.identity and known.identity["capabilities"].get("iotEdge"))
            if declared is not None:
                if declared.edge_enabled is None and not current_edge and known and known.identity is not None:
                    problems.append(f"{s.device_id!r}: parent {s.parent!r} is not an IoT Edge device; declare it "
                                    "with edge_enabled=true")
                elif declared.edge_enabled is None and (known is None or known.identity is None):
                    problems.append(f"{s.device_id!r}: parent {s.parent!r} is declared without edge_enabled=true "
                                    "and does not exist yet; declare it with edge_enabled=true")
                continue
            if known is None or known.identity is None:
                if self.check_mode:
                    self.out.notes.append(f"{s.device_id}: parent {s.parent!r} does not exist yet; check mode "
                                          "assumes it will be created first")
                    continue
                problems.append(f"{s.device_id!r}: parent {s.parent!r} does not exist; declare it in devices or "
                                "create it first")
            elif not current_edge:
                problems.append(f"{s.device_id!r}: parent {s.parent!r} is not an IoT Edge device")
        if problems:
            raise PlanError("devices: " + "; ".join(problems[:20]) + (f" (and {len(problems) - 20} more)" if len(problems) > 20 else ""))

    def levels(self) -> List[List[DeviceSpec]]:
        depth: Dict[str, int] = {}

        def level(s: DeviceSpec) -> int:
            if s.device_id not in depth:
                parent = self.by_id.get(s.parent) if s.parent else None
                depth[s.device_id] = 0 if parent is None else level(parent) + 1
            return depth[s.device_id]
        out: Dict[int, List[DeviceSpec]] = {}
        for s in self.specs:
            if s.state == "present":
                out.setdefault(level(s), []).append(s)
        return [out[k] for k in sorted(out)]

    def parent_scope(self, s: DeviceSpec) -> Optional[str]:
        if s.parent is None or s.parent == "":
            return s.parent
        known = self.state.get(s.parent)
        scope = known.identity.get("deviceScope") if known and known.identity else None
        if scope:
            return scope
        if self.check_mode:
            return planned_scope(s.parent)
        raise PlanError(f"devices: parent {s.parent!r} of {s.device_id!r} has no deviceScope yet")

    def plan(self, s: DeviceSpec):
        known = self.state.get(s.device_id) or Known(None, True, None)
        plan = plan_device(s, known.identity, self.parent_scope(s) if s.state == "present" else None)
        twin = plan_twin(s, known.twin) if s.state == "present" and plan.action != "delete" else {}
        return plan, twin, known

    def needs_get(self, s: DeviceSpec, plan: DevicePlan, known: Known) -> bool:
        if known.keys_known or known.identity is None or s.state != "present":
            return False
        if s.primary_key is not None or s.secondary_key is not None:
            return True  # declared keys must be compared with the hub's
        return plan.action == "update" and plan.after["auth_type"] == "sas" and plan.before["auth_type"] == "sas"

    # --------------------------------------------------------------- writes
    def entry(self, s: DeviceSpec, plan: DevicePlan, twin: Dict[str, Any], known: Known) -> Optional[Dict[str, Any]]:
        e: Dict[str, Any] = {"id": s.device_id}
        if plan.action in ("create", "update"):
            e["importMode"] = "create" if plan.action == "create" else "updateIfMatchETag"
            if plan.action == "update":
                e["eTag"] = plan.etag
            for k in EXPORT_FIELDS:
                if k in plan.body and not (k == "deviceScope" and plan.body[k] is None):
                    e[k] = copy.deepcopy(plan.body[k])
        elif plan.action == "delete":
            e.update(importMode="deleteIfMatchETag", eTag=plan.etag)
            return e
        elif twin:
            twin_etag = (known.twin or {}).get("etag")
            if twin_etag:
                e.update(importMode="updateTwinIfMatchETag", twinETag=twin_etag)
            else:
                e["importMode"] = "updateTwin"
        else:
            return None
        if twin.get("tags"):
            e["tags"] = twin["tags"]
        if twin.get("desired"):
            e["properties"] = {"desired": twin["desired"]}
        return e

    def send(self, entries: List[Dict[str, Any]]) -> Dict[str, Optional[Dict[str, Any]]]:
        """POST /devices in chunks; {device id: None when applied, else its DeviceRegistryOperationError}."""
        chunks = [entries[i:i + self.batch_size] for i in range(0, len(entries), self.batch_size)]

        def post(chunk):
            try:
                r = self.client.bulk(chunk)
            except IoTApiError as exc:  # retries exhausted: this chunk is not confirmed, the others stand
                return {e["id"]: {"deviceId": e["id"], "errorCode": exc.code or "RequestFailed",
                                  "errorStatus": f"{exc} (not confirmed; a re-run converges)",
                                  "operation": e["importMode"]} for e in chunk}
            if r.status_code == 200:
                return {e["id"]: None for e in chunk}
            try:
                body = r.json()
            except ValueError:
                body = None
            if r.status_code == 400 and isinstance(body, dict) and "isSuccessful" in body:
                errors = {err.get("deviceId"): err for err in body.get("errors") or []}
                return {e["id"]: errors.get(e["id"]) for e in chunk}
            err = error_from_response(r, f"bulk call of {len(chunk)} devices")
            return {e["id"]: {"deviceId": e["id"], "errorCode": err.code or f"HTTP{r.status_code}",
                              "errorStatus": str(err), "operation": e["importMode"]} for e in chunk}
        results: Dict[str, Optional[Dict[str, Any]]] = {}
        for part in self._pool(post, chunks):
            results.update(part)
        return results

    def converge(self, specs: List[DeviceSpec]) -> None:
        pending = list(specs)
        for round_no in range(1, MAX_ROUNDS + 1):
            planned = [(s, *self.plan(s)) for s in pending]
            need = [s.device_id for s, plan, _twin, known in planned if self.needs_get(s, plan, known)]
            if need:
                self.refresh(need)
                planned = [(s, *self.plan(s)) for s in pending]
            entries, by_id = [], {}
            for s, plan, twin, known in planned:
                self.plans[s.device_id] = plan
                self.twin_plans[s.device_id] = twin
                e = self.entry(s, plan, twin, known)
                if e is None:
                    if s.device_id not in self.out.unchanged:
                        self.out.unchanged.append(s.device_id)
                    continue
                entries.append(e)
                by_id[s.device_id] = (s, plan, e)
            if self.check_mode:
                for did, (s, plan, e) in by_id.items():
                    self._record(did, plan, e)
                    self._predict(s, plan)
                return
            if not entries:
                return
            results = self.send(entries)
            retry, to_refresh = [], []
            for did, err in results.items():
                s, plan, e = by_id[did]
                if err is None:
                    self._record(did, plan, e)
                    self._after_write(s, plan)
                    continue
                code = err.get("errorCode")
                if code == "DeviceNotFound" and e["importMode"] == "deleteIfMatchETag":
                    self.out.notes.append(f"{did}: already deleted")
                    self.state[did] = Known(None, True, None)
                    continue
                if code in RECONCILE_CODES and round_no < MAX_ROUNDS:
                    self.out.notes.append(f"{did}: {code} on {e['importMode']}; re-read and re-planned")
                    retry.append(s)
                    to_refresh.append(did)
                    continue
                self.out.failed.append({"deviceId": did, "errorCode": code, "errorStatus": err.get("errorStatus"),
                                        "operation": err.get("operation") or e["importMode"]})
            if to_refresh:
                self.refresh(to_refresh, with_twin=True)
            pending = retry
            if not pending:
                return

    def _record(self, did: str, plan: DevicePlan, e: Dict[str, Any]) -> None:
        mode = e["importMode"]
        bucket = (self.out.created if mode == "create" else self.out.deleted if mode.startswith("delete")
                  else self.out.updated)
        if did not in bucket:
            bucket.append(did)

    def _after_write(self, s: DeviceSpec, plan: DevicePlan) -> None:
        if plan.action == "delete":
            self.state[s.device_id] = Known(None, True, None)
        else:
            body = None if plan.action == "create" else plan.body
            self.state[s.device_id] = Known(body, False, None)
            if body is None or not body.get("deviceScope"):
                self._stale.add(s.device_id)  # a new edge device's scope is known only after a read

    def _predict(self, s: DeviceSpec, plan: DevicePlan) -> None:
        if plan.action in ("create", "update"):
            body = dict(plan.body)
            if plan.after["edge_enabled"] and not body.get("deviceScope"):
                body["deviceScope"] = planned_scope(s.device_id)
            self.state[s.device_id] = Known(body, True, None)

    # ------------------------------------------------------------------ run
    def run(self) -> Outcome:
        self._stale = set()
        candidates = self.read()
        self.check_parents(candidates)
        levels = self.levels()
        for i, level in enumerate(levels):
            self.converge(level)
            # Children of the next level need their parents' scopes: read back parents written just now.
            if i + 1 < len(levels) and not self.check_mode:
                parents = {s.parent for s in levels[i + 1] if s.parent}
                stale = sorted(p for p in parents if p in self._stale)
                if stale:
                    self.refresh(stale)
        if not self.check_mode:
            unknown = [s.device_id for s in self.specs if s.state == "present" and self._is_edge(s.device_id)
                       and not (self.state[s.device_id].identity or {}).get("deviceScope")]
            if unknown:
                self.refresh(unknown)
        deletes = [s for s in self.specs if s.state == "absent"]
        deletes += [DeviceSpec(device_id=did, state="absent") for did in candidates]
        if deletes:
            self.converge(deletes)
        return self.out

    def _is_edge(self, did: str) -> bool:
        s = self.by_id[did]
        if s.edge_enabled is not None:
            return s.edge_enabled
        k = self.state.get(did)
        return bool(k and k.identity and k.identity["capabilities"].get("iotEdge"))

    def edge_devices(self) -> List[Dict[str, Any]]:
        """Every declared edge device with its scope (None when unknown, e.g. in check mode) and declared children."""
        children: Dict[str, List[str]] = {}
        for s in self.specs:
            if s.state == "present" and s.parent:
                children.setdefault(s.parent, []).append(s.device_id)
        out = []
        for s in self.specs:
            if s.state != "present" or not self._is_edge(s.device_id):
                continue
            scope = (self.state[s.device_id].identity or {}).get("deviceScope")
            if is_planned_scope(scope):
                scope = None
            out.append({"device_id": s.device_id, "device_scope": scope, "parent": s.parent or None,
                        "children": sorted(children.get(s.device_id, []))})
        return out

    def diffs(self) -> List[Dict[str, Any]]:
        out = []
        for did in sorted(set(self.out.created) | set(self.out.updated) | set(self.out.deleted)):
            plan = self.plans.get(did)
            if plan is None:
                continue
            before = display_view(plan.before) if plan.before is not None else {}
            after = display_view(plan.after, [f for f in ("primary_key", "secondary_key") if f in plan.changes]) \
                if plan.after is not None else {}
            twin = self.twin_plans.get(did) or {}
            if twin.get("tags"):
                after["tags (patch)"] = twin["tags"]
            if twin.get("desired"):
                after["desired_properties (patch)"] = twin["desired"]
            out.append({"before": before, "after": after, "before_header": f"iothub device {did} (hub)",
                        "after_header": f"iothub device {did} (planned)"})
        return out
