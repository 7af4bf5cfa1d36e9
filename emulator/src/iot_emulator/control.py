"""The emulator's test-control surface (``/_emulator/...``): stats, reset, run-time knobs (``configure``), races
(another writer between a client's read and its write), refusals, the secrets every area registers (so the test
harness can prove none leaks), and health.  Emulator extensions for tests; the real service has none of them."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from . import twins
from .faults import FAULT_KINDS, Throttle, parse_throttle

QUERY_RIGHTS = ("ServiceConnect", "RegistryRead")
SECRET_KINDS = ("device_keys", "policy_keys", "central_tokens", "central_device_keys", "document_secrets", "dps_keys")


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
    dps_reads: int = 0
    dps_writes: int = 0
    responses_by_status: Counter = field(default_factory=Counter)
    faults_injected: Counter = field(default_factory=Counter)
    requests_by_route: Counter = field(default_factory=Counter)

    def as_json(self, registry) -> dict:
        return {
            "requests": self.requests, "registry_reads": self.registry_reads,
            "registry_writes": self.registry_writes, "bulk_calls": self.bulk_calls,
            "query_pages": self.query_pages, "twin_reads": self.twin_reads, "twin_writes": self.twin_writes,
            "write_requests": self.write_requests, "throttled": self.throttled,
            "races_applied": self.races_applied, "central_reads": self.central_reads,
            "central_writes": self.central_writes, "configuration_writes": self.configuration_writes,
            "apply_content_calls": self.apply_content_calls, "jobs_created": self.jobs_created,
            "job_devices_imported": self.job_devices_imported, "job_devices_exported": self.job_devices_exported,
            "dps_reads": self.dps_reads, "dps_writes": self.dps_writes,
            "responses_by_status": {str(k): v for k, v in sorted(self.responses_by_status.items())},
            "faults_injected": dict(self.faults_injected),
            "requests_by_route": dict(self.requests_by_route),
            "devices": len(registry.devices),
        }


def routes(emu) -> list[Route]:
    reg = emu.registry

    async def stats(request: Request) -> Response:
        return JSONResponse(emu.stats.as_json(reg))

    async def reset(request: Request) -> Response:
        emu.reset()
        return JSONResponse({"reset": True})

    async def config(request: Request) -> Response:
        if request.method == "POST":
            try:
                emu.configure(await request.json())
            except (ValueError, TypeError) as exc:
                return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse(emu.settings.public())

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
            emu.races.pop((after, body["device_id"]), None)
            return JSONResponse({"disarmed": body["device_id"], "after": after})
        emu.races[(after, body["device_id"])] = {"patch": body.get("patch", {}), "target": target,
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
        """Every secret the emulator holds, so that tests can prove none of them leaks into output: what each
        area registered (``emu.register_secrets``), so a new store of keys cannot be missed here."""
        body = {kind: [] for kind in SECRET_KINDS}
        for kind, source in emu.secret_sources:
            body[kind] += [v for v in source() if v]
        return JSONResponse(body)

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    return [
        Route("/_emulator/stats", stats, methods=["GET"]),
        Route("/_emulator/reset", reset, methods=["POST"]),
        Route("/_emulator/config", config, methods=["GET", "POST"]),
        Route("/_emulator/health", health, methods=["GET"]),
        Route("/_emulator/race", race, methods=["POST"]),
        Route("/_emulator/refuse", refuse, methods=["POST"]),
        Route("/_emulator/secrets", secrets, methods=["GET"]),
    ]


def run_race(emu, device_id: str, read: str = "device") -> None:
    """Another writer changes the device (or its twin, with a twin PATCH) just after a client read it
    (POST /_emulator/race); READ is what the client read (the device or its twin)."""
    race = emu.races.get((read, device_id))
    if not race:
        return
    race["remaining"] -= 1
    if race["remaining"] <= 0:
        emu.races.pop((read, device_id))
    if race["target"] == "twin":
        emu.registry.update_twin(device_id, race["patch"], None, mode="patch")
    else:
        current = emu.registry.devices[device_id]
        emu.registry.put(device_id, {**current, **race["patch"]}, "*")
    emu.stats.races_applied += 1


def configure(emu, changes: dict) -> None:
    """Change knobs at run time (POST /_emulator/config): an emulator extension for tests."""
    if not isinstance(changes, dict):
        raise ValueError("the body must be a JSON object")
    s = emu.settings
    for key, value in changes.items():
        if key == "latency_ms":
            s.latency_ms = float(value)
        elif key == "fault_rate":
            if not 0 <= float(value) <= 1:
                raise ValueError("fault_rate must be between 0 and 1")
            s.fault_rate = float(value)
        elif key == "fault_seed":
            s.fault_seed = value
            emu.fault_rng = random.Random(value)
        elif key == "fault_kinds":
            kinds = tuple(value)
            if not kinds or any(k not in FAULT_KINDS for k in kinds):
                raise ValueError(f"fault_kinds must be a non-empty list of {', '.join(FAULT_KINDS)}")
            s.fault_kinds = kinds
        elif key == "drop_writes":
            if int(value) < 0:
                raise ValueError("drop_writes must be 0 or more")
            emu.drop_writes = int(value)
        elif key == "query_lag_s":
            s.query_lag_s = float(value)
            emu.registry.index.lag = emu.registry.module_index.lag = s.query_lag_s
        elif key == "query_lag_queries":
            if int(value) < 0:
                raise ValueError("query_lag_queries must be 0 or more")
            s.query_lag_queries = int(value)
            emu.registry.index.lag_queries = emu.registry.module_index.lag_queries = s.query_lag_queries
        elif key == "throttle":
            s.throttle = value or None
            emu.throttle = Throttle(parse_throttle(s.throttle))
        elif key == "bulk_twin_mode":
            s.bulk_twin_mode = emu.registry.bulk_twin_mode = twins.check_mode_name(value)
        elif key == "max_page_size":
            if int(value) < 1:
                raise ValueError("max_page_size must be at least 1")
            s.max_page_size = emu.registry.max_page_size = int(value)
        elif key == "module_missing_device_status":
            if int(value) not in (401, 404):
                raise ValueError("module_missing_device_status must be 401 or 404")
            emu.registry.module_missing_device_status = int(value)
        elif key == "adm_delay_s":
            if float(value) < 0:
                raise ValueError("adm_delay_s must be 0 or more")
            s.adm_delay_s = emu.adm.delay_s = float(value)
        elif key == "apply_content_managed_by":
            if value not in ("IotEdge", None):
                raise ValueError("apply_content_managed_by must be \"IotEdge\" or null")
            emu.registry.apply_content_managed_by = value
        elif key == "dps_put_without_if_match":
            if value not in ("conflict", "upsert"):
                raise ValueError("dps_put_without_if_match must be conflict or upsert")
            emu.dps.put_without_if_match = value
        elif key == "query_right":
            if value not in QUERY_RIGHTS:
                raise ValueError(f"query_right must be one of {', '.join(QUERY_RIGHTS)}")
            s.query_right = value
        else:
            raise ValueError(f"unknown setting {key!r}")
