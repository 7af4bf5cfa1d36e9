"""The emulator's test knobs on the wire: injected faults (429, 500, 503, dropped connections before or after the
request is applied), latency, lost answers to writes (``drop_writes``), and the per-minute throttle of a hub's SKU.
``outer_app`` wraps the routes with them (pure ASGI: a dropped connection closes the TCP transport)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import deque

from .errors import ApiError, throttled

FAULT_KINDS = ("429", "500", "503", "drop", "drop_after", "drop_before")
DEFAULT_FAULT_KINDS = ("429", "500", "503", "drop")  # "drop" is either; drop_after / drop_before pick one
SKU_LIMITS = {  # iot-api.md §6: registry operations and query pages per minute per unit
    "F1": (100, 20), "B1": (100, 20), "S1": (100, 20), "B2": (100, 20), "S2": (100, 20),
    "B3": (5000, 1000), "S3": (5000, 1000),
}
CONFIGURATION_WRITES_PER_UNIT = 20
FAULT_KINDS = ("429", "500", "503", "drop", "drop_after", "drop_before")
DEFAULT_FAULT_KINDS = ("429", "500", "503", "drop")  # "drop" is either; drop_after / drop_before pick one


def parse_throttle(spec: str | None) -> tuple[int, int] | None:
    if not spec:
        return None
    sku, _, units = spec.partition(":")
    if sku.upper() not in SKU_LIMITS:
        raise ValueError(f"unknown SKU {sku!r}; use one of {', '.join(SKU_LIMITS)}")
    n = int(units or "1")
    if n < 1:
        raise ValueError("units must be at least 1")
    reg, q = SKU_LIMITS[sku.upper()]
    # iot-api-2.md §2.4: configurations and edge deployments (create, update, list, delete) 20/min/unit, every tier
    return reg * n, q * n, CONFIGURATION_WRITES_PER_UNIT * n


class Throttle:
    """Per-minute budgets for registry operations, query pages and configuration operations (sliding 60 s)."""

    KINDS = ("registry", "query", "configurations")

    def __init__(self, limits: tuple | None):
        self.limits = limits
        self.windows = {k: deque() for k in self.KINDS}

    def consume(self, kind: str, cost: int) -> None:
        if self.limits is None:
            return
        limit = self.limits[self.KINDS.index(kind)]
        win = self.windows[kind]
        now = time.monotonic()
        while win and win[0][0] <= now - 60:
            win.popleft()
        used = sum(c for _, c in win)
        if used + cost > limit:
            raise throttled({"registry": "CRUD", "query": "Query", "configurations": "Configurations"}[kind])
        win.append((now, cost))


def is_write(scope) -> bool:
    """A request that changes the service's state (queries and test-queries are POSTs that do not)."""
    method, path = scope.get("method"), scope.get("path", "")
    if method in ("PUT", "PATCH", "DELETE"):
        return True
    return method == "POST" and not path.endswith(("/query", "/testQueries", "/attestationmechanism"))


def outer_app(emu, inner):
    """The ASGI app the server runs: request ids, counting, latency and injected faults around the routes."""
    async def app(scope, receive, send):
        if scope["type"] != "http":
            return await inner(scope, receive, send)
        request_id = str(uuid.uuid4())
        scope["emulator.request_id"] = request_id
        control = scope["path"].startswith("/_emulator/")

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.append((b"x-ms-request-id", request_id.encode()))
                headers.append((b"vary", b"Origin"))
                message = {**message, "headers": headers}
                if not control:
                    emu.stats.responses_by_status[message["status"]] += 1
            await send(message)

        if control:
            return await inner(scope, receive, send_with_headers)
        emu.stats.requests += 1
        if emu.settings.latency_ms > 0:
            await asyncio.sleep(emu.settings.latency_ms / 1000.0)
        fault = None
        if emu.drop_writes > 0 and is_write(scope):
            emu.drop_writes -= 1  # POST /_emulator/config {"drop_writes": N}: the next N writes lose their answer
            fault = "drop_after"
        elif emu.settings.fault_rate > 0 and emu.fault_rng.random() < emu.settings.fault_rate:
            fault = emu.fault_rng.choice(emu.settings.fault_kinds)
        if fault is None:
            return await inner(scope, receive, send_with_headers)
        emu.stats.faults_injected[fault] += 1
        if fault.startswith("drop"):
            after = fault == "drop_after" or (fault == "drop" and emu.fault_rng.random() < 0.5)
            if after:
                # The request is processed, then the connection drops before the answer arrives.
                async def swallow(message):
                    return None
                await inner(scope, receive, swallow)
            emu.stats.faults_injected["drop_after_apply" if after else "drop_before_apply"] += 1
            await _abort_connection(send)
            return None
        err = {
            "429": throttled("CRUD"),
            "500": ApiError(500, "ServerError", "An internal error occurred (injected fault)"),
            "503": ApiError(503, "ServiceUnavailable", "The service is unavailable (injected fault)"),
        }[fault]
        resp = emu.fault_response(scope, err, request_id)
        return await resp(scope, receive, send_with_headers)

    return app


async def _abort_connection(send) -> None:
    """Close the TCP connection without an answer (uvicorn's protocol objects expose the transport)."""
    cycle = getattr(send, "__self__", None)
    transport = getattr(cycle, "transport", None)
    if transport is not None:
        transport.abort()
        await asyncio.sleep(0)
        return
    raise RuntimeError("cannot reach the transport to drop the connection")
