"""The emulator's wiring: settings, the registry and the stores, the routes of each service area (a file each:
``devices``, ``query``, ``twins``, ``modules``, ``configurations``, ``jobs``, ``central``), the test-control routes
(``control``) and the fault and latency layer around them (``faults``); the Device Provisioning Service
(``dps``) on its own port.  What a route needs from every request
(api-version, authorization, the throttle, error envelopes) is here too, once.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from . import adm, configurations, control, devices, dps, dps_register, dps_rules, faults, jobs, modules, query, twins
from .auth import Authorizer
from .errors import ApiError, bad_request
from .registry import Registry

# api-versions the official clients send: azure-iot-hub 2.x (2021-04-12), the newer SDKs and the CLI
# (2024-03-31, 2021-04-12), azure-sdk-for-net previews (2020-03-13), older SDKs (2018-06-30 ... 2020-09-30).
API_VERSIONS = frozenset({
    "2018-06-30", "2019-03-30", "2019-10-01", "2020-03-13", "2020-05-31-preview", "2020-06-30-preview",
    "2020-09-30", "2021-04-12", "2022-11-30-preview", "2023-06-30", "2024-03-31",
})
JSON_CT = "application/json; charset=utf-8"

QUERY_RIGHTS = ("ServiceConnect", "RegistryRead")


@dataclass
class Settings:
    latency_ms: float = 0.0
    fault_rate: float = 0.0
    fault_seed: int | None = None
    fault_kinds: tuple = faults.DEFAULT_FAULT_KINDS
    query_lag_s: float = 0.0
    query_lag_queries: int = 0  # a write shows in queries only after this many more queries were answered
    throttle: str | None = None  # "S1:2"
    state_file: Path | None = None
    entra_test_mode: bool = False
    bulk_twin_mode: str = "replace"  # how bulk updateTwin applies tags / desired: "replace" or "merge" (§9.1)
    max_page_size: int = 100  # query page size cap (§7)
    query_right: str = "ServiceConnect"  # the right a query needs: the security doc, or "RegistryRead" (§9.6)
    adm_delay_s: float = 0.2  # automatic device management applies a configuration this long after it changed

    def public(self) -> dict:
        return {"latency_ms": self.latency_ms, "fault_rate": self.fault_rate, "fault_seed": self.fault_seed,
                "fault_kinds": list(self.fault_kinds), "query_lag_s": self.query_lag_s,
                "query_lag_queries": self.query_lag_queries, "throttle": self.throttle,
                "state_file": str(self.state_file) if self.state_file else None,
                "entra_test_mode": self.entra_test_mode, "bulk_twin_mode": self.bulk_twin_mode,
                "max_page_size": self.max_page_size, "query_right": self.query_right, "adm_delay_s": self.adm_delay_s}


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
    def __init__(self, settings: Settings, authorizer: Authorizer, central_app=None,
                 dps_authorizer: Authorizer | None = None, linked_hubs: list | None = None, dps_id_scope: str = "",
                 linked_verify=True):
        self.settings = settings
        self.auth = authorizer
        self.dps_auth = dps_authorizer  # the DPS instance's policies and host names (None: no DPS)
        self.dps_id_scope = dps_id_scope
        # The IoT hubs linked to the DPS (this emulator's own first), by host name: owner connection strings.
        self.linked = {h.host: h for h in (dps_register.LinkedHub(cs, linked_verify) for cs in linked_hubs or [])}
        self.dps = dps.DpsStore(list(self.linked))
        self.dps_ports: set = set()  # local ports that serve the DPS (set by the server)
        self.registry = Registry(settings.query_lag_s)
        self.registry.bulk_twin_mode = settings.bulk_twin_mode
        self.registry.max_page_size = settings.max_page_size
        self.configurations = configurations.ConfigurationStore(self.registry)
        self.adm = adm.Adm(self.registry, self.configurations, settings.adm_delay_s)
        self.configurations.adm = self.adm
        self.jobs = jobs.JobStore(self)
        self.stats = control.Stats()
        self.fault_rng = random.Random(settings.fault_seed)
        self.throttle = faults.Throttle(faults.parse_throttle(settings.throttle))
        self.extra_routes: list[Route] = []
        self.races: dict[str, dict] = {}
        self.drop_writes = 0  # the next N write requests are applied and then lose their answer (a test knob)
        self.secret_sources: list = []  # (kind, callable): every store of secrets, registered by its area
        self.register_secrets("policy_keys", lambda: [p.key for p in self.auth.policies.values()])
        self.central = None
        if central_app is not None:
            from .central import CentralApi
            self.central = CentralApi(self, central_app)
            self.extra_routes += self.central.routes()
        if settings.state_file and Path(settings.state_file).exists():
            self.load_state(json.loads(Path(settings.state_file).read_text()))

    # ------------------------------------------------------------ plumbing
    def register_secrets(self, kind: str, source) -> None:
        """An area holds secrets of KIND (control.SECRET_KINDS): ``source()`` lists them for /_emulator/secrets."""
        if kind not in control.SECRET_KINDS:
            raise ValueError(f"unknown kind of secret {kind!r}")
        self.secret_sources.append((kind, source))

    def persist(self) -> None:
        if not self.settings.state_file:
            return
        path = Path(self.settings.state_file)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(self.dump_state()))
        os.replace(tmp, path)

    def dump_state(self) -> dict:
        return {"registry": self.registry.dump(), "configurations": self.configurations.dump(),
                "dps": self.dps.dump(), **self.extra_state()}

    def extra_state(self) -> dict:
        return {"central": self.central.app.dump()} if self.central else {}

    def load_state(self, data: dict) -> None:
        self.registry.load(data.get("registry", {}))
        self.configurations.load(data.get("configurations", {}))
        self.dps.load(data.get("dps", {}))
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
                self.adm.tick()  # automatic device management: configurations due are applied before answering
                try:
                    return await fn(request)
                except ApiError as err:
                    return hub_error_response(err, request.scope["emulator.request_id"])
            return Route(path, endpoint, methods=methods, name=name)
        return deco

    # -------------------------------------------------------------- routes
    def routes(self) -> list[Route]:
        routes: list[Route] = []

        for area in (query, devices, twins, modules, configurations, jobs):  # a file per service area; this wires them
            routes += area.routes(self)

        routes += control.routes(self)
        return routes + self.extra_routes

    def run_race(self, device_id: str, read: str = "device") -> None:
        control.run_race(self, device_id, read)

    def configure(self, changes: dict) -> None:
        control.configure(self, changes)

    def reset(self) -> None:
        self.registry.reset()
        self.adm.reset()
        self.configurations.reset()
        self.jobs.reset()
        self.races.clear()
        self.dps.reset()
        if self.central:
            self.central.app.devices.clear()
            self.central.app.credentials.clear()
        self.stats = control.Stats()
        self.throttle = faults.Throttle(self.throttle.limits)
        self.persist()

    # ------------------------------------------------------------------ ASGI
    def unknown_route(self, request: Request, exc) -> Response:
        """Every unknown route or method answers with the service's JSON error envelope, never plain text."""
        status = getattr(exc, "status_code", 404)
        err = (ApiError(405, "MethodNotAllowed", f"The {request.method} method is not allowed on {request.url.path}")
               if status == 405 else ApiError(404, "NotFound", f"No resource at {request.url.path}"))
        return self.fault_response(request.scope, err, request.scope.get("emulator.request_id", ""))

    def build(self):
        hub = Starlette(routes=self.routes(),
                        exception_handlers={404: self.unknown_route, 405: self.unknown_route})
        dps_app = Starlette(routes=dps.routes(self) + dps_register.routes(self),
                            exception_handlers={404: self.unknown_route, 405: self.unknown_route})

        async def inner(scope, receive, send):
            # The hub (and Central, and the test-control routes) on the main port; the DPS on its own.
            app = dps_app if self.is_dps(scope) else hub
            return await app(scope, receive, send)

        return faults.outer_app(self, inner)

    def is_dps(self, scope) -> bool:
        server = scope.get("server")
        return bool(server and server[1] in self.dps_ports)

    def fault_response(self, scope, err: ApiError, request_id: str) -> Response:
        if self.is_dps(scope):
            return dps_rules.render_error(err, request_id)
        if scope["path"].startswith("/api/") and self.central:
            from .central import central_error
            return central_error(err, request_id)
        return hub_error_response(err, request_id)
