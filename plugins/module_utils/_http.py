# -*- coding: utf-8 -*-
# Copyright: fleet.azure_iot contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""PRIVATE to fleet.azure_iot: HTTPS through httpx with bounded, jittered retries and the services' errors.

Retry rules (docs/reliability.md):
- 429 is retried for every request: a throttled request was rejected before it was processed.
- 5xx and transport errors are retried for *safe* requests only: reads, and writes whose precondition makes
  a repeat harmless (a create without If-Match, a write with If-Match <etag>, a bulk call of conditional
  entries): if the first attempt was applied, the repeat fails with 409/412/404 and the caller re-reads.
  An unsafe write that may have been applied raises ``AmbiguousWriteError``; the caller must re-read.
- A connection that could not be opened is retried for every request: nothing was sent.
- A write whose earlier attempt was sent but not answered (a dropped connection, a 5xx) may have been applied
  by the service: the final response says so (``maybe_applied(response)``), so that a caller which then meets
  409/412/404 and finds nothing left to do still reports the write as made (``changed``).
- The first wait follows the service: ``Retry-After`` when present, else the "Wait N seconds" of a 429
  body (IoT Hub sends no Retry-After, iot-api.md §6), else 10 s for 429 and 2 s otherwise; the
  ``retry_backoff_seconds`` option overrides it.  Each later wait doubles (at most 60 s), with jitter
  (a random 50-100 % of the step); ``max_retries`` and ``retry_budget_seconds`` bound the total.
"""

from __future__ import annotations

import json
import os
import random
import re
import socket
import ssl
import time
from dataclasses import dataclass, field

from ansible_collections.fleet.azure_iot.plugins.module_utils._deps import httpx
from ansible_collections.fleet.azure_iot.plugins.module_utils._errors import AmbiguousWriteError, AuthorizationError, IoTApiError

RETRYABLE_STATUS = (429, 500, 502, 503, 504)
MAX_REFUSED_RETRIES = 2  # a refused connection: nothing listens there; two retries cover a restarting service
REFUSED_WAITS = (3.0, 6.0)  # ... spread over up to 9 s (jittered to 75-100 %), whatever retry_backoff_seconds says
WAIT_IN_BODY = re.compile(r"Wait (\d+(?:\.\d+)?) seconds", re.IGNORECASE)
MAX_STEP_SECONDS = 60.0


# The right each kind of call needs, with the built-in policies and Entra ID roles that grant it (iot-api-2.md §6.5).
RIGHTS = {
    "RegistryRead": "policies registryRead, registryReadWrite or iothubowner; Entra role IoT Hub Registry Reader",
    "RegistryWrite": "policies registryReadWrite or iothubowner; Entra role IoT Hub Registry Contributor",
    "ServiceConnect": "policies service or iothubowner; Entra role IoT Hub Twin Contributor (Data Reader to read)",
}


def missing_right(response, what: str, right: str | None, attempts: int) -> AuthorizationError:
    err = error_from_response(response, what, attempts)
    text = str(err)
    if right:
        needs = " and ".join(right.split("+"))
        grants = "; ".join(f"{r}: {RIGHTS[r]}" for r in right.split("+") if r in RIGHTS)
        text += (f"; this call needs the {needs} right, which the credential does not grant or cannot prove (a wrong "
                 f"key, an expired token, another hub). Use a credential with it ({grants})")
    return AuthorizationError(text, err.status, err.code, err.service_message, err.request_id, attempts)


@dataclass
class RetryPolicy:
    max_retries: int = 8
    budget_seconds: float = 300.0
    backoff_seconds: float | None = None  # None: follow what the service asks for
    sleep: object = time.sleep
    rng: random.Random = field(default_factory=random.Random)

    def first_wait(self, response) -> float:
        if self.backoff_seconds is not None:
            return self.backoff_seconds
        if response is not None:
            retry_after = response.headers.get("retry-after")
            if retry_after:
                try:
                    return max(0.0, float(retry_after))
                except ValueError:
                    pass
            if response.status_code == 429:
                m = WAIT_IN_BODY.search(response.text or "")
                return float(m.group(1)) if m else 10.0
        return 2.0

    def delay(self, attempt: int, response) -> float:
        step = min(self.first_wait(response) * (2 ** attempt), MAX_STEP_SECONDS)
        return step * (0.5 + 0.5 * self.rng.random())


def parse_error(response) -> tuple[str | None, str | None, str | None]:
    """(code, message, request id) from IoT Hub's envelopes A and B, IoT Central's {"error": {...}} or the DPS's
    {"errorCode", "message", "trackingId"}."""
    code = response.headers.get("iothub-errorcode") or response.headers.get("x-ms-error-code")
    request_id = response.headers.get("x-ms-request-id")
    message = None
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        if isinstance(body.get("error"), dict):  # IoT Central
            err = body["error"]
            code = code or err.get("code")
            message = err.get("message")
            request_id = request_id or err.get("requestId")
        elif "errorCode" in body and "message" in body:  # DPS: ProvisioningServiceErrorDetails (iot-api-2.md §4.1)
            code = code or str(body["errorCode"])
            message = body.get("message")
            request_id = request_id or body.get("trackingId")
        elif isinstance(body.get("Message"), str):  # IoT Hub
            raw = body["Message"]
            inner = None
            if raw.startswith("{"):
                try:
                    inner = json.loads(raw)  # envelope B: JSON inside Message
                except ValueError:
                    inner = None
            if isinstance(inner, dict):
                message = inner.get("message")
                code = code or str(inner.get("errorCode"))
            elif raw.startswith("ErrorCode:"):
                head, _sep, rest = raw.partition(";")
                code = code or head[len("ErrorCode:"):]
                message = rest or head
            else:
                message = raw
    if message is None and response.text:
        message = response.text[:500]
    return code, message, request_id


def error_from_response(response, what: str, attempts: int = 1) -> IoTApiError:
    code, message, request_id = parse_error(response)
    text = f"{what} failed: HTTP {response.status_code}"
    if code:
        text += f" {code}"
    if message and message != code:
        text += f": {message}"
    if request_id:
        text += f" (x-ms-request-id: {request_id})"
    return IoTApiError(text, response.status_code, code, message, request_id, attempts)


def _tls_failure(exc: BaseException) -> str | None:
    """The reason of an SSL verification error anywhere in the exception chain, else None."""
    seen = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, ssl.SSLCertVerificationError):
            return cur.verify_message or str(cur)
        if isinstance(cur, ssl.SSLError):
            return str(cur)
        cur = cur.__cause__ or cur.__context__
    text = str(exc)
    return text if "CERTIFICATE_VERIFY_FAILED" in text or "SSL" in text.upper().split(":", maxsplit=1)[0] else None


WRITE_METHODS = ("PUT", "PATCH", "DELETE", "POST")


def maybe_applied(response) -> bool:
    """True when an earlier attempt of this (write) request was sent and may have been applied."""
    return bool(getattr(response, "fleet_maybe_applied", False))


def _in_chain(exc: BaseException, kinds) -> BaseException | None:
    seen = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, kinds):
            return cur
        cur = cur.__cause__ or cur.__context__
    return None


def tls_verify(validate_certs: bool, ca_path: str | None, option: str, warn=None):
    """What httpx's ``verify`` gets: False when validate_certs is off (whatever the CA path says, with a warning),
    else an SSL context from ``ca_path`` (checked here, so that a bad path fails before any request with a message
    naming OPTION and the path), else True (the system's trust store)."""
    if not validate_certs:
        if warn is not None:
            warn("validate_certs=false: the service's TLS certificate is not verified; use it only for throw-away tests")
        return False
    if not ca_path:
        return True
    if not os.path.exists(ca_path):
        raise IoTApiError(f"{option}: {ca_path!r} does not exist; give the PEM file of the CA that signed the "
                          "service's certificate")
    if os.path.isdir(ca_path):
        raise IoTApiError(f"{option}: {ca_path!r} is a folder; give the PEM file of the CA, not its folder")
    try:
        return ssl.create_default_context(cafile=ca_path)
    except (ssl.SSLError, ValueError) as exc:
        raise IoTApiError(f"{option}: {ca_path!r} is not a PEM certificate file ({exc}); give the CA certificate in "
                          "PEM form (-----BEGIN CERTIFICATE-----)") from None
    except OSError as exc:
        raise IoTApiError(f"{option}: {ca_path!r} cannot be read ({exc.strerror or exc})") from None


class HttpClient:
    """httpx with TLS verification by default, an Authorization header source, and the retry rules above."""

    def __init__(self, base_url: str, credential, *, api_version: str | None, verify=True,
                 timeout: float = 30.0, policy: RetryPolicy | None = None, service: str = "IoT Hub",
                 origin: str = "the host name option"):
        self.origin = origin  # where the host name came from, for connection errors
        self.base_url = base_url.rstrip("/")
        self.credential = credential
        self.api_version = api_version
        self.policy = policy or RetryPolicy()
        self.service = service
        self.requests_sent = 0
        self._http = httpx.Client(base_url=self.base_url, verify=verify, timeout=timeout,
                                  headers={"User-Agent": "fleet.azure_iot"})

    def close(self) -> None:
        self._http.close()

    def request(self, method: str, path: str, *, json_body=None, content: bytes | None = None,
                headers: dict | None = None, params: dict | None = None, safe: bool, what: str | None = None,
                url: str | None = None, write: bool | None = None, right: str | None = None, budget=None,
                cost: int = 1, prepaid: bool = False):
        """Send a request; retry per the rules above; return the final response (any status < 429 except 5xx).

        ``safe`` says whether a repeat is harmless (reads, conditional writes).  ``url`` (absolute) overrides
        ``path`` and the api-version, for nextLink paging.  ``write`` (default: any method but GET) says whether
        the request changes state; a POST that only reads (a query) passes ``write=False``.  ``right``: the
        access right the call needs ("RegistryWrite", "RegistryRead+ServiceConnect"), named when it is refused.
        ``budget``: the quota (``_pacing.Budget``) the call counts against: every attempt, a retry after a 429
        included, waits for room for ``cost`` and is counted (a retry that skipped the budget would be invisible
        to the pacing, and run into the next 429), and the budget is told of every 429.  ``prepaid``: the caller
        took the first attempt's room from the budget already (``Budget.take``, a bulk call cut to the quota).
        """
        is_write = method in WRITE_METHODS if write is None else write
        what = what or f"{method} {path}"
        query = dict(params or {})
        if self.api_version and url is None:
            query.setdefault("api-version", self.api_version)
        attempt, waited, refused = 0, 0.0, 0
        uncertain = False  # an earlier attempt reached the service and was not answered with a clear refusal
        while True:
            h = {"Authorization": self.credential.header(), "Accept": "application/json"}
            if json_body is not None or content is not None:  # CONTENT: a body serialized as JSON already
                h["Content-Type"] = "application/json; charset=utf-8"
            h.update(headers or {})
            response, transport_error, sent = None, None, True
            if budget is not None and (attempt or not prepaid):
                paced = budget.acquire(cost)
                waited += paced if attempt else 0.0  # pacing before the first attempt is not a retry
            try:
                self.requests_sent += 1
                response = self._http.request(method, url or path, params=None if url else query,
                                              json=json_body, content=content, headers=h)
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
                tls = _tls_failure(exc)
                if tls is not None:  # a certificate problem does not go away by waiting
                    raise IoTApiError(f"{what}: TLS certificate verification failed for {self.base_url}: {tls}; set "
                                      "ca_path to the CA that signed the service's certificate (the emulator writes "
                                      "it to IOTHUB_CA_PATH), or validate_certs=false for throw-away tests") from None
                host = self.base_url.split("://", 1)[-1]
                if _in_chain(exc, socket.gaierror) is not None:  # a name that does not resolve will not by waiting
                    raise IoTApiError(f"{what}: the host name {host!r} (from {self.origin}) does not resolve ({exc}); "
                                      "check it: an IoT Hub host looks like <hub>.azure-devices.net") from None
                if _in_chain(exc, ConnectionRefusedError) is not None:
                    refused += 1
                    if refused > MAX_REFUSED_RETRIES:
                        raise IoTApiError(f"{what}: {host} (from {self.origin}) refused the connection "
                                          f"{refused} times: nothing listens on that host and port; check the host name "
                                          "and port, and that the service (or the emulator) is running",
                                          attempts=attempt + 1) from None
                transport_error, sent = exc, False
            except httpx.TransportError as exc:  # read/write errors, timeouts, dropped connections
                transport_error = exc
            if response is not None and response.status_code in (401, 403) and right is not None:
                raise missing_right(response, what, right, attempt + 1)
            if response is not None and response.status_code not in RETRYABLE_STATUS:
                response.fleet_maybe_applied = uncertain
                return response
            retryable = (response is not None and response.status_code == 429) or not sent or safe
            if not retryable:
                if response is not None:
                    err = error_from_response(response, what, attempt + 1)
                    raise AmbiguousWriteError(str(err) + "; the write may have been applied", err.status, err.code,
                                              err.service_message, err.request_id, attempt + 1)
                raise AmbiguousWriteError(f"{what}: the connection failed after the request was sent "
                                          f"({type(transport_error).__name__}: {transport_error}); the write may "
                                          "have been applied", attempts=attempt + 1)
            if budget is not None and response is not None and response.status_code == 429:
                budget.on_throttled(cost)
            delay = self.policy.delay(attempt, response)
            # the retry also waits for room under the quota (in acquire, at the top of the loop): both count
            # against the retry budget
            pacing = budget.delay_for(cost) if budget is not None else 0.0
            if transport_error is not None and _in_chain(transport_error, ConnectionRefusedError) is not None:
                delay = REFUSED_WAITS[refused - 1] * (0.75 + 0.25 * self.policy.rng.random())
            if attempt >= self.policy.max_retries or waited + max(delay, pacing) > self.policy.budget_seconds:
                reason = (f"gave up after {attempt + 1} attempts and {waited:.1f}s of waiting "
                          f"(max_retries={self.policy.max_retries}, retry_budget_seconds={self.policy.budget_seconds:g})")
                landed = uncertain or (sent and (response is None or response.status_code != 429))
                if response is not None:
                    err = error_from_response(response, what, attempt + 1)
                    err.args = (f"{err}; {reason}",)
                    if is_write and landed:
                        amb = AmbiguousWriteError(f"{err}; the write may have been applied", err.status, err.code,
                                                  err.service_message, err.request_id, attempt + 1)
                        amb.final = True
                        raise amb
                    raise err
                if is_write and landed:
                    amb = AmbiguousWriteError(f"{what}: {type(transport_error).__name__}: {transport_error}; {reason}; "
                                              "the write may have been applied", attempts=attempt + 1)
                    amb.final = True
                    raise amb
                raise IoTApiError(f"{what}: {type(transport_error).__name__}: {transport_error}; {reason}",
                                  attempts=attempt + 1)
            if sent and is_write and (response is None or response.status_code != 429):
                uncertain = True
            self.policy.sleep(delay)
            waited += delay
            attempt += 1
