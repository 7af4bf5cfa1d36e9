# -*- coding: utf-8 -*-
# Copyright: fleet.azure_iot contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""PRIVATE to fleet.azure_iot: the Device Provisioning Service client (service API, api-version 2021-10-01,
iot-api-2.md §4) on the shared client base, and its connection options (module_defaults group
``fleet.azure_iot.dps``).

What the service does that shapes this client (recorded, azure-sdk-for-python test recordings):
- GET and query hide symmetric keys; ``POST .../attestationmechanism`` returns them (``attestation``);
- an etag goes back in If-Match exactly as it was returned, unquoted (never the hub's quoted form);
- a PUT without If-Match creates; on an existing id it is refused with 409 (or upserts: the service's reading is
  not certain, so this client never relies on either: it reads first, creates without If-Match, updates with it);
- a bulk call answers 200 with ``isSuccessful`` and per-item ``errors``.
"""

from __future__ import annotations

import os
from typing import Any, Dict, Iterator, List, Optional

from ansible.module_utils.basic import env_fallback

from ansible_collections.fleet.azure_iot.plugins.module_utils._auth import (
    DPS_SCOPE,
    EntraCredential,
    SasCredential,
    parse_connection_string,
)
from ansible_collections.fleet.azure_iot.plugins.module_utils._client import RestClient, check_host, q, retry_policy
from ansible_collections.fleet.azure_iot.plugins.module_utils._errors import InputError
from ansible_collections.fleet.azure_iot.plugins.module_utils._http import HttpClient, error_from_response, tls_verify

API_VERSION = "2021-10-01"
BULK_MAX = 10  # "Bulk device enrollment operation with maximum of 10 enrollments" (§4.4)
PAGE_SIZE = 100

DPS_ARGS = dict(
    dps_connection_string=dict(type="str", no_log=True, fallback=(env_fallback, ["DPS_CONNECTION_STRING"])),
    dps_hostname=dict(type="str", fallback=(env_fallback, ["DPS_HOSTNAME"])),
    auth_mode=dict(type="str", choices=["sas", "entra"]),
    ca_path=dict(type="path", fallback=(env_fallback, ["DPS_CA_PATH"])),
    validate_certs=dict(type="bool", default=True),
)


def unquoted_if_match(etag: Optional[str]) -> Dict[str, str]:
    """The DPS's If-Match: the etag exactly as the service returned it (recorded unquoted)."""
    return {"If-Match": etag} if etag else {}


class DpsClient(RestClient):
    """Individual enrollments and enrollment groups (``group``), their attestation mechanisms, queries, bulk
    operations, and registration states."""

    @staticmethod
    def base(group: bool) -> str:
        return "/enrollmentGroups" if group else "/enrollments"

    @staticmethod
    def noun(group: bool) -> str:
        return "enrollment group" if group else "enrollment"

    def get(self, item_id: str, group: bool = False) -> Optional[Dict[str, Any]]:
        return self.read(f"{self.base(group)}/{q(item_id)}", f"GET {self.noun(group)} {item_id!r}",
                         right="EnrollmentRead")

    def attestation(self, item_id: str, group: bool = False) -> Optional[Dict[str, Any]]:
        """The attestation with its keys (a POST that reads); None when the enrollment is gone."""
        what = f"read the attestation of {self.noun(group)} {item_id!r}"
        r = self.send("POST", f"{self.base(group)}/{q(item_id)}/attestationmechanism", what, write=False,
                      right="EnrollmentWrite")
        self.counters.add(gets=1)
        if r.status_code == 404:
            return None
        if r.status_code != 200:
            raise error_from_response(r, what)
        return r.json()

    def put(self, item_id: str, body: Dict[str, Any], etag: Optional[str], group: bool = False):
        """Create (no etag: safe to repeat, a repeat meets 409) or update (with the etag: conditional)."""
        action = "update" if etag else "create"
        return self.send("PUT", f"{self.base(group)}/{q(item_id)}", f"{action} {self.noun(group)} {item_id!r}",
                         body=body, headers=unquoted_if_match(etag), right="EnrollmentWrite")

    def delete(self, item_id: str, etag: Optional[str], group: bool = False):
        return self.send("DELETE", f"{self.base(group)}/{q(item_id)}", f"delete {self.noun(group)} {item_id!r}",
                         headers=unquoted_if_match(etag), right="EnrollmentWrite")

    def bulk(self, mode: str, items: List[Dict[str, Any]], group: bool = False):
        """One bulk operation (at most BULK_MAX items); the response, for the caller to read per-item errors."""
        if len(items) > BULK_MAX:
            raise ValueError(f"a bulk operation takes at most {BULK_MAX} items")
        field = "enrollmentGroups" if group else "enrollments"
        # create and delete are safe to repeat (a repeat meets per-item 409 / nothing); updateIfMatchETag too.
        return self.send("POST", self.base(group), f"bulk {mode} of {len(items)} {self.noun(group)}s",
                         body={"mode": mode, field: items}, right="EnrollmentWrite", bulk=True)

    def _pages(self, path: str, what: str, body: Optional[Dict[str, Any]], right: str) -> Iterator[Dict[str, Any]]:
        token = None
        while True:
            headers = {"x-ms-max-item-count": str(PAGE_SIZE)}
            if token:
                headers["x-ms-continuation"] = token
            r = self.send("POST", path, what, body=body, headers=headers, write=False, right=right)
            self.counters.add(query_pages=1)
            if r.status_code != 200:
                raise error_from_response(r, what)
            yield from r.json() or []
            token = r.headers.get("x-ms-continuation")
            if not token:
                return

    def query(self, group: bool = False) -> Iterator[Dict[str, Any]]:
        """Every enrollment (or group), page by page (keys hidden, as the service answers)."""
        return self._pages(f"{self.base(group)}/query", f"query {self.noun(group)}s", {"query": "SELECT *"},
                           "EnrollmentRead")

    def registration(self, registration_id: str) -> Optional[Dict[str, Any]]:
        return self.read(f"/registrations/{q(registration_id)}", f"GET registration {registration_id!r}",
                         right="RegistrationStatusRead")

    def group_registrations(self, group_id: str) -> Iterator[Dict[str, Any]]:
        return self._pages(f"/registrations/{q(group_id)}/query", f"query the registrations of {group_id!r}",
                           None, "RegistrationStatusRead")


def build_dps_client(params: dict, warn=None) -> DpsClient:
    """Validate the connection options (before any request) and build the client."""
    cs, hostname, mode = params.get("dps_connection_string"), params.get("dps_hostname"), params.get("auth_mode")
    if mode is None:
        mode = "sas" if cs else ("entra" if hostname else None)
    if mode is None:
        empty = [n for n in ("DPS_CONNECTION_STRING", "DPS_HOSTNAME") if n in os.environ and not os.environ[n].strip()]
        raise InputError("No Device Provisioning Service connection: set dps_connection_string (or "
                         "DPS_CONNECTION_STRING) for SAS, or dps_hostname (or DPS_HOSTNAME) with auth_mode=entra"
                         + (f"; {' and '.join(empty)} set but empty, which counts as unset" if empty else ""))
    if mode == "sas":
        if not cs:
            raise InputError("auth_mode=sas needs dps_connection_string (or DPS_CONNECTION_STRING)")
        parts = parse_connection_string(cs, "dps_connection_string")
        origin = "the HostName of dps_connection_string (or DPS_CONNECTION_STRING)"
        host = check_host(parts["HostName"], origin)
        if hostname and params.get("auth_mode") == "sas" and hostname.lower() != host.lower():
            raise InputError(f"dps_hostname {hostname!r} differs from the HostName of dps_connection_string; "
                             "drop one")
        credential = SasCredential(host, parts["SharedAccessKeyName"], parts["SharedAccessKey"])
    else:
        if not hostname:
            raise InputError("auth_mode=entra needs dps_hostname (or DPS_HOSTNAME), e.g. "
                             "mydps.azure-devices-provisioning.net")
        origin = "dps_hostname (or DPS_HOSTNAME)"
        host = check_host(hostname.rstrip("/"), origin)
        credential = EntraCredential(DPS_SCOPE)
    verify = tls_verify(params["validate_certs"], params.get("ca_path"), "ca_path (or DPS_CA_PATH)", warn)
    http = HttpClient(f"https://{host}", credential, api_version=API_VERSION, verify=verify,
                      timeout=params["timeout"], policy=retry_policy(params), service="Device Provisioning Service",
                      origin=origin)
    return DpsClient(http, host)
