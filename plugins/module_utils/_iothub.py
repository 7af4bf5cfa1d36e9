# -*- coding: utf-8 -*-
# Copyright: fleet.azure_iot contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""PRIVATE to fleet.azure_iot: IoT Hub registry REST calls (api-version 2021-04-12) and the device converge
loop shared by the modules."""

from __future__ import annotations

import threading
import urllib.parse
from typing import Any, Dict, Iterator, List, Optional

from ansible_collections.fleet.azure_iot.plugins.module_utils._http import error_from_response, maybe_applied
from ansible_collections.fleet.azure_iot.plugins.module_utils._models import (
    MAX_EDGE_DEPTH,
    DeviceSpec,
    parent_id_of_scope,
    planned_scope,
)
from ansible_collections.fleet.azure_iot.plugins.module_utils._plan import PlanError, plan_device
from ansible_collections.fleet.azure_iot.plugins.module_utils._resource import Converged, Resource, Written, converge

API_VERSION = "2021-04-12"
QUERY_PAGE_SIZE = 1000
MAX_QUERY_CHARS = 8000  # keep generated queries well under the service's query size limit


def _q(device_id: str) -> str:
    return urllib.parse.quote(device_id, safe="")


def quote_literal(value: str) -> str:
    """A string literal for the IoT Hub query language."""
    return "'" + value.replace("'", "''") + "'"


class Counters:
    """Requests made, by kind (thread-safe: the bulk module sends in parallel)."""

    KINDS = ("gets", "writes", "query_pages", "bulk_calls", "registry_operations")

    def __init__(self):
        self._lock = threading.Lock()
        self._n = dict.fromkeys(self.KINDS, 0)

    def add(self, **deltas: int) -> None:
        with self._lock:
            for k, v in deltas.items():
                self._n[k] += v

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return self._n[name]
        except KeyError:
            raise AttributeError(name) from None

    def as_dict(self) -> Dict[str, int]:
        with self._lock:
            return dict(self._n)


class IoTHubClient:
    def __init__(self, http, host: str):
        self.http = http
        self.host = host
        self.counters = Counters()

    # ----------------------------------------------------------------- identities
    def get_device(self, device_id: str) -> Optional[Dict[str, Any]]:
        r = self.http.request("GET", f"/devices/{_q(device_id)}", safe=True, what=f"GET device {device_id!r}",
                              right="RegistryRead")
        self.counters.add(gets=1, registry_operations=1)
        if r.status_code == 404:
            return None
        if r.status_code != 200:
            raise error_from_response(r, f"GET device {device_id!r}")
        device = r.json()
        etag = (r.headers.get("etag") or "").strip('"')
        if etag:
            device["etag"] = etag  # the header is authoritative (iot-api.md §1.3)
        return device

    def put_device(self, device_id: str, body: Dict[str, Any], etag: Optional[str]):
        """Create (etag None: no If-Match, 409 if it exists) or replace with If-Match "<etag>"."""
        headers = {"If-Match": f'"{etag}"'} if etag else {}
        what = f"{'update' if etag else 'create'} device {device_id!r}"
        r = self.http.request("PUT", f"/devices/{_q(device_id)}", json_body=body, headers=headers, safe=True, what=what,
                              right="RegistryWrite")
        self.counters.add(writes=1, registry_operations=1)
        return r

    def delete_device(self, device_id: str, etag: str):
        r = self.http.request("DELETE", f"/devices/{_q(device_id)}", headers={"If-Match": f'"{etag}"'}, safe=True,
                              what=f"delete device {device_id!r}", right="RegistryWrite")
        self.counters.add(writes=1, registry_operations=1)
        return r

    def get_twin(self, device_id: str) -> Optional[Dict[str, Any]]:
        r = self.http.request("GET", f"/twins/{_q(device_id)}", safe=True, what=f"GET twin {device_id!r}",
                              right="ServiceConnect")
        self.counters.add(gets=1)
        if r.status_code == 404:
            return None
        if r.status_code != 200:
            raise error_from_response(r, f"GET twin {device_id!r}")
        return r.json()

    def bulk(self, entries: List[Dict[str, Any]]):
        """POST /devices with at most 100 conditional entries (a repeat cannot apply twice: safe to retry)."""
        r = self.http.request("POST", "/devices", json_body=entries, safe=True,
                              what=f"bulk call of {len(entries)} devices", right="RegistryWrite")
        self.counters.add(bulk_calls=1, writes=1, registry_operations=len(entries))
        return r

    # ---------------------------------------------------------------------- query
    def query(self, text: str, page_size: int = QUERY_PAGE_SIZE) -> Iterator[Dict[str, Any]]:
        """Every item of a query, following x-ms-continuation (the index lags behind writes, §3.2)."""
        token = None
        while True:
            headers = {"x-ms-max-item-count": str(page_size)}
            if token:
                headers["x-ms-continuation"] = token
            r = self.http.request("POST", "/devices/query", json_body={"query": text}, headers=headers, safe=True,
                                  what="query", write=False, right="ServiceConnect")
            self.counters.add(query_pages=1)
            if r.status_code != 200:
                raise error_from_response(r, f"query {text!r}")
            yield from r.json()
            token = r.headers.get("x-ms-continuation")
            if not token:
                return

    def children_of(self, scope: str) -> List[Dict[str, Any]]:
        return self.children_of_scopes([scope])[scope]

    def children_of_scopes(self, scopes: List[str]) -> Dict[str, List[Dict[str, Any]]]:
        """The direct children (query twins) of each edge scope, as few queries as the query size allows."""
        found: Dict[str, List[Dict[str, Any]]] = {sc: [] for sc in scopes}
        clauses: List[str] = []
        batches, length = [], 0
        for scope in sorted(set(scopes)):
            clause = f"array_contains(parentScopes, {quote_literal(scope)})"
            if clauses and length + len(clause) > MAX_QUERY_CHARS:
                batches.append(clauses)
                clauses, length = [], 0
            clauses.append(clause)
            length += len(clause) + 4
        if clauses:
            batches.append(clauses)
        for batch in batches:
            for twin in self.query("SELECT * FROM devices WHERE " + " OR ".join(batch)):
                parent = (twin.get("parentScopes") or [None])[0]
                if twin.get("deviceId") and parent in found:
                    found[parent].append(twin)
        return found

    # ------------------------------------------------------------------- topology
    def ancestors(self, device: Dict[str, Any], cache: Optional[Dict[str, Any]] = None) -> List[str]:
        """The ids above a device, nearest first (its parent, grandparent, ...): one GET per ancestor, at most
        MAX_EDGE_DEPTH + 1.  Stops at a scope whose owner cannot be confirmed (a deleted parent).  ``cache``
        maps device ids to devices already read (None: known missing)."""
        cache = cache if cache is not None else {}
        out: List[str] = []
        cur = device
        while len(out) <= MAX_EDGE_DEPTH:
            scopes = cur.get("parentScopes") or []
            pid = parent_id_of_scope(scopes[0]) if scopes else None
            if not pid:
                break
            if pid == device.get("deviceId") or pid in out:
                out.append(pid)  # a cycle: report it, stop walking
                break
            if pid not in cache:
                cache[pid] = self.get_device(pid)
            parent = cache[pid]
            if parent is None or parent.get("deviceScope") != scopes[0]:
                break
            out.append(pid)
            cur = parent
        return out

    def edge_height(self, scope: Optional[str]) -> int:
        """Edge layers at and below the edge device of SCOPE (1 when it has no edge children): a query per layer."""
        height, frontier = 1, [scope] if scope else []
        while frontier and height <= MAX_EDGE_DEPTH:
            kids = self.children_of_scopes(frontier)
            frontier = [t["deviceScope"] for ts in kids.values() for t in ts
                        if (t.get("capabilities") or {}).get("iotEdge") and t.get("deviceScope")]
            if frontier:
                height += 1
        return height

    # --------------------------------------------------------------------- parents
    def parent_of(self, parent: str, check_mode: bool, warnings: List[str]):
        """The ``parent`` option (a device id) -> (its deviceScope, the parent device or None when assumed).

        In check mode a parent that is missing, or not yet an edge device, may be created or made one by an
        earlier task of the same play: plan with a placeholder scope and warn (a typo must be visible in a
        ``--check`` run), rather than fail a dry run."""
        device = self.get_device(parent)
        is_edge = bool(device and (device.get("capabilities") or {}).get("iotEdge"))
        if check_mode and not is_edge:
            why = "does not exist" if device is None else "is not an IoT Edge device"
            warnings.append(f"parent {parent!r} {why} (yet); check mode assumes an earlier task makes it an edge "
                            "device. If it is a typo, the real run will fail")
            return planned_scope(parent), None
        if device is None:
            raise PlanError(f"parent: device {parent!r} does not exist; create the edge device first "
                            "(or list it before its children in iothub_device_bulk)")
        if not is_edge:
            raise PlanError(f"parent: device {parent!r} is not an IoT Edge device (capabilities.iotEdge is false); "
                            "only edge devices can be parents: set edge_enabled=true on it")
        scope = device.get("deviceScope")
        if not scope:
            raise PlanError(f"parent: edge device {parent!r} has no deviceScope")
        return scope, device


class DeviceResource(Resource):
    """A device identity for ``converge``: GET with its ETag, ``plan_device``, PUT/DELETE with If-Match."""

    def __init__(self, client: "IoTHubClient", spec: DeviceSpec, *, check_mode: bool, orphan_children: bool = False,
                 notes: Optional[List[str]] = None):
        self.client, self.spec, self.check_mode, self.orphan_children = client, spec, check_mode, orphan_children
        self.notes = notes if notes is not None else []
        self.warnings: List[str] = []
        self.label = f"device {spec.device_id!r}"

    def read(self):
        return self.client.get_device(self.spec.device_id)

    def plan(self, current, pinned_etag):
        spec = self.spec
        parent_scope, parent_device = spec.parent, None  # None: unmanaged; "": detach
        if spec.state == "present" and spec.parent:
            parent_scope, parent_device = self.client.parent_of(spec.parent, self.check_mode, self.warnings)
        plan = plan_device(spec, current, parent_scope if spec.state == "present" else None)
        if plan.action == "delete" and not self.orphan_children:
            self._refuse_orphans(current)
        if plan.action in ("create", "update"):
            self._check_topology(plan, current, parent_device)
        if pinned_etag is not None and plan.etag is not None:
            plan.etag = pinned_etag.strip('"')
        return plan

    def _check_topology(self, plan, current, parent_device) -> None:
        """The rules the hub enforces against its current state, checked before any write (check mode too): a
        device with children stays an edge device, no parent cycle, at most MAX_EDGE_DEPTH edge layers."""
        did = self.spec.device_id
        after_edge = plan.after["edge_enabled"]
        own_scope = current.get("deviceScope") if current and (current.get("capabilities") or {}).get("iotEdge") else None
        if own_scope and not after_edge:
            kids = sorted(t["deviceId"] for t in self.client.children_of(own_scope) if t.get("deviceId") != did)
            if kids:
                raise PlanError(f"edge_enabled=false: {did!r} still has {len(kids)} child device(s) "
                                f"({', '.join(kids[:10])}{', ...' if len(kids) > 10 else ''}); a parent must stay an "
                                "IoT Edge device. Move or delete its children first")
        moved = plan.action == "create" or "parent_scope" in plan.changes or "edge_enabled" in plan.changes
        if not (after_edge and moved and parent_device is not None):
            return
        chain = [parent_device["deviceId"]] + self.client.ancestors(parent_device)
        if did in chain:
            raise PlanError(f"parent: {self.spec.parent!r} would create a parent cycle: "
                            f"{' -> '.join([did] + chain[:chain.index(did) + 1])}")
        height = self.client.edge_height(own_scope) if own_scope else 1
        if len(chain) + height > MAX_EDGE_DEPTH:
            raise PlanError(f"parent: {self.spec.parent!r} would put {did!r} at IoT Edge layer {len(chain) + 1}"
                            + (f" with {height - 1} edge layer(s) below it" if height > 1 else "")
                            + f" ({' -> '.join(reversed(chain))} -> {did}); IoT Edge supports at most {MAX_EDGE_DEPTH}")

    def _refuse_orphans(self, current) -> None:
        """Deleting an edge device leaves its children pointing at a scope that no longer exists: refuse it."""
        scope = current.get("deviceScope") if (current.get("capabilities") or {}).get("iotEdge") else None
        if not scope:
            return
        kids = sorted(t["deviceId"] for t in self.client.children_of(scope) if t.get("deviceId") != self.spec.device_id)
        if kids:
            raise PlanError(f"state=absent: edge device {self.spec.device_id!r} still has {len(kids)} child device(s) "
                            f"({', '.join(kids[:10])}{', ...' if len(kids) > 10 else ''}); deleting it would leave them "
                            "pointing at a parent that no longer exists. Delete or move them first, or set "
                            "orphan_children=true to delete it anyway")

    def write(self, plan) -> Written:
        did = self.spec.device_id
        if plan.action == "delete":
            r = self.client.delete_device(did, plan.etag)
            if r.status_code in (200, 204):
                return Written(True, None, r.status_code, maybe_applied(r))
        else:
            r = self.client.put_device(did, plan.body, plan.etag if plan.action == "update" else None)
            if r.status_code == 200:
                device = r.json()
                etag = (r.headers.get("etag") or "").strip('"')
                if etag:
                    device["etag"] = etag
                return Written(True, device, 200, maybe_applied(r))
        conflict = (r.status_code == 412 or (r.status_code == 409 and plan.action == "create")
                    or (r.status_code == 404 and plan.action in ("update", "delete")))
        if conflict:  # the device changed between our read and our write (or a retried write already landed)
            return Written(False, None, r.status_code, maybe_applied(r))
        raise error_from_response(r, f"{plan.action} device {did!r}")

    def predict(self, current, plan):
        return None if plan.action == "delete" else plan.body


def ensure_device(client: IoTHubClient, spec: DeviceSpec, *, check_mode: bool, pinned_etag: Optional[str] = None,
                  orphan_children: bool = False) -> Converged:
    """GET, plan, write the difference with If-Match; on a conflict re-read and re-plan (bounded)."""
    notes: List[str] = []
    res = DeviceResource(client, spec, check_mode=check_mode, orphan_children=orphan_children, notes=notes)
    out = converge(res, check_mode=check_mode, pinned_etag=pinned_etag, state_present=spec.state == "present",
                   notes=notes)
    out.warnings = sorted(set(res.warnings))
    return out
