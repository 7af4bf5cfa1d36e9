# -*- coding: utf-8 -*-
# Copyright: fleet.azure_iot contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""PRIVATE to fleet.azure_iot: iothub_device_bulk, its reads: paged queries (a scan or id lists, whichever costs fewer
pages), an export job, GET where keys or a strongly consistent read are needed, and the prune candidates confirmed
one by one on GET."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any, Dict, List, Optional

from ansible_collections.fleet.azure_iot.plugins.module_utils._bulk.input import PRUNE_QUERY_PREFIX
from ansible_collections.fleet.azure_iot.plugins.module_utils._bulk.state import (
    ABSENT,
    from_export_line,
    identity_from_twin,
    Known,
    rewrites_keys,
    uses_keys,
)
from ansible_collections.fleet.azure_iot.plugins.module_utils._errors import AuthorizationError, IoTApiError, PlanError
from ansible_collections.fleet.azure_iot.plugins.module_utils._iothub import MAX_QUERY_CHARS, quote_literal
from ansible_collections.fleet.azure_iot.plugins.module_utils._plan import plan_device
from ansible_collections.fleet.azure_iot.plugins.module_utils._topology import parent_id_of_scope, parent_scope_of


class FleetReader:
    """The reads of ``BulkReconciler`` (a mixin: it works on the reconciler's ``client``, ``specs``, ``by_id``,
    ``state`` and prune settings)."""

    # ------------------------------------------------------------------ reads
    def _pool(self, fn, items):
        if not items:
            return []
        if self.max_concurrency == 1 or len(items) == 1:
            return [fn(i) for i in items]
        with ThreadPoolExecutor(max_workers=min(self.max_concurrency, len(items))) as pool:
            return list(pool.map(fn, items))

    def _remember(self, twin: Dict[str, Any]) -> str:
        did = twin["deviceId"]
        if did not in self.state or not self.state[did].exists:
            self.state[did] = Known(identity_from_twin(twin), False, twin)
        return did

    def read(self) -> List[str]:
        """Load the current state of every declared device and referenced parent; return prune candidates
        (sorted): for ``prune``, the undeclared devices ``prune_query`` matches; for ``prune_children``, the
        undeclared direct children of the gateways whose children this task declares (see ``prunable``)."""
        parents = {s.parent for s in self.specs if s.parent and s.parent not in self.by_id}  # referenced only
        if self.jobs is not None and self.jobs.read_by_export(len(self.specs)):
            self._read_export(parents)
        else:
            wanted = set(self.by_id) | parents
            for twin in self._read_twins(sorted(wanted), wanted):
                self.state[twin["deviceId"]] = Known(identity_from_twin(twin), False, twin)
        # A device the query does not show is taken as absent: a create then meets DeviceAlreadyExists and is
        # reconciled; a device declared absent but created moments ago (not yet indexed) is deleted by the next
        # run.  Confirming every unseen absent device with GET would cost a read per device every night.
        for device_id in self.by_id:
            self.state.setdefault(device_id, ABSENT)
        for device_id in parents:
            self.state.setdefault(device_id, ABSENT)
        self.selected: Dict[str, List[str]] = {}  # selector -> every device it matched (declared or not)
        if self.prune_children:
            kids = self.children_of([self.state[d].identity["deviceScope"] for d in self.prunable()])
            matched = sorted({t["deviceId"] for ts in kids.values() for t in ts})
            self.selected["prune_children"] = matched
            for scope, twins in kids.items():
                for t in twins:
                    if t["deviceId"] not in self.by_id:
                        self.prune_why.setdefault(t["deviceId"], scope)
        if self.prune:
            matched = sorted({self._remember(t) for t in self._prune_query() if t.get("deviceId")})
            self.selected["prune_query"] = matched
            for did in matched:
                if did not in self.by_id:
                    self.prune_why[did] = "prune_query"
        return self.confirm_prune(sorted(self.prune_why))

    def _prune_query(self):
        try:
            yield from self.client.query(PRUNE_QUERY_PREFIX + self.prune_query)
        except AuthorizationError:
            raise
        except IoTApiError as exc:
            if getattr(exc, "status", None) == 400:  # deterministic: the hub cannot read the clause
                raise PlanError(f"prune_query {self.prune_query!r} was refused by IoT Hub: {exc}. Fix the clause "
                                "(string quotes are escaped as \\', reserved words as [[name]]); nothing was "
                                "written") from None
            raise

    def confirm_prune(self, ids: List[str]) -> List[str]:
        """The prune candidates that still are candidates on a strongly consistent read: each twin is read with GET
        (the query that found them lags) and must still match ``prune_query``, or still name the gateway whose
        child it was for ``prune_children``.  A device another job moved out of the selection, or deleted, is
        dropped with a note and never deleted; the deletes use the etag this read shows."""
        def fetch(did):
            return did, self.client.get_twin(did)
        confirmed = []
        for did, twin in self._pool(fetch, sorted(ids)):
            why = self.prune_why.get(did)
            if twin is None:
                self.state[did] = ABSENT
                self.prune_why.pop(did, None)
                self.out.notes.append(f"{did}: no longer exists (read with GET); nothing to prune")
                continue
            self.state[did] = Known(identity_from_twin(twin), False, twin)
            if why == "prune_query":
                still = self.prune_match(twin)
                lost = f"no longer matches prune_query {self.prune_query!r}"
            else:
                still = parent_scope_of(twin) == why
                lost = f"is no longer a child of {parent_id_of_scope(why) or why!r}"
            if still:
                confirmed.append(did)
                continue
            self.prune_why.pop(did, None)
            self.maybe_written.pop(did, None)  # it is there: a delete of an earlier attempt did not land
            self.out.notes.append(f"{did}: {lost} (read with GET: another writer moved it); left alone")
        return confirmed

    def _edge_scope(self, did: str) -> Optional[str]:
        known = self.state.get(did)
        return known.edge_scope if known else None

    def prunable(self) -> List[str]:
        """The declared, existing edge devices whose undeclared direct children ``prune_children`` deletes.

        Only the roots of the declared tree (their parent is not declared in this task) and the gateways this task
        declares children of (at least one declared child, or an explicit ``children`` list in a tree).  A nested
        gateway declared without any of its children keeps them: a task that does not mention a gateway's
        children never deletes them (edge_gateway lists a child gateway, not its grandchildren)."""
        parents_of_declared = {s.parent for s in self.specs if s.state == "present" and s.parent}
        out = []
        for s in self.specs:
            if s.state != "present" or not self._edge_scope(s.device_id):
                continue
            root = not s.parent or s.parent not in self.by_id
            if root or s.device_id in parents_of_declared or s.device_id in self.declares_children:
                out.append(s.device_id)
        return sorted(out)

    def children_of(self, scopes: List[str]) -> Dict[str, List[Dict[str, Any]]]:
        """The hub's direct children of each edge scope (remembered as read state)."""
        found = self.client.children_of_scopes(scopes)
        for twins in found.values():
            for twin in twins:
                self._remember(twin)
        return found

    def _exists(self, did: str) -> bool:
        known = self.state.get(did)
        return bool(known and known.exists)

    def _read_export(self, parents: set) -> None:
        """Read the registry through an export job: its devices.txt is streamed line by line, and only the declared
        devices and referenced PARENTS are kept.  The export is current (no query index lag), and with keys it
        spares the GETs a SAS device's rewrite otherwise needs: the keys are kept only for the devices whose
        identity the plan rewrites (a million devices' keys would double the task's memory); any other device
        that turns out to need a rewrite is read with GET first, as after a query."""
        keys = self.jobs.export_keys(self.specs)
        extra = {did: did for did in parents}  # the state is keyed by the declared id strings (no second copy)
        deferred = []
        for line in self.jobs.export(keys, devices=len(self.by_id) + len(parents)):
            spec = self.by_id.get(line.get("id"))
            did = spec.device_id if spec is not None else extra.get(line.get("id"))
            if did is None or line.get("moduleId"):
                continue
            identity, twin = from_export_line(line)
            known = Known(identity, keys, twin)
            if keys and spec is not None:
                needed = self._keys_needed(spec, known)
                if needed is None:
                    deferred.append(did)  # its parent is later in the file: decided once every line is read
                elif not needed:
                    known = known.without_keys()
            self.state[did] = known
        for did in deferred:
            if self._keys_needed(self.by_id[did], self.state[did]) is False:
                self.state[did] = self.state[did].without_keys()
        self.read_current = True

    def _keys_needed(self, spec, known: Known) -> Optional[bool]:
        """Whether the plan needs SPEC's exported keys, by the rules of ``needs_get`` (``uses_keys``,
        ``rewrites_keys``).  None while the parent is not read yet (its scope decides whether the identity
        changes)."""
        if spec.state != "present":
            return False
        if uses_keys(spec):
            return True
        if spec.parent and spec.parent not in self.state:
            return None
        try:
            plan = plan_device(spec, known.identity, self.parent_scope(spec), None)
        except PlanError:
            return True  # something unusual (a parent without a scope yet): keep them
        return rewrites_keys(plan)

    def _read_twins(self, ids: List[str], wanted: set):
        """The twins of the wanted devices, by a scan of the hub or by ``deviceId IN [...]`` lists, whichever costs
        fewer query pages at the page size the hub actually uses (documented: up to 100; the first full page of
        the scan shows it): a scan costs ceil(devices in the hub / page), the lists about one page per page-full
        of ids."""
        total = next(iter(self.client.query("SELECT COUNT() AS n FROM devices")), {}).get("n", 0)
        if not ids:
            return
        pages = self.client.query_pages("SELECT * FROM devices")
        first = next(pages, None)
        if first is None:
            return
        items, token = first
        page = self.client.page_size
        yield from (t for t in items if t.get("deviceId") in wanted)
        if not token:
            return
        scan_left = max(0, -(-total // page) - 1)
        chunks = self._in_chunks(ids, page)
        if scan_left <= len(chunks):
            for items, _token in pages:
                yield from (t for t in items if t.get("deviceId") in wanted)
            return
        pages.close()
        for chunk in chunks:
            yield from self.client.query(chunk)

    @staticmethod
    def _in_chunks(ids: List[str], per_chunk: int) -> List[str]:
        """IN-list queries of at most PER_CHUNK ids (one page each) and MAX_QUERY_CHARS characters."""
        chunks, current = [], []
        base = "SELECT * FROM devices WHERE deviceId IN []"
        length = len(base)
        for did in ids:
            lit = quote_literal(did)
            if current and (length + len(lit) + 2 > MAX_QUERY_CHARS or len(current) >= per_chunk):
                chunks.append(current)
                current, length = [], len(base)
            current.append(lit)
            length += len(lit) + 2
        if current:
            chunks.append(current)
        return [f"SELECT * FROM devices WHERE deviceId IN [{', '.join(c)}]" for c in chunks]

    def refresh(self, ids: List[str], with_twin: bool = False) -> None:
        """GET the full identities (keys included), and the twins when asked."""
        with self.progress.measure("read"):
            self._refresh(ids, with_twin)

    def _refresh(self, ids: List[str], with_twin: bool) -> None:
        def fetch(did):
            device = self.client.get_device(did)
            twin = self.client.get_twin(did) if (with_twin and device is not None) else None
            return did, device, twin
        for did, device, twin in self._pool(fetch, sorted(set(ids))):
            old = self.state.get(did)
            if device is None:
                self.state[did] = ABSENT
            else:
                self.state[did] = Known(device, True, twin if twin is not None else (old.twin if old else None))
