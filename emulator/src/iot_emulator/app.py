"""The emulator's HTTP surface: the IoT Hub registry data plane, and the ``/_emulator`` control routes.

A pure-ASGI outer layer adds what every response carries (``x-ms-request-id``), counts requests and
statuses, and applies the test knobs (latency, injected faults including dropped connections).  Starlette
routes do the rest; each route checks api-version, authorization and the throttle before touching the
registry.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import json
import os
import random
import time
import uuid
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from . import configurations, devices, jobs, modules, twins
from .auth import Authorizer
from .errors import ApiError, bad_request, throttled
from .registry import Registry

# api-versions the official clients send: azure-iot-hub 2.x (2021-04-12), the newer SDKs and the CLI
# (2024-03-31, 2021-04-12), azure-sdk-for-net previews (2020-03-13), older SDKs (2018-06-30 ... 2020-09-30).
API_VERSIONS = frozenset({
    "2018-06-30", "2019-03-30", "2019-10-01", "2020-03-13", "2020-05-31-preview", "2020-06-30-preview",
    "2020-09-30", "2021-04-12", "2022-11-30-preview", "2023-06-30", "2024-03-31",
})
JSON_CT = "application/json; charset=utf-8"

SKU_LIMITS = {  # iot-api.md §6: registry operations and query pages per minute per unit
    "F1": (100, 20), "B1": (100, 20), "S1": (100, 20), "B2": (100, 20), "S2": (100, 20),
    "B3": (5000, 1000), "S3": (5000, 1000),
}
CONFIGURATION_WRITES_PER_UNIT = 20
FAULT_KINDS = ("429", "500", "503", "drop", "drop_after", "drop_before")
DEFAULT_FAULT_KINDS = ("429", "500", "503", "drop")  # "drop" is either; drop_after / drop_before pick one
QUERY_RIGHTS = ("ServiceConnect", "RegistryRead")


@dataclass
class Settings:
    latency_ms: float = 0.0
    fault_rate: float = 0.0
    fault_seed: int | None = None
    fault_kinds: tuple = DEFAULT_FAULT_KINDS
    query_lag_s: float = 0.0
    query_lag_queries: int = 0  # a write shows in queries only after this many more queries were answered
    throttle: str | None = None  # "S1:2"
    state_file: Path | None = None
    entra_test_mode: bool = False
    bulk_twin_mode: str = "replace"  # how bulk updateTwin applies tags / desired: "replace" or "merge" (§9.1)
    max_page_size: int = 100  # query page size cap (§7)
    query_right: str = "ServiceConnect"  # the right a query needs: the security doc, or "RegistryRead" (§9.6)

    def public(self) -> dict:
        return {"latency_ms": self.latency_ms, "fault_rate": self.fault_rate, "fault_seed": self.fault_seed,
                "fault_kinds": list(self.fault_kinds), "query_lag_s": self.query_lag_s,
                "query_lag_queries": self.query_lag_queries, "throttle": self.throttle,
                "state_file": str(self.state_file) if self.state_file else None,
                "entra_test_mode": self.entra_test_mode, "bulk_twin_mode": self.bulk_twin_mode,
                "max_page_size": self.max_page_size, "query_right": self.query_right}


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


@dataclass
class Stats:
    requests: int = 0
    registry_reads: int = 0
    registry_writes: int = 0
    bulk_calls: int = 0
    query_pages: int = 0
    twin_reads: int = 0
    twin_writes: int = 0
    write_requests: int = 0
    throttled: int = 0
    races_applied: int = 0
    central_reads: int = 0
    central_writes: int = 0
    configuration_writes: int = 0
    apply_content_calls: int = 0
    jobs_created: int = 0
    job_devices_imported: int = 0
    job_devices_exported: int = 0
    responses_by_status: Counter = field(default_factory=Counter)
    faults_injected: Counter = field(default_factory=Counter)
    requests_by_route: Counter = field(default_factory=Counter)

    def as_json(self, registry: Registry) -> dict:
        return {
            "requests": self.requests, "registry_reads": self.registry_reads,
            "registry_writes": self.registry_writes, "bulk_calls": self.bulk_calls,
            "query_pages": self.query_pages, "twin_reads": self.twin_reads, "twin_writes": self.twin_writes,
            "write_requests": self.write_requests, "throttled": self.throttled,
            "races_applied": self.races_applied, "central_reads": self.central_reads,
            "central_writes": self.central_writes, "configuration_writes": self.configuration_writes,
            "apply_content_calls": self.apply_content_calls, "jobs_created": self.jobs_created,
            "job_devices_imported": self.job_devices_imported, "job_devices_exported": self.job_devices_exported,
            "responses_by_status": {str(k): v for k, v in sorted(self.responses_by_status.items())},
            "faults_injected": dict(self.faults_injected),
            "requests_by_route": dict(self.requests_by_route),
            "devices": len(registry.devices),
        }


def _is_write(scope) -> bool:
    """A request that changes the service's state (queries and test-queries are POSTs that do not)."""
    method, path = scope.get("method"), scope.get("path", "")
    if method in ("PUT", "PATCH", "DELETE"):
        return True
    return method == "POST" and not path.endswith("/query") and not path.endswith("/testQueries")


def tracking_message(request_id: str) -> str:
    ts = _dt.datetime.now(_dt.timezone.utc).strftime("%m/%d/%Y %H:%M:%S")
    return f"Tracking ID:{request_id.replace('-', '')}-G:0-TimeStamp:{ts}"


def hub_error_response(err: ApiError, request_id: str) -> Response:
    """Envelope A with the iothub-errorcode header (iot-api.md §2.3)."""
    body = {"Message": f"ErrorCode:{err.code};{err.message}", "ExceptionMessage": tracking_message(request_id)}
    headers = {"iothub-errorcode": err.code, **err.headers}
    return Response(json.dumps(body), status_code=err.status, headers=headers, media_type=JSON_CT)


def json_response(body: Any, status: int = 200, etag: str | None = None, headers: dict | None = None) -> Response:
    h = dict(headers or {})
    if etag is not None:
        h["ETag"] = f'"{etag}"'  # the header is quoted, the body etag is not (§1.3)
    return Response(json.dumps(body), status_code=status, headers=h, media_type=JSON_CT)


class Emulator:
    def __init__(self, settings: Settings, authorizer: Authorizer, central_app=None):
        self.settings = settings
        self.auth = authorizer
        self.registry = Registry(settings.query_lag_s)
        self.registry.bulk_twin_mode = settings.bulk_twin_mode
        self.registry.max_page_size = settings.max_page_size
        self.configurations = configurations.ConfigurationStore(self.registry)
        self.jobs = jobs.JobStore(self)
        self.stats = Stats()
        self.fault_rng = random.Random(settings.fault_seed)
        self.throttle = Throttle(parse_throttle(settings.throttle))
        self.extra_routes: list[Route] = []
        self.races: dict[str, dict] = {}
        self.drop_writes = 0  # the next N write requests are applied and then lose their answer (a test knob)
        self.central = None
        if central_app is not None:
            from .central import CentralApi
            self.central = CentralApi(self, central_app)
            self.extra_routes += self.central.routes()
        if settings.state_file and Path(settings.state_file).exists():
            self.load_state(json.loads(Path(settings.state_file).read_text()))

    # ------------------------------------------------------------ plumbing
    def persist(self) -> None:
        if not self.settings.state_file:
            return
        path = Path(self.settings.state_file)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(self.dump_state()))
        os.replace(tmp, path)

    def dump_state(self) -> dict:
        return {"registry": self.registry.dump(), "configurations": self.configurations.dump(), **self.extra_state()}

    def extra_state(self) -> dict:
        return {"central": self.central.app.dump()} if self.central else {}

    def load_state(self, data: dict) -> None:
        self.registry.load(data.get("registry", {}))
        self.configurations.load(data.get("configurations", {}))
        if self.central and "central" in data:
            self.central.app.load(data["central"])

    def check_api_version(self, request: Request) -> None:
        version = request.query_params.get("api-version")
        if not version:
            raise ApiError(400, "InvalidProtocolVersion", "The api-version query parameter is required")
        if version not in API_VERSIONS:
            raise ApiError(400, "InvalidProtocolVersion", f"api-version {version!r} is not supported")

    async def read_json(self, request: Request) -> Any:
        raw = await request.body()
        if not raw:
            raise bad_request("The request body is empty", code="ArgumentNull")
        try:
            return json.loads(raw)
        except ValueError:
            raise bad_request("The request body is not valid JSON", code="IotHubFormatError") from None

    def authorize(self, request: Request, right: str) -> None:
        """Raise 401 unless the caller has RIGHT ("A+B": both)."""
        self.check_api_version(request)
        for one in right.split("+"):
            self.auth.check(request.headers.get("authorization"), request.url.path, one)

    @staticmethod
    def json(body: Any, status: int = 200, etag: str | None = None, headers: dict | None = None) -> Response:
        return json_response(body, status, etag, headers)

    def consume(self, kind: str, cost: int = 1) -> None:
        try:
            self.throttle.consume(kind, cost)
        except ApiError:
            self.stats.throttled += 1
            raise

    def guard(self, request: Request, right: str, kind: str | None = "registry", cost: int = 1) -> None:
        self.authorize(request, right)
        if kind:
            self.consume(kind, cost)

    def hub_route(self, path: str, methods: list[str], name: str):
        def deco(fn):
            async def endpoint(request: Request) -> Response:
                if request.method in ("PUT", "PATCH", "DELETE") or (request.method == "POST" and name == "bulk"):
                    self.stats.write_requests += 1
                self.stats.requests_by_route[f"{request.method} {path}"] += 1
                try:
                    return await fn(request)
                except ApiError as err:
                    return hub_error_response(err, request.scope["emulator.request_id"])
            return Route(path, endpoint, methods=methods, name=name)
        return deco

    # -------------------------------------------------------------- routes
    def routes(self) -> list[Route]:
        reg = self.registry
        routes: list[Route] = []

        for area in (devices, twins, modules, configurations, jobs):  # a file per service area; this wires them
            routes += area.routes(self)

        async def stats(request: Request) -> Response:
            return JSONResponse(self.stats.as_json(reg))

        async def reset(request: Request) -> Response:
            self.reset()
            return JSONResponse({"reset": True})

        async def config(request: Request) -> Response:
            if request.method == "POST":
                try:
                    self.configure(await request.json())
                except (ValueError, TypeError) as exc:
                    return JSONResponse({"error": str(exc)}, status_code=400)
            return JSONResponse(self.settings.public())

        async def race(request: Request) -> Response:
            body = await request.json()
            if not isinstance(body, dict) or not isinstance(body.get("device_id"), str) \
                    or not isinstance(body.get("patch", {}), dict):
                return JSONResponse({"error": 'body: {"device_id": str, "patch": {...}, "times": int}'}, status_code=400)
            target = body.get("target", "device")
            if target not in ("device", "twin"):
                return JSONResponse({"error": "target: device or twin"}, status_code=400)
            after = body.get("after", target)  # which GET sets it off (default: a GET of what it changes)
            if after not in ("device", "twin"):
                return JSONResponse({"error": "after: device or twin"}, status_code=400)
            if int(body.get("times", 1)) <= 0:  # times 0 disarms
                self.races.pop((after, body["device_id"]), None)
                return JSONResponse({"disarmed": body["device_id"], "after": after})
            self.races[(after, body["device_id"])] = {"patch": body.get("patch", {}), "target": target,
                                                      "remaining": int(body.get("times", 1))}
            return JSONResponse({"armed": body["device_id"], "target": target, "after": after})

        async def refuse(request: Request) -> Response:
            """Make the next TIMES writes of DEVICE_ID fail with STATUS/CODE (per bulk entry, or the whole PUT),
            the way the service refuses a device for a rule the client could not know: a test knob."""
            body = await request.json()
            if not isinstance(body, dict) or not isinstance(body.get("device_id"), str):
                return JSONResponse({"error": 'body: {"device_id": str, "status": int, "code": str, "times": int}'},
                                    status_code=400)
            reg.refusals[body["device_id"]] = {"status": int(body.get("status", 400)),
                                               "code": str(body.get("code", "ArgumentInvalid")),
                                               "remaining": int(body.get("times", 1))}
            return JSONResponse({"armed": body["device_id"]})

        async def secrets(request: Request) -> Response:
            """Every secret the emulator holds, so that tests can prove none of them leaks into output."""
            keys = []
            for dev in reg.devices.values():
                keys += [v for v in (dev["authentication"]["symmetricKey"] or {}).values() if v]
            for mods in reg.modules.values():
                for mod in mods.values():
                    keys += [v for v in mod["authentication"]["symmetricKey"].values() if v]
            body = {"device_keys": keys, "policy_keys": [p.key for p in self.auth.policies.values()],
                    "central_tokens": [], "central_device_keys": []}
            if self.central:
                body["central_tokens"] = list(self.central.app.tokens)
                for cred in self.central.app.credentials.values():
                    body["central_device_keys"] += [v for v in cred.values() if v]
            return JSONResponse(body)

        async def health(request: Request) -> Response:
            return JSONResponse({"status": "ok"})

        routes += [
            Route("/_emulator/stats", stats, methods=["GET"]),
            Route("/_emulator/reset", reset, methods=["POST"]),
            Route("/_emulator/config", config, methods=["GET", "POST"]),
            Route("/_emulator/health", health, methods=["GET"]),
            Route("/_emulator/race", race, methods=["POST"]),
            Route("/_emulator/refuse", refuse, methods=["POST"]),
            Route("/_emulator/secrets", secrets, methods=["GET"]),
        ]
        return routes + self.extra_routes

    def run_race(self, device_id: str, read: str = "device") -> None:
        """Another writer changes the device (or its twin, with a twin PATCH) just after a client read it
        (POST /_emulator/race); READ is what the client read (the device or its twin)."""
        race = self.races.get((read, device_id))
        if not race:
            return
        race["remaining"] -= 1
        if race["remaining"] <= 0:
            self.races.pop((read, device_id))
        if race["target"] == "twin":
            self.registry.update_twin(device_id, race["patch"], None, mode="patch")
        else:
            current = self.registry.devices[device_id]
            self.registry.put(device_id, {**current, **race["patch"]}, "*")
        self.stats.races_applied += 1

    def reset(self) -> None:
        self.registry.reset()
        self.configurations.reset()
        self.jobs.reset()
        self.races.clear()
        if self.central:
            self.central.app.devices.clear()
            self.central.app.credentials.clear()
        self.stats = Stats()
        self.throttle = Throttle(self.throttle.limits)
        self.persist()

    def configure(self, changes: dict) -> None:
        """Change knobs at run time (POST /_emulator/config): an emulator extension for tests."""
        if not isinstance(changes, dict):
            raise ValueError("the body must be a JSON object")
        s = self.settings
        for key, value in changes.items():
            if key == "latency_ms":
                s.latency_ms = float(value)
            elif key == "fault_rate":
                if not 0 <= float(value) <= 1:
                    raise ValueError("fault_rate must be between 0 and 1")
                s.fault_rate = float(value)
            elif key == "fault_seed":
                s.fault_seed = value
                self.fault_rng = random.Random(value)
            elif key == "fault_kinds":
                kinds = tuple(value)
                if not kinds or any(k not in FAULT_KINDS for k in kinds):
                    raise ValueError(f"fault_kinds must be a non-empty list of {', '.join(FAULT_KINDS)}")
                s.fault_kinds = kinds
            elif key == "drop_writes":
                if int(value) < 0:
                    raise ValueError("drop_writes must be 0 or more")
                self.drop_writes = int(value)
            elif key == "query_lag_s":
                s.query_lag_s = float(value)
                self.registry.index.lag = self.registry.module_index.lag = s.query_lag_s
            elif key == "query_lag_queries":
                if int(value) < 0:
                    raise ValueError("query_lag_queries must be 0 or more")
                s.query_lag_queries = int(value)
                self.registry.index.lag_queries = self.registry.module_index.lag_queries = s.query_lag_queries
            elif key == "throttle":
                s.throttle = value or None
                self.throttle = Throttle(parse_throttle(s.throttle))
            elif key == "bulk_twin_mode":
                s.bulk_twin_mode = self.registry.bulk_twin_mode = twins.check_mode_name(value)
            elif key == "max_page_size":
                if int(value) < 1:
                    raise ValueError("max_page_size must be at least 1")
                s.max_page_size = self.registry.max_page_size = int(value)
            elif key == "module_missing_device_status":
                if int(value) not in (401, 404):
                    raise ValueError("module_missing_device_status must be 401 or 404")
                self.registry.module_missing_device_status = int(value)
            elif key == "query_right":
                if value not in QUERY_RIGHTS:
                    raise ValueError(f"query_right must be one of {', '.join(QUERY_RIGHTS)}")
                s.query_right = value
            else:
                raise ValueError(f"unknown setting {key!r}")

    # ------------------------------------------------------------------ ASGI
    def unknown_route(self, request: Request, exc) -> Response:
        """Every unknown route or method answers with the service's JSON error envelope, never plain text."""
        status = getattr(exc, "status_code", 404)
        err = (ApiError(405, "MethodNotAllowed", f"The {request.method} method is not allowed on {request.url.path}")
               if status == 405 else ApiError(404, "NotFound", f"No resource at {request.url.path}"))
        return self.fault_response(request.scope, err, request.scope.get("emulator.request_id", ""))

    def build(self):
        inner = Starlette(routes=self.routes(),
                          exception_handlers={404: self.unknown_route, 405: self.unknown_route})

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
                        self.stats.responses_by_status[message["status"]] += 1
                await send(message)

            if control:
                return await inner(scope, receive, send_with_headers)
            self.stats.requests += 1
            if self.settings.latency_ms > 0:
                await asyncio.sleep(self.settings.latency_ms / 1000.0)
            fault = None
            if self.drop_writes > 0 and _is_write(scope):
                self.drop_writes -= 1  # POST /_emulator/config {"drop_writes": N}: the next N writes lose their answer
                fault = "drop_after"
            elif self.settings.fault_rate > 0 and self.fault_rng.random() < self.settings.fault_rate:
                fault = self.fault_rng.choice(self.settings.fault_kinds)
            if fault is None:
                return await inner(scope, receive, send_with_headers)
            self.stats.faults_injected[fault] += 1
            if fault.startswith("drop"):
                after = fault == "drop_after" or (fault == "drop" and self.fault_rng.random() < 0.5)
                if after:
                    # The request is processed, then the connection drops before the answer arrives.
                    async def swallow(message):
                        return None
                    await inner(scope, receive, swallow)
                self.stats.faults_injected["drop_after_apply" if after else "drop_before_apply"] += 1
                await _abort_connection(send)
                return None
            err = {
                "429": throttled("CRUD"),
                "500": ApiError(500, "ServerError", "An internal error occurred (injected fault)"),
                "503": ApiError(503, "ServiceUnavailable", "The service is unavailable (injected fault)"),
            }[fault]
            resp = self.fault_response(scope, err, request_id)
            return await resp(scope, receive, send_with_headers)

        return app

    def fault_response(self, scope, err: ApiError, request_id: str) -> Response:
        if scope["path"].startswith("/api/") and self.central:
            from .central import central_error
            return central_error(err, request_id)
        return hub_error_response(err, request_id)


async def _abort_connection(send) -> None:
    """Close the TCP connection without an answer (uvicorn's protocol objects expose the transport)."""
    cycle = getattr(send, "__self__", None)
    transport = getattr(cycle, "transport", None)
    if transport is not None:
        transport.abort()
        await asyncio.sleep(0)
        return
    raise RuntimeError("cannot reach the transport to drop the connection")
