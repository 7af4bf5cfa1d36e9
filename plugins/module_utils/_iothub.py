# -*- coding: utf-8 -*-
# Copyright: fleet.azure_iot contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""PRIVATE to fleet.azure_iot: the IoT Hub data-plane client (api-version 2021-04-12): identities, twins, bulk,
queries, and the topology reads (parents, children, ancestors) that the resources' rules need."""

from __future__ import annotations

import threading
import urllib.parse
from typing import Any, Dict, Iterator, List, Optional

from ansible_collections.fleet.azure_iot.plugins.module_utils._http import IoTApiError, error_from_response
from ansible_collections.fleet.azure_iot.plugins.module_utils._models import (
    MAX_EDGE_DEPTH,
    parent_id_of_scope,
    planned_scope,
)
from ansible_collections.fleet.azure_iot.plugins.module_utils._pacing import Pacer
from ansible_collections.fleet.azure_iot.plugins.module_utils._plan import PlanError

API_VERSION = "2021-04-12"
QUERY_PAGE_SIZE = 1000  # what we ask for; the hub answers with at most its own page size (100 documented)
DOCUMENTED_PAGE_SIZE = 100  # iot-api-2.md §7: until a full page shows the hub's own
MAX_QUERY_CHARS = 8000  # keep generated queries well under the service's query size limit
MAX_USER_QUERY_CHARS = 8192  # the service's limit on a query's length


def _q(device_id: str) -> str:
    return urllib.parse.quote(device_id, safe="")


def quote_literal(value: str) -> str:
    """A string literal for the IoT Hub query language, with its documented escapes (\\' and \\\\; a doubled quote
    is not one)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


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
        self.page_size = DOCUMENTED_PAGE_SIZE  # learnt from the first full page
        self.pacer = Pacer()  # quotas unknown until stated (hub_sku) or learnt from a 429

    # ----------------------------------------------------------------- identities
    def get_device(self, device_id: str) -> Optional[Dict[str, Any]]:
        r = self.http.request("GET", f"/devices/{_q(device_id)}", safe=True, what=f"GET device {device_id!r}",
                              right="RegistryRead", budget=self.pacer.registry)
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
                              right="RegistryWrite", budget=self.pacer.registry)
        self.counters.add(writes=1, registry_operations=1)
        return r

    def delete_device(self, device_id: str, etag: str):
        r = self.http.request("DELETE", f"/devices/{_q(device_id)}", headers={"If-Match": f'"{etag}"'}, safe=True,
                              what=f"delete device {device_id!r}", right="RegistryWrite", budget=self.pacer.registry)
        self.counters.add(writes=1, registry_operations=1)
        return r

    @staticmethod
    def _twin_path(device_id: str, module_id: Optional[str] = None) -> str:
        return f"/twins/{_q(device_id)}" + (f"/modules/{_q(module_id)}" if module_id else "")

    def patch_twin(self, device_id: str, patch: Dict[str, Any], etag: Optional[str], module_id: Optional[str] = None):
        """PATCH a device or module twin (a merge: null removes) with If-Match of the twin etag read (412 when it
        moved); without an etag the PATCH is unconditional and never retried blindly."""
        headers = {"If-Match": f'"{etag}"'} if etag else {}
        name = f"{device_id}/{module_id}" if module_id else device_id
        r = self.http.request("PATCH", self._twin_path(device_id, module_id), json_body=patch, headers=headers,
                              safe=bool(etag), what=f"update twin of {name!r}", right="ServiceConnect")
        self.counters.add(writes=1)
        return r

    def get_twin(self, device_id: str, module_id: Optional[str] = None) -> Optional[Dict[str, Any]]:
        name = f"{device_id}/{module_id}" if module_id else device_id
        r = self.http.request("GET", self._twin_path(device_id, module_id), safe=True, what=f"GET twin {name!r}",
                              right="ServiceConnect")
        self.counters.add(gets=1)
        if r.status_code == 404:
            return None
        if r.status_code != 200:
            raise error_from_response(r, f"GET twin {name!r}")
        return r.json()

    # ------------------------------------------------------------------- modules
    def _module_path(self, device_id: str, module_id: Optional[str] = None) -> str:
        return f"/devices/{_q(device_id)}/modules" + (f"/{_q(module_id)}" if module_id else "")

    def get_module(self, device_id: str, module_id: str) -> Optional[Dict[str, Any]]:
        """A module identity, or None when the module (or its device) does not exist.  Module responses have no
        ETag header: the etag is in the body (iot-api-2.md §1.2)."""
        r = self.http.request("GET", self._module_path(device_id, module_id), safe=True,
                              what=f"GET module {device_id}/{module_id}", right="RegistryRead")
        self.counters.add(gets=1, registry_operations=1)
        if r.status_code == 404:
            return None
        if r.status_code != 200:
            raise error_from_response(r, f"GET module {device_id}/{module_id}")
        return r.json()

    def list_modules(self, device_id: str) -> Optional[List[Dict[str, Any]]]:
        r = self.http.request("GET", self._module_path(device_id), safe=True, what=f"GET modules of {device_id!r}",
                              right="RegistryRead")
        self.counters.add(gets=1, registry_operations=1)
        if r.status_code == 404:
            return None
        if r.status_code != 200:
            raise error_from_response(r, f"GET modules of {device_id!r}")
        return r.json()

    def put_module(self, device_id: str, module_id: str, body: Dict[str, Any], etag: Optional[str]):
        headers = {"If-Match": f'"{etag}"'} if etag else {}
        r = self.http.request("PUT", self._module_path(device_id, module_id), json_body=body, headers=headers,
                              safe=True, what=f"{'update' if etag else 'create'} module {device_id}/{module_id}",
                              right="RegistryWrite")
        self.counters.add(writes=1, registry_operations=1)
        return r

    def delete_module(self, device_id: str, module_id: str, etag: str):
        r = self.http.request("DELETE", self._module_path(device_id, module_id), headers={"If-Match": f'"{etag}"'},
                              safe=True, what=f"delete module {device_id}/{module_id}", right="RegistryWrite")
        self.counters.add(writes=1, registry_operations=1)
        return r

    def bulk(self, entries: List[Dict[str, Any]]):
        """POST /devices with at most 100 conditional entries (a repeat cannot apply twice: safe to retry)."""
        r = self.http.request("POST", "/devices", json_body=entries, safe=True,
                              what=f"bulk call of {len(entries)} devices", right="RegistryWrite",
                              budget=self.pacer.registry, cost=len(entries))  # each device counts once
        self.counters.add(bulk_calls=1, writes=1, registry_operations=len(entries))
        return r

    # ---------------------------------------------------------------------- query
    def query_pages(self, text: str, page_size: int = QUERY_PAGE_SIZE,
                    token: Optional[str] = None) -> Iterator[tuple]:
        """Every page of a query as (items, continuation), following x-ms-continuation whatever page size the hub
        chooses ("the service may use a different value", iot-api-2.md §7): the index lags behind writes."""
        if len(text) > MAX_USER_QUERY_CHARS:
            raise IoTApiError(f"query is {len(text)} characters long; IoT Hub takes at most {MAX_USER_QUERY_CHARS}")
        while True:
            headers = {"x-ms-max-item-count": str(page_size)}
            if token:
                headers["x-ms-continuation"] = token
            r = self.http.request("POST", "/devices/query", json_body={"query": text}, headers=headers, safe=True,
                                  what="query", write=False, right="ServiceConnect", budget=self.pacer.query)
            self.counters.add(query_pages=1)
            if r.status_code != 200:
                raise error_from_response(r, f"query {text!r}")
            items = r.json()
            token = r.headers.get("x-ms-continuation")
            if token and items:
                self.page_size = len(items)  # a full page: the size the hub actually uses
            yield items, token
            if not token:
                return

    def query(self, text: str, page_size: int = QUERY_PAGE_SIZE) -> Iterator[Dict[str, Any]]:
        """Every item of a query, following x-ms-continuation."""
        for items, _token in self.query_pages(text, page_size):
            yield from items

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
