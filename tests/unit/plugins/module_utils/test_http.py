"""Retry rules and error parsing of the HTTP client (httpx.MockTransport: unit tests of pure client logic)."""

from __future__ import annotations

import json
import random

import httpx
import pytest

from ansible_collections.fleet.azure_iot.plugins.module_utils._auth import StaticCredential
from ansible_collections.fleet.azure_iot.plugins.module_utils._errors import AmbiguousWriteError, IoTApiError
from ansible_collections.fleet.azure_iot.plugins.module_utils._http import HttpClient, RetryPolicy, parse_error

THROTTLED = {"Message": "ErrorCode:ThrottlingException;The request has been throttled. Wait 10 seconds and try "
                        "again. Operation type: CRUD", "ExceptionMessage": "Tracking ID:x-G:0-TimeStamp:01/01/2026 00:00:00"}


def client(handler, **policy):
    sleeps = []
    p = RetryPolicy(sleep=sleeps.append, rng=random.Random(1), **policy)
    c = HttpClient("https://hub.example", StaticCredential("SharedAccessSignature x"), api_version="2021-04-12", policy=p)
    c._http = httpx.Client(base_url="https://hub.example", transport=httpx.MockTransport(handler))
    return c, sleeps


def hub_error(status, code, message="m"):
    return httpx.Response(status, json={"Message": f"ErrorCode:{code};{message}", "ExceptionMessage": "t"},
                          headers={"iothub-errorcode": code, "x-ms-request-id": "rid-1"})


def test_429_is_retried_with_the_wait_the_service_asks_for():
    calls = []

    def handler(req):
        calls.append(req)
        return httpx.Response(429, json=THROTTLED) if len(calls) < 3 else httpx.Response(200, json={})
    c, sleeps = client(handler)
    r = c.request("PUT", "/devices/d", json_body={}, safe=False)
    assert r.status_code == 200 and len(calls) == 3
    assert 5.0 <= sleeps[0] <= 10.0 and 10.0 <= sleeps[1] <= 20.0  # 10 s, doubled, with 50-100 % jitter
    assert calls[0].url.params["api-version"] == "2021-04-12"


def test_retry_after_header_and_backoff_override():
    def handler(req):
        return httpx.Response(503, headers={"Retry-After": "3"})
    c, sleeps = client(handler, max_retries=2)
    with pytest.raises(IoTApiError) as exc:
        c.request("GET", "/devices/d", safe=True)
    assert 1.5 <= sleeps[0] <= 3.0 and len(sleeps) == 2
    assert "gave up after 3 attempts" in str(exc.value) and "HTTP 503" in str(exc.value)
    c2, sleeps2 = client(lambda req: httpx.Response(429, json=THROTTLED), max_retries=3, backoff_seconds=0.01)
    with pytest.raises(IoTApiError):
        c2.request("GET", "/x", safe=True)
    assert all(s <= 0.04 for s in sleeps2) and len(sleeps2) == 3


def test_unsafe_write_is_not_retried_on_5xx_or_lost_answers():
    calls = []

    def handler(req):
        calls.append(req)
        return hub_error(500, "ServerError")
    c, sleeps = client(handler)
    with pytest.raises(AmbiguousWriteError) as exc:
        c.request("PUT", "/devices/d", json_body={}, safe=False)
    assert len(calls) == 1 and sleeps == [] and "may have been applied" in str(exc.value)

    def dropped(req):
        raise httpx.RemoteProtocolError("Server disconnected without sending a response.")
    c2, _sleeps = client(dropped)
    with pytest.raises(AmbiguousWriteError):
        c2.request("DELETE", "/devices/d", safe=False)


def test_safe_requests_are_retried_on_5xx_and_dropped_connections():
    calls = []

    def handler(req):
        calls.append(req)
        if len(calls) == 1:
            raise httpx.ReadError("connection reset")
        if len(calls) == 2:
            return hub_error(500, "ServerError")
        return httpx.Response(200, json={"ok": True})
    c, sleeps = client(handler)
    assert c.request("PUT", "/devices/d", json_body={}, headers={"If-Match": '"e"'}, safe=True).json() == {"ok": True}
    assert len(sleeps) == 2


def test_unopened_connection_is_retried_even_for_unsafe_writes():
    calls = []

    def handler(req):
        calls.append(req)
        if len(calls) == 1:
            raise httpx.ConnectError("refused")
        return httpx.Response(200, json={})
    c, _sleeps = client(handler)
    assert c.request("POST", "/devices", json_body=[], safe=False).status_code == 200


def test_budget_bounds_the_total_wait():
    c, sleeps = client(lambda req: httpx.Response(429, json=THROTTLED), budget_seconds=25)
    with pytest.raises(IoTApiError) as exc:
        c.request("GET", "/x", safe=True)
    assert sum(sleeps) <= 25 and "retry_budget_seconds=25" in str(exc.value)
    assert exc.value.status == 429 and exc.value.code == "ThrottlingException"


def test_client_errors_are_returned_not_retried():
    calls = []

    def handler(req):
        calls.append(req)
        return hub_error(412, "PreconditionFailed")
    c, _sleeps = client(handler)
    assert c.request("PUT", "/devices/d", json_body={}, safe=True).status_code == 412 and len(calls) == 1


@pytest.mark.parametrize("response, expected", [
    (hub_error(404, "DeviceNotFound", "d1"), ("DeviceNotFound", "d1", "rid-1")),
    (httpx.Response(404, json={"Message": json.dumps({"errorCode": 404103, "message": "not online"}), "ExceptionMessage": ""}),
     ("404103", "not online", None)),
    (httpx.Response(412, json={"error": {"code": "PreconditionFailed", "message": "etag", "requestId": "r2"}},
                    headers={"x-ms-error-code": "PreconditionFailed"}), ("PreconditionFailed", "etag", "r2")),
    (httpx.Response(502, text="<html>bad gateway</html>"), (None, "<html>bad gateway</html>", None)),
])
def test_parse_error_envelopes(response, expected):
    assert parse_error(response) == expected


def test_every_attempt_counts_against_the_budget_a_retry_after_a_429_included():
    """A retry that skipped the budget was invisible to the pacing: the hub counted it, the pacer did not, and the
    next calls ran into more 429s (24 in the throttled benchmark)."""
    from ansible_collections.fleet.azure_iot.plugins.module_utils._pacing import Budget

    now = [0.0]
    budget = Budget(None, clock=lambda: now[0], sleep=lambda s: now.__setitem__(0, now[0] + s))
    calls = []

    def handler(req):
        calls.append(now[0])
        now[0] += 1
        return httpx.Response(429, json=THROTTLED) if len(calls) == 2 else httpx.Response(200, json={})
    c, _sleeps = client(handler)
    c.request("POST", "/devices", json_body=[], safe=True, budget=budget, cost=100)  # goes through
    c.request("POST", "/devices", json_body=[], safe=True, budget=budget, cost=100)  # 429, then a retry
    assert len(calls) == 3 and budget.throttled == 1
    # the 429 taught a quota of one S1 unit (95 after the margin); the refused attempt did not count at the hub
    # and leaves the window; the retry waited for the first call's minute to pass, and was counted when sent
    assert calls[2] >= 60
    assert list(budget.sent) == [(calls[2], 100)]
