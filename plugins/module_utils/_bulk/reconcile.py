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

import json
import threading
from dataclasses import replace
from typing import Any, Callable, Dict, List, Optional, Set

from ansible_collections.fleet.azure_iot.plugins.module_utils._bulk.guard import FleetGuard
from ansible_collections.fleet.azure_iot.plugins.module_utils._bulk.input import BulkOptions, prune_matcher
from ansible_collections.fleet.azure_iot.plugins.module_utils._bulk.read import FleetReader
from ansible_collections.fleet.azure_iot.plugins.module_utils._bulk.state import (
    ABSENT,
    Known,
    Outcome,
    Pending,
    rewrites_keys,
    uses_keys,
)
from ansible_collections.fleet.azure_iot.plugins.module_utils._bulk.write import FleetWriter
from ansible_collections.fleet.azure_iot.plugins.module_utils._diff import plan_diff, summary_diff
from ansible_collections.fleet.azure_iot.plugins.module_utils._errors import IoTApiError, PlanError
from ansible_collections.fleet.azure_iot.plugins.module_utils._models import DeviceSpec
from ansible_collections.fleet.azure_iot.plugins.module_utils._plan import DevicePlan, plan_device
from ansible_collections.fleet.azure_iot.plugins.module_utils._progress import RunProgress
from ansible_collections.fleet.azure_iot.plugins.module_utils._resource import CONFLICT_CODES, KeyIntent
from ansible_collections.fleet.azure_iot.plugins.module_utils._secrets import fresh_key, plan_secrets
from ansible_collections.fleet.azure_iot.plugins.module_utils._topology import (
    chain_above,
    is_planned_scope,
    planned_scope,
)
from ansible_collections.fleet.azure_iot.plugins.module_utils._twin import check_twin_limits, plan_twin, twin_views

PLAN_CHUNK = 1000  # devices planned at a time (their plans are dropped once their writes are collected)
MAX_ROUNDS = 4  # rounds of re-read and re-plan after conflicts (one more carries an update's twin)
DIFF_SUMMARY_ABOVE = 50
DIFF_KEPT = 1000  # diff_detail=summary: plans kept of the changed devices whose ids sort first


class BulkReconciler(FleetReader, FleetGuard, FleetWriter):
    """Converge a declared fleet: read (``FleetReader``), check every guard rail (``FleetGuard``), plan each device
    with the shared rules and write the differences (``FleetWriter``) in rounds, parents before children."""

    def __init__(self, client, specs: List[DeviceSpec], options: Optional[BulkOptions] = None, *,
                 declares_children: Optional[set] = None, deployments: Optional[Dict[str, Any]] = None, jobs=None,
                 hide: Optional[Callable[[str], None]] = None, progress: Optional[RunProgress] = None,
                 **overrides):
        """OPTIONS (``BulkOptions.from_params``), with OVERRIDES of single fields (tests).  PROGRESS: the task's
        ``RunProgress`` (timings, progress_file); its phases are measured here."""
        options = replace(options or BulkOptions(), **overrides)
        self.options = options
        # The diff to be shown: None (no diff, no plan kept), "summary" (the plans of the DIFF_KEPT changed devices
        # whose ids sort first: diffs() shows DIFF_SUMMARY_ABOVE of them) or "full" (every changed device's plan).
        self.diff_detail = options.diff_detail
        self._diff_cut: Optional[str] = None  # summary: a changed device whose id sorts after it keeps no plan
        self.hide = hide  # called with every key a changed device's plan saw (the module masks them)
        self.prune_children = options.prune_children
        self.prune_descendants = options.prune_descendants
        self.orphan_children = options.orphan_children
        self.max_deletes = options.max_deletes
        self.declares_children = set(declares_children or ())  # tree nodes with an explicit children list
        self.deployments = dict(deployments or {})  # tree nodes' deployment manifests (applied by the roles)
        self.client = client
        self.specs = specs
        self.by_id = {s.device_id: s for s in specs}
        self.prune = options.prune
        self.prune_query = options.prune_query
        self.prune_match = prune_matcher(self.prune_query) if self.prune and self.prune_query else None
        # Why each prune candidate is deleted: "prune_query", or the scope of the parent whose child it must still be.
        self.prune_why: Dict[str, str] = {}
        self.deleting_scopes: Dict[str, str] = {}  # edge scope -> the gateway this run deletes (orphan re-check)
        self.batch_size = options.batch_size
        self.max_concurrency = options.max_concurrency
        self.check_mode = options.check_mode
        self.state: Dict[str, Known] = {}
        self.plans: Dict[str, DevicePlan] = {}  # for the diff: device id -> the plan the task acted on
        self.views: Dict[str, tuple] = {}  # for the diff: device id -> ((twin before, twin after), keys were read)
        self._stale: Set[str] = set()  # edge devices written in this run whose scope only a read tells
        self._write_proven = False  # a bulk call of this run succeeded (or was refused per device): rights are fine
        self.jobs = jobs  # the import/export jobs path (storage_container_uri), or None
        self.read_current = False  # True when the state was read by an export job (current, not a lagging index)
        self.maybe_written: Dict[str, str] = {}  # device id -> import mode of a write whose answer was lost
        # rotate_keys: each rotation decided once (the keys it puts in), re-planned as those keys after a conflict
        # or a lost answer (the same rule as iothub_device's)
        self.key_intents: Dict[str, KeyIntent] = {s.device_id: KeyIntent() for s in specs if s.rotate_keys}
        self.out = Outcome()
        self.progress = progress or RunProgress()
        self.total = len(specs)  # devices the task settles: the declared ones and the prune deletes
        self.answered = 0  # devices of this round's bulk calls answered so far, not recorded yet (progress)
        self._lock = threading.Lock()

    def levels(self) -> List[List[DeviceSpec]]:
        depth: Dict[str, int] = {}

        def level(s: DeviceSpec) -> int:
            # A device waits for its parent only when the parent's scope is not known yet (a parent created, or
            # made an edge device, in this run).  Below existing gateways every device goes in the first wave,
            # however deep: a drift of k devices costs ceil(k/100) bulk calls.
            if not s.parent or s.parent not in self.by_id:
                return 0  # nothing declared above it (no memo: a flat fleet of a million keeps no table)
            if s.device_id not in depth:
                parent = self.by_id.get(s.parent) if s.parent else None
                ready = parent is None or self._edge_scope(parent.device_id) is not None
                depth[s.device_id] = 0 if ready else level(parent) + 1
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
        scope = known.device_scope if known else None
        if scope:
            return scope
        if self.check_mode:
            return planned_scope(s.parent)
        raise PlanError(f"devices: parent {s.parent!r} of {s.device_id!r} has no deviceScope yet")

    def plan(self, s: DeviceSpec):
        known = self.state.get(s.device_id) or ABSENT
        spec, intent = s, self.key_intents.get(s.device_id)
        if intent is not None:
            if known.exists and not known.keys_known and intent.keys is None:
                spec = s.with_keys(None, None)  # the keys are not read yet: rotated once they are (needs_get)
            else:
                spec = intent.spec_for(s, known.identity)
        plan = plan_device(spec, known.identity, self.parent_scope(s) if s.state == "present" else None,
                           fresh_key() if spec.rotate_keys else None)
        if intent is not None and spec.rotate_keys:
            intent.record(spec, plan)
        twin = plan_twin(s, known.twin) if s.state == "present" and plan.action != "delete" else {}
        check_twin_limits(twin, f"device {s.device_id!r}")
        return plan, twin, known

    def needs_get(self, s: DeviceSpec, plan: DevicePlan, known: Known) -> bool:
        if known.keys_known or not known.exists or s.state != "present":
            return False
        return uses_keys(s) or rewrites_keys(plan)

    def converge(self, specs: List[DeviceSpec]) -> None:
        pending = list(specs)
        for round_no in range(1, MAX_ROUNDS + 2):
            entries: List[tuple] = []  # (device id, import mode, the entry as JSON): what send() writes
            by_id: Dict[str, Pending] = {}
            patches: List[tuple] = []
            for start in range(0, len(pending), PLAN_CHUNK):
                with self.progress.measure("plan"):
                    self._plan_chunk(pending[start:start + PLAN_CHUNK], entries, by_id, patches)
            if self.check_mode:
                writes = sorted({did for did, p in by_id.items() if p.action != "delete"}
                                | {s.device_id for s, _twin, _known in patches})
                if writes and round_no == 1 and not self.read_current:
                    # The query index lags: a device created moments ago is invisible to it, a twin changed moments
                    # ago shows its old content.  The real run reconciles that through its conditional writes;
                    # check mode must not predict a write it would not make: confirm with GET (twin included).
                    self.refresh(writes, with_twin=True)
                    continue
                for did, p in by_id.items():
                    self._record(did, p.mode)
                    if p.action in ("create", "update"):
                        self.state[did] = p.successor  # what the write would leave (children plan against it)
                for s, _twin, _known in patches:
                    self._record(s.device_id, "updateTwin")
                return
            if not entries and not patches:
                return
            last = round_no >= MAX_ROUNDS
            retry, to_refresh = [], []
            with self.progress.measure("write"):
                sent = self.send(entries)
                patched = self.patch_twins(patches)
            self.answered = 0  # recorded below
            for did, (err, maybe) in sent.items():
                p = by_id[did]
                if err is None:
                    self._record(did, p.mode)
                    self.state[did] = p.successor
                    if p.stale:
                        self._stale.add(did)  # a new edge device's scope is known only after a read
                    if p.twin_follows:
                        retry.append(p.spec)  # the twin follows in the next call (never inside an identity update)
                    continue
                if maybe:
                    self.maybe_written.setdefault(did, p.mode)
                code = err.get("errorCode")
                if code == "DeviceNotFound" and p.mode == "deleteIfMatchETag":
                    self.state[did] = ABSENT
                    self._settled(did, "already deleted")
                    continue
                if code in CONFLICT_CODES and not last:
                    self.out.notes.append(f"{did}: {code} on {p.mode}; re-read and re-planned")
                    retry.append(p.spec)
                    to_refresh.append(did)
                    continue
                self._fail(did, code, err.get("errorStatus"), err.get("operation") or p.mode, maybe)
            for did, (err, maybe) in patched.items():
                s = self.by_id[did]
                if err is None:
                    self._record(did, "updateTwin")
                    self.state[did] = self.state[did].without_twin()
                    continue
                if maybe:
                    self.maybe_written.setdefault(did, "updateTwin")
                if err in ("PreconditionFailed", "DeviceNotFound") and not last:
                    self.out.notes.append(f"{did}: {err} on the twin PATCH; re-read and re-planned")
                    retry.append(s)
                    to_refresh.append(did)
                    continue
                self._fail(did, err if err in ("PreconditionFailed", "DeviceNotFound") else "TwinUpdateFailed", err,
                           "twin PATCH", maybe)
            recheck = [d for d in to_refresh if d in self.prune_why]
            if recheck:  # a pruned device that met a conflict is re-checked against its selector, never re-planned
                still = set(self.confirm_prune(recheck))  # as a plain state=absent
                retry = [s for s in retry if s.device_id not in recheck or s.device_id in still]
                to_refresh = [d for d in to_refresh if d not in recheck]
            if to_refresh:
                self.refresh(to_refresh, with_twin=True)
            pending = retry
            if not pending:
                return

    def _plan_chunk(self, chunk: List[DeviceSpec], entries: List[tuple], by_id: Dict[str, "Pending"],
                    patches: List[tuple]) -> None:
        """Plan CHUNK (again after a GET, where keys must be read first) and collect its writes.  Planning goes
        a chunk at a time and an unchanged device keeps nothing: a fleet's 100,000 plans are never held at once,
        and a write keeps only its entry (as JSON) and what the state becomes once it lands."""
        planned = [(s, *self.plan(s)) for s in chunk]
        need = [s.device_id for s, plan, _twin, known in planned if self.needs_get(s, plan, known)]
        if need:
            self.refresh(need)
            planned = [(s, *self.plan(s)) for s in chunk]
        for s, plan, twin, known in planned:
            if plan.action != "none" or twin:
                self._keep_for_diff(s.device_id, plan, twin, known)
            e = self.entry(s, plan, twin, known)
            if e is not None:
                entries.append((s.device_id, e["importMode"], json.dumps(e, separators=(",", ":"))))
                by_id[s.device_id] = Pending(s, plan.action, e["importMode"], self._successor(s, plan, known),
                                             plan.action == "update" and bool(twin),
                                             plan.action in ("create", "update") and plan.after["edge_enabled"]
                                             and not (plan.body or {}).get("deviceScope"))
            elif twin and plan.action == "none":
                patches.append((s, twin, known))
            else:
                self._settled(s.device_id)

    def _keep_for_diff(self, did: str, plan: DevicePlan, twin: Dict[str, Any], known: Known) -> None:
        """The keys a changed device's plan saw go to ``hide``; its plan and twin views are kept for the diff only
        when one is asked for (a summary keeps those of the DIFF_KEPT ids that sort first: a 100,000-device first
        apply in diff mode holds 1,000 to 2,000 plans, not 100,000).  A re-plan that finds nothing left keeps the
        plan the task acted on."""
        if self.hide is not None:
            for key in plan_secrets(plan):
                self.hide(key)
        if self.diff_detail is None or (self._diff_cut is not None and did > self._diff_cut):
            return
        self.plans[did] = plan
        if twin or did not in self.views:
            self.views[did] = twin_views(twin, known.twin), known.keys_known
        if self.diff_detail != "full" and len(self.plans) > 2 * DIFF_KEPT:
            kept = sorted(self.plans)[:DIFF_KEPT]
            self._diff_cut = kept[-1]
            self.plans = {d: self.plans[d] for d in kept}
            self.views = {d: self.views[d] for d in kept if d in self.views}

    def _successor(self, s: DeviceSpec, plan: DevicePlan, known: Known) -> Optional[Known]:
        """What the reconciler knows of the device once the plan's write lands (in check mode: what it predicts,
        with a planned scope for a new edge device, so that its children plan against it)."""
        if plan.action == "delete":
            return ABSENT
        if self.check_mode:
            if plan.action not in ("create", "update"):
                return None
            body = dict(plan.body)
            if plan.after["edge_enabled"] and not body.get("deviceScope"):
                body["deviceScope"] = planned_scope(s.device_id)
            return Known(body, True, None)
        if plan.action == "create":
            return Known(None, False, None)  # its etag, keys and scope are the hub's: read again when needed
        if plan.action == "update":
            # An identity write leaves the twin (and its etag) as it was: keep it for the twin that follows.
            return Known(plan.body, known.keys_known, known.twin)
        return known.without_twin()  # a twin-only entry: the identity stays

    def _fail(self, did: str, code: Optional[str], status: Optional[str], operation: str, maybe: bool) -> None:
        if maybe:
            self.out.unconfirmed_writes = True
        self.out.failed.append({"deviceId": did, "errorCode": code, "errorStatus": status, "operation": operation})

    def _settled(self, did: str, why: Optional[str] = None) -> None:
        """Nothing (more) to write for DID: it is unchanged, unless an earlier attempt's lost answer applied it."""
        mode = self.maybe_written.pop(did, None)
        if mode is not None:
            self._record(did, mode)
            self.out.notes.append(f"{did}: the {mode} of an earlier attempt was applied by the hub (its answer was "
                                  "lost); the device now matches: counted as written")
        elif why is not None:
            self.out.notes.append(f"{did}: {why}")
        elif not self._written(did):
            self.out.unchanged.add(did)

    def _written(self, did: str) -> bool:
        return did in self.out.created or did in self.out.updated or did in self.out.deleted

    def _record(self, did: str, mode: str) -> None:
        bucket = (self.out.created if mode == "create" else self.out.deleted if mode.startswith("delete")
                  else self.out.updated)
        bucket.add(did)

    # ------------------------------------------------------------------ run
    def settled_count(self) -> int:
        """Devices done so far (written, unchanged, failed): the progress file's ``done``."""
        out = self.out
        settled = len(out.created) + len(out.updated) + len(out.deleted) + len(out.unchanged) + len(out.failed)
        return min(self.total, settled + self.answered)

    def run(self) -> Outcome:
        with self.progress.measure("read"):
            candidates = self.read()
        with self.progress.measure("plan"):
            self.check_parents(candidates)
            self.check_topology()
            delete_levels = self.plan_deletes(candidates)  # every guard rail is checked before the first write
        self.total = len(self.specs) + len({s.device_id for level in delete_levels for s in level
                                            if s.device_id not in self.by_id})
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
                       and not self.state[s.device_id].device_scope]
            if unknown:
                self.refresh(unknown)
        for s in self.specs:
            if s.state == "absent" and not self._exists(s.device_id):
                self._settled(s.device_id)
        for level in delete_levels:  # children before their parents
            self.converge(level)
        if not self.check_mode and not self.orphan_children:
            self.check_no_orphans()
        return self.out

    def rotated_identities(self) -> List[Dict[str, Any]]:
        """The identities (id and keys) of the devices whose keys this task rotated, with the keys the hub holds:
        the keys written for a confirmed rotation, those read back (GET) for one that failed or was not done (its
        write may have landed).  A rotation that landed unanswered must not leave the caller without the live key."""
        out, read_back = [], []
        failed = {f["deviceId"] for f in self.out.failed}
        for did, intent in sorted(self.key_intents.items()):
            keys = intent.keys  # None: no rotation decided (a create, or not planned before the run stopped)
            if keys is None:
                continue
            if did in self.out.updated and did not in failed:
                out.append({"deviceId": did, "authentication": {"symmetricKey": {"primaryKey": keys[0],
                                                                                 "secondaryKey": keys[1]}}})
            else:  # failed, or not done when the run stopped
                read_back.append(did)
        for did in read_back:
            try:
                live = self.client.get_device(did)
            except IoTApiError:
                continue
            if live is not None:
                out.append(live)
        return sorted(out, key=lambda d: d["deviceId"])

    def _is_edge(self, did: str) -> bool:
        s = self.by_id[did]
        if s.edge_enabled is not None:
            return s.edge_enabled
        k = self.state.get(did)
        return bool(k and k.edge)

    def edge_devices(self) -> List[Dict[str, Any]]:
        """Every declared edge device with its scope (None when unknown, e.g. in check mode), declared children, its
        real ``layer`` in the hub once this run is done (1: a top-layer gateway; a declared node below an existing
        gateway counts that gateway's chain, the way the depth rule does) and the ``deployment`` its tree node
        carries (None without one), top-down."""
        children: Dict[str, List[str]] = {}
        for s in self.specs:
            if s.state == "present" and s.parent:
                children.setdefault(s.parent, []).append(s.device_id)
        scope_owner = {self._edge_scope(d): d for d in self.state if self._edge_scope(d)}

        def layer(did: str) -> int:
            chain, _cycle = chain_above(did, lambda d: self._parent_after(d, scope_owner))
            return len(chain) + 1
        out = []
        for s in self.specs:
            if s.state != "present" or not self._is_edge(s.device_id):
                continue
            scope = self.state[s.device_id].device_scope
            if is_planned_scope(scope):
                scope = None
            out.append({"device_id": s.device_id, "device_scope": scope, "parent": s.parent or None,
                        "children": sorted(children.get(s.device_id, [])), "layer": layer(s.device_id),
                        "deployment": self.deployments.get(s.device_id)})
        return sorted(out, key=lambda d: d["layer"])

    def diffs(self) -> List[Dict[str, Any]]:
        """Per device before/after (keys redacted, twin keys old beside new).  Above DIFF_SUMMARY_ABOVE changed
        devices, a summary first and the first DIFF_SUMMARY_ABOVE devices in full, unless ``diff_detail="full"``."""
        changed = sorted(self.out.created | self.out.updated | self.out.deleted)
        out = []
        if self.diff_detail != "full" and len(changed) > DIFF_SUMMARY_ABOVE:
            counts = {"created": len(self.out.created), "updated": len(self.out.updated), "deleted": len(self.out.deleted)}
            out.append(summary_diff("iothub_device_bulk summary", counts, DIFF_SUMMARY_ABOVE))
            changed = changed[:DIFF_SUMMARY_ABOVE]
        for did in changed:
            plan = self.plans.get(did)
            if plan is None:
                continue
            twin_view, keys_read = self.views.get(did, (({}, {}), True))
            out.append(plan_diff(plan, f"iothub device {did}", keys_read=keys_read, twin_view=twin_view))
        return out
