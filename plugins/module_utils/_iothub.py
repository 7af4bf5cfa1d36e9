# -*- coding: utf-8 -*-
# Copyright: fleet.azure_iot contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""PRIVATE to fleet.azure_iot: the IoT Hub data-plane client (api-version 2021-04-12), REST only: identities,
twins, modules, bulk, queries, configurations, the edge manifest call and import/export jobs.  The rules that use
these reads (topology, plans) are elsewhere (``_topology``, ``_plan``, ``_twin``); this file plans nothing."""

from __future__ import annotations

import os
from typing import Any, Dict, Iterator, List, Optional

from ansible_collections.fleet.azure_iot.plugins.module_utils._auth import (
    IOTHUB_SCOPE,
    EntraCredential,
    SasCredential,
    parse_connection_string,
)
from ansible_collections.fleet.azure_iot.plugins.module_utils._client import (
    RestClient,
    check_host,
    q,
    retry_policy,
)
from ansible_collections.fleet.azure_iot.plugins.module_utils._errors import InputError, IoTApiError
from ansible_collections.fleet.azure_iot.plugins.module_utils._http import HttpClient, error_from_response, tls_verify
from ansible_collections.fleet.azure_iot.plugins.module_utils._pacing import Pacer

API_VERSION = "2021-04-12"
QUERY_PAGE_SIZE = 1000  # what we ask for; the hub answers with at most its own page size (100 documented)
DOCUMENTED_PAGE_SIZE = 100  # iot-api-2.md §7: until a full page shows the hub's own
MAX_QUERY_CHARS = 8000  # keep generated queries well under the service's query size limit
MAX_USER_QUERY_CHARS = 8192  # the service's limit on a query's length


def quote_literal(value: str) -> str:
    """A string literal for the IoT Hub query language, with its documented escapes (\\' and \\\\; a doubled quote
    is not one)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


class IoTHubClient(RestClient):
    def __init__(self, http, host: str):
        super().__init__(http, host)
        self.page_size = DOCUMENTED_PAGE_SIZE  # learnt from the first full page
        self.pacer = Pacer()  # quotas unknown until stated (hub_sku) or learnt from a 429

    # ----------------------------------------------------------------- identities
    def get_device(self, device_id: str) -> Optional[Dict[str, Any]]:
        return self.read(f"/devices/{q(device_id)}", f"GET device {device_id!r}", right="RegistryRead",
                         budget=self.pacer.registry, registry=True, etag_header=True)

    def put_device(self, device_id: str, body: Dict[str, Any], etag: Optional[str]):
        """Create (etag None: no If-Match, 409 if it exists) or replace with If-Match "<etag>"."""
        return self.send("PUT", f"/devices/{q(device_id)}", f"{'update' if etag else 'create'} device {device_id!r}",
                         body=body, etag=etag, right="RegistryWrite", budget=self.pacer.registry, registry=1)

    def delete_device(self, device_id: str, etag: str):
        return self.send("DELETE", f"/devices/{q(device_id)}", f"delete device {device_id!r}", etag=etag,
                         right="RegistryWrite", budget=self.pacer.registry, registry=1)

    @staticmethod
    def _twin_path(device_id: str, module_id: Optional[str] = None) -> str:
        return f"/twins/{q(device_id)}" + (f"/modules/{q(module_id)}" if module_id else "")

    def patch_twin(self, device_id: str, patch: Dict[str, Any], etag: Optional[str], module_id: Optional[str] = None):
        """PATCH a device or module twin (a merge: null removes) with If-Match of the twin etag read (412 when it
        moved); without an etag the PATCH is unconditional and never retried blindly."""
        name = f"{device_id}/{module_id}" if module_id else device_id
        return self.send("PATCH", self._twin_path(device_id, module_id), f"update twin of {name!r}", body=patch,
                         etag=etag, safe=bool(etag), right="ServiceConnect")

    def get_twin(self, device_id: str, module_id: Optional[str] = None) -> Optional[Dict[str, Any]]:
        name = f"{device_id}/{module_id}" if module_id else device_id
        return self.read(self._twin_path(device_id, module_id), f"GET twin {name!r}", right="ServiceConnect")

    # ------------------------------------------------------------------- modules
    @staticmethod
    def _module_path(device_id: str, module_id: Optional[str] = None) -> str:
        return f"/devices/{q(device_id)}/modules" + (f"/{q(module_id)}" if module_id else "")

    def get_module(self, device_id: str, module_id: str) -> Optional[Dict[str, Any]]:
        """A module identity, or None when the module (or its device) does not exist.  Module responses have no
        ETag header: the etag is in the body (iot-api-2.md §1.2)."""
        return self.read(self._module_path(device_id, module_id), f"GET module {device_id}/{module_id}",
                         right="RegistryRead", registry=True)

    def list_modules(self, device_id: str) -> Optional[List[Dict[str, Any]]]:
        return self.read(self._module_path(device_id), f"GET modules of {device_id!r}", right="RegistryRead",
                         registry=True)

    def put_module(self, device_id: str, module_id: str, body: Dict[str, Any], etag: Optional[str]):
        return self.send("PUT", self._module_path(device_id, module_id),
                         f"{'update' if etag else 'create'} module {device_id}/{module_id}", body=body, etag=etag,
                         right="RegistryWrite", registry=1)

    def delete_module(self, device_id: str, module_id: str, etag: str):
        return self.send("DELETE", self._module_path(device_id, module_id), f"delete module {device_id}/{module_id}",
                         etag=etag, right="RegistryWrite", registry=1)

    def bulk(self, entries: List[Any], prepaid: bool = False):
        """POST /devices with at most 100 conditional entries (a repeat cannot apply twice: safe to retry).  An entry
        is a dict, or its JSON text (the bulk path keeps entries serialized: they are sent as they are).
        ``prepaid``: the caller took the room for the first attempt from the registry budget (``Budget.take``)."""
        if entries and all(isinstance(e, str) for e in entries):
            return self.send("POST", "/devices", f"bulk call of {len(entries)} devices",
                             content=("[" + ",".join(entries) + "]").encode("utf-8"), right="RegistryWrite",
                             budget=self.pacer.registry, cost=len(entries), registry=len(entries), bulk=True,
                             prepaid=prepaid)
        return self.send("POST", "/devices", f"bulk call of {len(entries)} devices", body=entries,
                         right="RegistryWrite", budget=self.pacer.registry, cost=len(entries),  # each device counts once
                         registry=len(entries), bulk=True, prepaid=prepaid)

    # ------------------------------------------------------------ configurations
    def get_configuration(self, cfg_id: str) -> Optional[Dict[str, Any]]:
        return self.read(f"/configurations/{q(cfg_id)}", f"GET configuration {cfg_id!r}", right="RegistryRead")

    def list_configurations(self) -> List[Dict[str, Any]]:
        out = self.read("/configurations", "list configurations", right="RegistryRead")
        if out is None:
            raise IoTApiError("list configurations: HTTP 404", 404)
        return out

    def put_configuration(self, cfg_id: str, body: Dict[str, Any], etag: Optional[str]):
        return self.send("PUT", f"/configurations/{q(cfg_id)}",
                         f"{'update' if etag else 'create'} configuration {cfg_id!r}", body=body, etag=etag,
                         right="RegistryWrite")

    def delete_configuration(self, cfg_id: str, etag: str):
        return self.send("DELETE", f"/configurations/{q(cfg_id)}", f"delete configuration {cfg_id!r}", etag=etag,
                         right="RegistryWrite")

    def test_queries(self, target_condition: Optional[str], metric_queries: Optional[Dict[str, str]]) -> Dict[str, Any]:
        """POST /configurations/testQueries: the hub's own check of a target condition and custom metric queries
        (``targetConditionError``, ``customMetricQueryErrors``: empty when valid).  It writes nothing."""
        body: Dict[str, Any] = {}
        if target_condition is not None:
            body["targetCondition"] = target_condition
        if metric_queries:
            body["customMetricQueries"] = metric_queries
        r = self.send("POST", "/configurations/testQueries", "test the configuration's queries", body=body,
                      right="RegistryRead", write=False)
        self.counters.add(gets=1)
        if r.status_code != 200:
            raise error_from_response(r, "test the configuration's queries")
        return r.json()

    def count(self, source_and_where: str) -> int:
        """SELECT COUNT() over ``FROM devices [WHERE ...]`` (or devices.modules): how many twins match now."""
        items = list(self.query(f"SELECT COUNT() AS n {source_and_where}"))
        return int((items[0] if items else {}).get("n", 0))

    def apply_configuration_content(self, device_id: str, content: Dict[str, Any]):
        """POST applyConfigurationContent (iot-api-2.md §2.6): not conditional, so never retried blindly."""
        return self.send("POST", f"/devices/{q(device_id)}/applyConfigurationContent",
                         f"apply the manifest of {device_id!r}", body=content, safe=False,
                         right="RegistryWrite+ServiceConnect")

    # ---------------------------------------------------------------------- jobs
    def list_jobs(self) -> List[Dict[str, Any]]:
        out = self.read("/jobs", "list jobs", right="RegistryRead")
        if out is None:
            raise IoTApiError("list jobs: HTTP 404", 404)
        return out

    def get_job(self, job_id: str) -> Optional[Dict[str, Any]]:
        return self.read(f"/jobs/{q(job_id)}", f"poll job {job_id}", right="RegistryRead")

    def create_job(self, body: Dict[str, Any]):
        """POST /jobs/create; the response, for the caller to read a busy slot (403/409/429)."""
        return self.send("POST", "/jobs/create", f"create the {body['type']} job", body=body, safe=False,
                         right="RegistryWrite")

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


def build_hub_client(params: dict, warn=None) -> IoTHubClient:
    """Validate the connection options (before any request) and build the client."""
    cs, hostname, mode = params.get("connection_string"), params.get("hostname"), params.get("auth_mode")
    if mode is None:
        mode = "sas" if cs else ("entra" if hostname else None)
    if mode is None:
        empty = [name for name in ("IOTHUB_CONNECTION_STRING", "IOTHUB_HOSTNAME")
                 if name in os.environ and not os.environ[name].strip()]
        raise InputError("No IoT Hub connection: set connection_string (or IOTHUB_CONNECTION_STRING) for SAS, "
                         "or hostname (or IOTHUB_HOSTNAME) with auth_mode=entra for Entra ID"
                         + (f"; {' and '.join(empty)} {'is' if len(empty) == 1 else 'are'} set but empty (an AWX "
                            "credential field left unset), which counts as unset" if empty else ""))
    if mode == "sas":
        if not cs:
            raise InputError("auth_mode=sas needs connection_string (or IOTHUB_CONNECTION_STRING)")
        parts = parse_connection_string(cs)
        origin = "the HostName of connection_string (or IOTHUB_CONNECTION_STRING)"
        host = check_host(parts["HostName"], origin)
        if hostname and params.get("auth_mode") == "sas" and hostname.lower() != host.lower():
            raise InputError(f"hostname {hostname!r} differs from the HostName of connection_string; drop one")
        credential = SasCredential(host, parts["SharedAccessKeyName"], parts["SharedAccessKey"])
    else:
        if not hostname:
            raise InputError("auth_mode=entra needs hostname (or IOTHUB_HOSTNAME), e.g. myhub.azure-devices.net")
        origin = "hostname (or IOTHUB_HOSTNAME)"
        host = check_host(hostname.rstrip("/"), origin)
        credential = EntraCredential(IOTHUB_SCOPE)
    verify = tls_verify(params["validate_certs"], params.get("ca_path"), "ca_path (or IOTHUB_CA_PATH)", warn)
    http = HttpClient(f"https://{host}", credential, api_version=API_VERSION, verify=verify,
                      timeout=params["timeout"], policy=retry_policy(params), origin=origin)
    return IoTHubClient(http, host)
