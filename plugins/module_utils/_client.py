# -*- coding: utf-8 -*-
# Copyright: fleet.azure_iot contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""PRIVATE to fleet.azure_iot: the base of every service client (IoT Hub, IoT Central, and the next ones).

A client is REST only: paths, headers, status codes.  It plans nothing and knows no option except the connection
options it is built from.  What every client does the same way lives here once:

- ``read``: a GET whose 404 means "absent" (None), any other non-200 an error naming the request;
- ``send``: a write, conditional on a quoted ``If-Match`` when an etag is given (an unquoted etag is refused by
  the services), safe to retry whenever it is conditional or a create;
- ``counters``: the requests made, by kind (returned as ``requests`` by the modules);
- the connection options checked before any request (``retry_policy``, ``check_host``), the same for every
  builder (``build_hub_client``, ``build_central_client``: ``(params, warn) -> client``).
"""

from __future__ import annotations

import re
import threading
import urllib.parse
from typing import Any, Dict, Optional

from ansible_collections.fleet.azure_iot.plugins.module_utils._errors import InputError
from ansible_collections.fleet.azure_iot.plugins.module_utils._http import RetryPolicy, error_from_response


def q(segment: str) -> str:
    """One path segment (a device, module or configuration id), percent-encoded."""
    return urllib.parse.quote(segment, safe="")


def if_match(etag: Optional[str]) -> Dict[str, str]:
    """The If-Match header of a conditional write ({} for an unconditional one): the etag quoted, as the services
    want it (iot-api.md §1.3)."""
    return {"If-Match": f'"{etag.strip(chr(34))}"'} if etag else {}


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


class RestClient:
    """One service endpoint: the shared HTTP layer (retries, errors), counters, read and conditional write."""

    def __init__(self, http, host: str):
        self.http = http
        self.host = host
        self.counters = Counters()

    def read(self, path: str, what: str, *, right: Optional[str] = None, budget=None, url: Optional[str] = None,
             registry: bool = False, etag_header: bool = False) -> Optional[Any]:
        """GET PATH: the JSON body, or None on 404.  ``registry``: it counts as a registry operation;
        ``etag_header``: the ETag header is the object's etag (authoritative for device identities, iot-api.md
        §1.3)."""
        r = self.http.request("GET", path, url=url, safe=True, what=what, right=right, budget=budget)
        self.counters.add(gets=1, registry_operations=1 if registry else 0)
        if r.status_code == 404:
            return None
        if r.status_code != 200:
            raise error_from_response(r, what)
        body = r.json()
        etag = (r.headers.get("etag") or "").strip('"') if etag_header else ""
        if etag:
            body["etag"] = etag
        return body

    def send(self, method: str, path: str, what: str, *, body: Any = None, content: Optional[bytes] = None,
             etag: Optional[str] = None,
             headers: Optional[Dict[str, str]] = None, safe: bool = True, right: Optional[str] = None, budget=None,
             cost: int = 1, registry: int = 0, write: Optional[bool] = None, bulk: bool = False,
             prepaid: bool = False):
        """A request that writes (or a POST that reads, ``write=False``): the response, whatever its status, for the
        caller to read its conflicts.  With ETAG it is conditional (If-Match).  ``prepaid``: see
        ``HttpClient.request``."""
        h = dict(if_match(etag))
        h.update(headers or {})
        r = self.http.request(method, path, json_body=body, content=content, headers=h, safe=safe, what=what, right=right,
                              budget=budget, cost=cost, write=write, prepaid=prepaid)
        if write is False:
            return r
        self.counters.add(writes=1, registry_operations=registry, bulk_calls=1 if bulk else 0)
        return r


# ------------------------------------------------------------------------------ connection options, checked once
def retry_policy(params: dict) -> RetryPolicy:
    for opt in ("max_retries", "retry_budget_seconds", "retry_backoff_seconds", "timeout"):
        value = params.get(opt)
        if value is not None and value < 0:
            raise InputError(f"{opt} must not be negative")
    if params.get("timeout") is not None and params["timeout"] <= 0:
        raise InputError(f"timeout must be greater than 0 (seconds a request may take), not {params['timeout']}")
    return RetryPolicy(max_retries=params["max_retries"], budget_seconds=params["retry_budget_seconds"],
                       backoff_seconds=params.get("retry_backoff_seconds"))


HOST_RE = re.compile(r"^(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,62})(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}))*|\[[0-9A-Fa-f:.]+\])"
                     r"(?::[0-9]{1,5})?$")


def check_host(host: str, option: str) -> str:
    """A host name with an optional :port, nothing else: refused before any request otherwise."""
    host = (host or "").strip()
    if "://" in host:
        raise InputError(f"{option}: {host!r} must be a host name such as myhub.azure-devices.net, not a URL; "
                         "drop the scheme (https://)")
    if not HOST_RE.match(host):
        raise InputError(f"{option}: {host!r} is not a host name (letters, digits, '-' and '.', with an optional "
                         ":port, and no path), for example myhub.azure-devices.net")
    return host
