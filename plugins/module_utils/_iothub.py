# -*- coding: utf-8 -*-
# Copyright: fleet.azure_iot contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""PRIVATE to fleet.azure_iot: IoT Hub registry REST calls (api-version 2021-04-12) and the device converge
loop shared by the modules."""

from __future__ import annotations

import threading
import urllib.parse
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Optional

from ansible_collections.fleet.azure_iot.plugins.module_utils._http import (
    AmbiguousWriteError,
    IoTApiError,
    error_from_response,
)
from ansible_collections.fleet.azure_iot.plugins.module_utils._models import DeviceSpec, planned_scope
from ansible_collections.fleet.azure_iot.plugins.module_utils._plan import DevicePlan, PlanError, plan_device

API_VERSION = "2021-04-12"
QUERY_PAGE_SIZE = 1000
MAX_REPLANS = 5


def _q(device_id: str) -> str:
    return urllib.parse.quote(device_id, safe="")


def quote_literal(value: str) -> str:
    """A string literal for the IoT Hub query language."""
    return "'" + value.replace("'", "''") + "'"


class EtagConflict(Exception):
    """The device changed since the etag the user pinned."""


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
        r = self.http.request("GET", f"/devices/{_q(device_id)}", safe=True, what=f"GET device {device_id!r}")
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
        r = self.http.request("PUT", f"/devices/{_q(device_id)}", json_body=body, headers=headers, safe=True, what=what)
        self.counters.add(writes=1, registry_operations=1)
        return r

    def delete_device(self, device_id: str, etag: str):
        r = self.http.request("DELETE", f"/devices/{_q(device_id)}", headers={"If-Match": f'"{etag}"'}, safe=True,
                              what=f"delete device {device_id!r}")
        self.counters.add(writes=1, registry_operations=1)
        return r

    def get_twin(self, device_id: str) -> Optional[Dict[str, Any]]:
        r = self.http.request("GET", f"/twins/{_q(device_id)}", safe=True, what=f"GET twin {device_id!r}")
        self.counters.add(gets=1)
        if r.status_code == 404:
            return None
        if r.status_code != 200:
            raise error_from_response(r, f"GET twin {device_id!r}")
        return r.json()

    def bulk(self, entries: List[Dict[str, Any]]):
        """POST /devices with at most 100 conditional entries (a repeat cannot apply twice: safe to retry)."""
        r = self.http.request("POST", "/devices", json_body=entries, safe=True,
                              what=f"bulk call of {len(entries)} devices")
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
                                  what="query")
            self.counters.add(query_pages=1)
            if r.status_code != 200:
                raise error_from_response(r, f"query {text!r}")
            yield from r.json()
            token = r.headers.get("x-ms-continuation")
            if not token:
                return

    def children_of(self, scope: str) -> List[Dict[str, Any]]:
        return list(self.query(f"SELECT * FROM devices WHERE array_contains(parentScopes, {quote_literal(scope)})"))

    # --------------------------------------------------------------------- parents
    def resolve_parent(self, parent: Optional[str], check_mode: bool = False, notes: Optional[list] = None) -> Optional[str]:
        """The parent option -> the parent's deviceScope ("" detaches, None leaves it alone).

        In check mode a missing parent may be created by an earlier task of the same play: plan with a
        placeholder scope and say so, rather than fail a dry run."""
        if parent is None or parent == "":
            return parent
        device = self.get_device(parent)
        if device is None and check_mode:
            if notes is not None:
                notes.append(f"parent {parent!r} does not exist yet; check mode assumes it will be created first")
            return planned_scope(parent)
        if device is None:
            raise PlanError(f"parent: device {parent!r} does not exist; create the edge device first "
                            "(or list it before its children in iothub_device_bulk)")
        if not (device.get("capabilities") or {}).get("iotEdge"):
            raise PlanError(f"parent: device {parent!r} is not an IoT Edge device (capabilities.iotEdge is false); "
                            "only edge devices can be parents: set edge_enabled=true on it")
        scope = device.get("deviceScope")
        if not scope:
            raise PlanError(f"parent: edge device {parent!r} has no deviceScope")
        return scope


@dataclass
class EnsureResult:
    plan: DevicePlan
    device: Optional[Dict[str, Any]]
    changed: bool
    attempts: int = 1
    notes: List[str] = field(default_factory=list)


def ensure_device(client: IoTHubClient, spec: DeviceSpec, *, check_mode: bool,
                  pinned_etag: Optional[str] = None) -> EnsureResult:
    """GET, plan, write the difference with If-Match; on a conflict re-read and re-plan (bounded)."""
    wrote = False
    notes: List[str] = []
    for attempt in range(1, MAX_REPLANS + 1):
        current = client.get_device(spec.device_id)
        if pinned_etag is not None and current is not None and current.get("etag") != pinned_etag.strip('"'):
            raise EtagConflict(f"etag: device {spec.device_id!r} has etag {current.get('etag')!r}, not the "
                               f"expected {pinned_etag!r}: it was changed by someone else; read it again "
                               "(iothub_device_info) and decide, or drop the etag option to converge anyway")
        if pinned_etag is not None and current is None and spec.state == "present":
            raise EtagConflict(f"etag: device {spec.device_id!r} does not exist, but an etag was expected")
        parent_scope = client.resolve_parent(spec.parent, check_mode, notes) if spec.state == "present" else None
        plan = plan_device(spec, current, parent_scope)
        if plan.action == "none" or check_mode:
            predicted = current if plan.action == "none" else (None if plan.action == "delete" else plan.body)
            return EnsureResult(plan, predicted, wrote or (check_mode and plan.changed), attempt, notes)
        try:
            if plan.action == "delete":
                r = client.delete_device(spec.device_id, plan.etag)
                ok = r.status_code in (200, 204)
            else:
                r = client.put_device(spec.device_id, plan.body, plan.etag if plan.action == "update" else None)
                ok = r.status_code == 200
        except AmbiguousWriteError as exc:
            wrote = True
            notes.append(f"attempt {attempt}: {exc}; re-reading")
            continue
        if ok:
            device = None
            if plan.action != "delete":
                device = r.json()
                etag = (r.headers.get("etag") or "").strip('"')
                if etag:
                    device["etag"] = etag
            return EnsureResult(plan, device, True, attempt, notes)
        conflict = (r.status_code == 412 or (r.status_code == 409 and plan.action == "create")
                    or (r.status_code == 404 and plan.action in ("update", "delete")))
        if conflict and pinned_etag is None:
            # The device changed between our read and our write (or a retried write already landed).
            notes.append(f"attempt {attempt}: HTTP {r.status_code} on {plan.action}; the device changed, re-planning")
            continue
        if conflict:
            raise EtagConflict(f"etag: device {spec.device_id!r} changed since etag {pinned_etag!r} "
                               f"(HTTP {r.status_code}); read it again and decide, or drop the etag option")
        raise error_from_response(r, f"{plan.action} device {spec.device_id!r}")
    raise IoTApiError(f"device {spec.device_id!r} kept changing while it was being written ({MAX_REPLANS} attempts); "
                      "another writer is active: run again when it is done")
