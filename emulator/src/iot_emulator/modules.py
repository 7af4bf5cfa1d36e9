"""Module identities and module twins: ``/devices/{id}/modules[/{moduleId}]`` and ``/twins/{id}/modules/{moduleId}``
(iot-api-2.md §1).

Recorded rules: create answers 200 (not the 201 the spec also lists), module responses carry no ETag header, the
module etag is the same +1 counter scheme as devices, ``$``-prefixed ids are refused with 400 ArgumentInvalid,
PUT is a full replace (an omitted ``managedBy`` is cleared, omitted or empty keys are regenerated, ``none`` is
coerced to ``sas``), an existing module without If-Match is 409 ModuleAlreadyExistsOnDevice, DELETE without
If-Match is 412 "Etag missing", a missing module twin is 404 DeviceNotFound."""

from __future__ import annotations

import copy
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from . import twins as _twins
from .errors import ApiError, bad_request, not_found
from .common import (
    document_secrets,
    DEVICE_ID_RE,
    NEVER,
    dotnet_ticks,
    etag_matches,
    etag_of,
    is_wildcard,
    new_key,
    now_iso,
    rotated_keys_answer,
    twin_etag_of,
    with_new_keys,
    validate_key,
    validate_thumbprint,
)

AUTH_TYPES = ("sas", "selfSigned", "certificateAuthority", "none")


def _device(reg, device_id: str) -> dict:
    dev = reg.devices.get(device_id)
    if dev is None:
        if reg.module_missing_device_status == 401:  # a PEER saw 401 IotHubUnauthorizedAccess under SAS auth
            raise ApiError(401, "IotHubUnauthorizedAccess", "Unauthorized")
        raise not_found(device_id)
    return dev


def _module(reg, device_id: str, module_id: str) -> dict | None:
    _device(reg, device_id)
    return reg.modules.get(device_id, {}).get(module_id)


def check_module_id(module_id: str) -> None:
    if module_id.startswith("$"):
        raise bad_request(f"Module id {module_id!r}: ids starting with '$' are reserved for the IoT Edge runtime",
                          code="ArgumentInvalid")
    if not DEVICE_ID_RE.match(module_id or ""):
        raise bad_request(f"Module id {module_id!r} is invalid")


def _authentication(body: dict) -> dict:
    auth = body.get("authentication") or {}
    if not isinstance(auth, dict):
        raise bad_request("authentication must be an object")
    auth_type = auth.get("type") or "sas"
    if auth_type not in AUTH_TYPES:
        raise bad_request(f"authentication.type {auth_type!r} is invalid")
    if auth_type == "none":
        auth_type = "sas"  # PEER: coerced to sas for modules
    sym = auth.get("symmetricKey") or {}
    x509 = auth.get("x509Thumbprint") or {}
    pk, sk = validate_key("primaryKey", sym.get("primaryKey")), validate_key("secondaryKey", sym.get("secondaryKey"))
    ptp = validate_thumbprint("primaryThumbprint", x509.get("primaryThumbprint"))
    stp = validate_thumbprint("secondaryThumbprint", x509.get("secondaryThumbprint"))
    if auth_type == "sas":
        if ptp or stp:
            raise bad_request("A module with authentication type sas cannot have x509 thumbprints")
        pk, sk = pk or new_key(), sk or new_key()
    elif auth_type == "selfSigned":
        if pk or sk:
            raise bad_request("A module with authentication type selfSigned cannot have symmetric keys")
        if not ptp:
            raise bad_request("A selfSigned module needs x509Thumbprint.primaryThumbprint")
    elif pk or sk or ptp or stp:
        raise bad_request(f"A module with authentication type {auth_type} cannot have keys or thumbprints")
    return {"symmetricKey": {"primaryKey": pk, "secondaryKey": sk},
            "x509Thumbprint": {"primaryThumbprint": ptp, "secondaryThumbprint": stp}, "type": auth_type}


def put_module(reg, device_id: str, module_id: str, body: Any, if_match: str | None) -> dict:
    check_module_id(module_id)
    existing = _module(reg, device_id, module_id)
    if not isinstance(body, dict):
        raise bad_request("The request body must be a JSON object", code="IotHubFormatError")
    for key, path_value in (("moduleId", module_id), ("deviceId", device_id)):
        if body.get(key) not in (None, "", path_value):
            raise bad_request(f"{key} {body[key]!r} in the body does not match the request path")
    create_only = if_match is None or if_match.strip() in ("", '""')
    if create_only and existing is not None:
        raise ApiError(409, "ModuleAlreadyExistsOnDevice",
                       f"A module with ID '{module_id}' is already registered on device '{device_id}'.")
    if not create_only:
        if existing is None:
            raise ApiError(404, "ModuleNotFound", f"{device_id}/{module_id}")
        if not is_wildcard(if_match) and not etag_matches(if_match, existing["etag"]):
            raise ApiError(412, "PreconditionFailed", "PreconditionFailed")
    managed_by = body.get("managedBy")
    if managed_by is not None and not isinstance(managed_by, str):
        raise bad_request("managedBy must be a string")
    now = time.time()
    counter = reg.counters.get(f"{device_id}/{module_id}", reg._next_module_counter()) + 1
    reg.counters[f"{device_id}/{module_id}"] = counter
    record = {
        "moduleId": module_id, "managedBy": managed_by, "deviceId": device_id,
        "generationId": existing["generationId"] if existing else dotnet_ticks(now), "etag": etag_of(counter),
        "connectionState": existing["connectionState"] if existing else "Disconnected",
        "connectionStateUpdatedTime": existing["connectionStateUpdatedTime"] if existing else NEVER,
        "lastActivityTime": existing["lastActivityTime"] if existing else NEVER,
        "cloudToDeviceMessageCount": existing["cloudToDeviceMessageCount"] if existing else 0,
        "authentication": _authentication(body),
    }
    reg.modules.setdefault(device_id, {})[module_id] = record
    if existing is None:
        reg._new_module_twin(device_id, module_id)
    else:
        reg._publish_module(device_id, module_id, now)
    return copy.deepcopy(record)


def create_module_for_content(reg, device_id: str, module_id: str) -> dict:
    """The identity and twin the hub creates for a module that applied content names (configurations.apply_content)."""
    now = time.time()
    counter = reg._next_module_counter()
    reg.counters[f"{device_id}/{module_id}"] = counter
    record = {
        "moduleId": module_id, "managedBy": reg.apply_content_managed_by, "deviceId": device_id,
        "generationId": dotnet_ticks(now), "etag": etag_of(counter), "connectionState": "Disconnected",
        "connectionStateUpdatedTime": NEVER, "lastActivityTime": NEVER, "cloudToDeviceMessageCount": 0,
        "authentication": {"symmetricKey": {"primaryKey": new_key(), "secondaryKey": new_key()},
                           "x509Thumbprint": {"primaryThumbprint": None, "secondaryThumbprint": None}, "type": "sas"},
    }
    reg.modules.setdefault(device_id, {})[module_id] = record
    reg._new_module_twin(device_id, module_id)
    return record


def regenerate_module_key(reg, device_id: Any, module_id: Any, which: tuple) -> dict:
    """New symmetric keys for one SAS module (POST /devices/keys/regenerate with ``moduleId``): the module's keys,
    never its device's; the answer names the module and carries only the rotated keys (the CLI's live tests)."""
    existing = _module(reg, device_id, module_id) if isinstance(device_id, str) and isinstance(module_id, str) else None
    if existing is None:
        raise ApiError(404, "ModuleNotFound", f"{device_id}/{module_id}")
    record = with_new_keys(existing, which, f"Module {device_id}/{module_id}")
    counter = reg.counters.get(f"{device_id}/{module_id}", reg._next_module_counter()) + 1
    reg.counters[f"{device_id}/{module_id}"] = counter
    record["etag"] = etag_of(counter)
    reg.modules[device_id][module_id] = record
    reg._publish_module(device_id, module_id, time.time())
    return {"id": device_id, "moduleId": module_id, **rotated_keys_answer(record, which)}


def delete_module(reg, device_id: str, module_id: str, if_match: str | None) -> None:
    if module_id.startswith("$"):
        raise bad_request(f"Module {module_id!r} belongs to the IoT Edge runtime and cannot be deleted")
    existing = _module(reg, device_id, module_id)
    if existing is None:
        raise ApiError(404, "ModuleNotFound", f"{device_id}/{module_id}")
    if if_match is None or not if_match.strip():
        raise ApiError(412, "PreconditionFailed", "Etag missing")  # PEER; the spec marks If-Match optional
    if not is_wildcard(if_match) and not etag_matches(if_match, existing["etag"]):
        raise ApiError(412, "PreconditionFailed", "PreconditionFailed")
    del reg.modules[device_id][module_id]
    reg.module_twins.get(device_id, {}).pop(module_id, None)
    reg._publish_module(device_id, module_id)


def get_module_twin(reg, device_id: str, module_id: str) -> dict:
    if device_id not in reg.devices or module_id not in reg.modules.get(device_id, {}):
        raise not_found(device_id)  # a missing module twin is DeviceNotFound (PEER)
    return reg.module_twin_doc(device_id, module_id)


def update_module_twin(reg, device_id: str, module_id: str, body: Any, if_match: str | None, mode: str) -> dict:
    get_module_twin(reg, device_id, module_id)
    if not isinstance(body, dict):
        raise bad_request("The twin patch must be a JSON object", code="IotHubFormatError")
    tw = reg.module_twins[device_id][module_id]
    if if_match and not is_wildcard(if_match) and not etag_matches(if_match, twin_etag_of(tw["etag"])):
        raise ApiError(412, "PreconditionFailed", f"ETag mismatch for device ID '{device_id}'")
    tags, desired = body.get("tags"), _twins.desired_of(body.get("properties"))
    if mode == "replace":
        tags, desired = tags if tags is not None else {}, desired if desired is not None else {}
    apply_module_twin(reg, device_id, module_id, tags, desired, mode, notify=True)
    return reg.module_twin_doc(device_id, module_id)


def apply_module_twin(reg, device_id: str, module_id: str, tags: Any, desired: Any, mode: str,
                      notify: bool = False) -> None:
    """``notify``: as for device twins (``Registry._apply_twin``), a PATCH/PUT carrying desired bumps $version."""
    tw = reg.module_twins[device_id][module_id]
    new_tags, new_desired = _twins.new_sections(tw["tags"], tw["desired"], tags, desired, mode)
    changed = False
    if new_tags != tw["tags"]:
        tw["tags"], changed = new_tags, True
    if new_desired != tw["desired"] or (notify and desired is not None):
        tw["desired"], changed = new_desired, True
        tw["desired_version"] += 1
    if changed:
        tw["version"] += 1
        tw["etag"] += 1
        tw["updated"] = now_iso()
        reg._publish_module(device_id, module_id)


def bulk_module_entry(reg, e: dict) -> None:
    """A bulk entry with ``moduleId`` (recorded: create with desired properties applied at create)."""
    did, mid, mode = e["id"], e["moduleId"], e.get("importMode")
    twin_mode = "patch" if reg.bulk_twin_mode == "merge" else "replace"
    tags, desired = e.get("tags"), _twins.desired_of(e.get("properties") or {})
    existing = _module(reg, did, mid)
    if mode in ("delete", "deleteIfMatchETag"):
        if existing is None:
            raise ApiError(404, "ModuleNotFound", f"{did}/{mid}")
        delete_module(reg, did, mid, e.get("eTag") or "*")
        return
    if mode in ("updateTwin", "updateTwinIfMatchETag"):
        if existing is None:
            raise ApiError(404, "ModuleNotFound", f"{did}/{mid}")
        tw = reg.module_twins[did][mid]
        if mode == "updateTwinIfMatchETag" and not etag_matches(e.get("twinETag") or "", twin_etag_of(tw["etag"])):
            raise ApiError(412, "PreconditionFailed", f"Twin ETag mismatch for module {did}/{mid}")
        apply_module_twin(reg, did, mid, tags, desired, twin_mode)
        return
    if mode == "create" and existing is not None:
        raise ApiError(409, "ModuleAlreadyExistsOnDevice", f"{did}/{mid}")
    if mode in ("update", "updateIfMatchETag") and existing is None:
        raise ApiError(404, "ModuleNotFound", f"{did}/{mid}")
    if mode == "updateIfMatchETag" and not etag_matches(e.get("eTag") or "", existing["etag"]):
        raise ApiError(412, "PreconditionFailed", f"ETag mismatch for module {did}/{mid}")
    body = {k: v for k, v in e.items() if k in ("managedBy", "authentication")}
    put_module(reg, did, mid, body, None if existing is None else "*")
    if existing is None:
        # Recorded: the initial desired properties are applied at create and desired $version stays 1.
        new_tags, new_desired = _twins.new_sections({}, {}, tags, desired, "replace")
        tw = reg.module_twins[did][mid]
        tw["tags"], tw["desired"] = new_tags, new_desired
        reg._publish_module(did, mid)
    elif tags is not None or desired is not None:
        apply_module_twin(reg, did, mid, tags, desired, twin_mode)


def module_keys(reg) -> list:
    """The SAS keys of every module identity (for the test harness's leak scan)."""
    return [v for mods in reg.modules.values() for mod in mods.values()
            for v in (mod["authentication"]["symmetricKey"] or {}).values()]


def routes(emu) -> list:
    reg = emu.registry
    emu.register_secrets("device_keys", lambda: module_keys(reg))
    emu.register_secrets("document_secrets", lambda: document_secrets(
        [tw["desired"] for mods in reg.module_twins.values() for tw in mods.values()]))

    @emu.hub_route("/devices/{device_id}/modules", ["GET"], "modules")
    async def modules(request: Request) -> Response:
        emu.guard(request, "RegistryRead")
        emu.stats.registry_reads += 1
        did = request.path_params["device_id"]
        _device(reg, did)
        return emu.json(reg.list_modules(did))

    @emu.hub_route("/devices/{device_id}/modules/{module_id}", ["GET", "PUT", "DELETE"], "module")
    async def module(request: Request) -> Response:
        did, mid = request.path_params["device_id"], request.path_params["module_id"]
        if request.method == "GET":
            emu.guard(request, "RegistryRead")
            emu.stats.registry_reads += 1
            if _module(reg, did, mid) is None:
                raise ApiError(404, "ModuleNotFound", f"{did}/{mid}")
            return emu.json(reg.get_module(did, mid))  # no ETag header on module responses (recorded)
        emu.guard(request, "RegistryWrite")
        if request.method == "PUT":
            body = await emu.read_json(request)
            out = put_module(reg, did, mid, body, request.headers.get("if-match"))
            emu.stats.registry_writes += 1  # a write that was applied (as for devices): a 412 is not one
            emu.persist()
            return emu.json(out)  # 200 on create too (recorded)
        delete_module(reg, did, mid, request.headers.get("if-match"))
        emu.stats.registry_writes += 1
        emu.persist()
        return Response(status_code=204, headers={"Content-Length": "0"})

    @emu.hub_route("/twins/{device_id}/modules/{module_id}", ["GET", "PATCH", "PUT"], "module_twin")
    async def module_twin(request: Request) -> Response:
        did, mid = request.path_params["device_id"], request.path_params["module_id"]
        emu.guard(request, "ServiceConnect", kind=None)
        if request.method == "GET":
            emu.stats.twin_reads += 1
            return emu.json(get_module_twin(reg, did, mid))
        body = await emu.read_json(request)
        doc = update_module_twin(reg, did, mid, body, request.headers.get("if-match"),
                                 mode="replace" if request.method == "PUT" else "patch")
        emu.stats.twin_writes += 1
        emu.persist()
        return emu.json(doc)

    return [modules, module, module_twin]


class ModuleStore:
    """Module identities and module twins (iot-api-2.md §1-§2): the part of the registry this area owns."""

    PERSISTED = ("modules", "module_twins")  # what it owns that a state file keeps
    CLEARED = ("modules", "module_twins", "edge_content")  # what a reset empties

    def init_state(self, query_lag_s: float) -> None:
        self.modules: dict[str, dict[str, dict]] = {}  # device id -> module id -> identity
        self.module_twins: dict[str, dict[str, dict]] = {}  # device id -> module id -> twin record
        self.module_missing_device_status = 404  # knob: a PEER saw 401 for module calls on a missing device
        self.apply_content_managed_by = "IotEdge"  # knob: managedBy of a module identity applied content creates
        self.edge_content: dict[str, dict] = {}  # device id -> the modulesContent last applied to it

    def _new_module(self, device_id: str, module_id: str, now: float) -> dict:
        """A system module of an edge device: managedBy iotEdge, authentication none (iot-api-2.md §1.3)."""
        return {
            "moduleId": module_id, "managedBy": "iotEdge", "deviceId": device_id,
            "generationId": dotnet_ticks(now), "etag": etag_of(self._next_module_counter()),
            "connectionState": "Disconnected", "connectionStateUpdatedTime": NEVER,
            "lastActivityTime": NEVER, "cloudToDeviceMessageCount": 0,
            "authentication": {"symmetricKey": {"primaryKey": None, "secondaryKey": None},
                               "x509Thumbprint": {"primaryThumbprint": None, "secondaryThumbprint": None},
                               "type": "none"},
        }

    def _next_module_counter(self) -> int:
        return self.rng.randint(100_000_000, 899_999_999)

    def _new_module_twin(self, device_id: str, module_id: str) -> None:
        # A new module twin: version 2, desired and reported $version 1, $lastUpdated never (recorded §1.4).
        self.module_twins.setdefault(device_id, {})[module_id] = {
            "tags": {}, "desired": {}, "reported": {}, "version": 2, "desired_version": 1, "reported_version": 1,
            "etag": 1, "updated": NEVER}
        self._publish_module(device_id, module_id)

    def _publish_module(self, device_id: str, module_id: str, at: float | None = None) -> None:
        at = time.time() if at is None else at
        self.changes += 1
        exists = module_id in self.modules.get(device_id, {})
        self.module_index.record(f"{device_id}/{module_id}",
                                 self.module_twin_doc(device_id, module_id) if exists else None, at)

    def module_twin_doc(self, device_id: str, module_id: str) -> dict:
        mod = self.modules[device_id][module_id]
        tw = self.module_twins[device_id][module_id]

        def props(kind: str) -> dict:
            out = copy.deepcopy(tw[kind])
            out["$metadata"] = {"$lastUpdated": tw["updated"]}
            out["$version"] = tw[f"{kind}_version"]
            return out
        doc = {"deviceId": device_id, "moduleId": module_id, "etag": twin_etag_of(tw["etag"]),
               "deviceEtag": mod["etag"], "status": "enabled", "statusUpdateTime": NEVER,
               "connectionState": mod["connectionState"], "lastActivityTime": mod["lastActivityTime"],
               "cloudToDeviceMessageCount": mod["cloudToDeviceMessageCount"],
               "authenticationType": mod["authentication"]["type"],
               "x509Thumbprint": copy.deepcopy(mod["authentication"]["x509Thumbprint"]),
               "version": tw["version"], "properties": {"desired": props("desired"), "reported": props("reported")}}
        if tw["tags"]:
            doc["tags"] = copy.deepcopy(tw["tags"])
        return doc

    # ------------------------------------------------------------- modules
    def list_modules(self, device_id: str) -> list[dict]:
        if device_id not in self.devices:
            raise not_found(device_id)
        return [copy.deepcopy(m) for m in self.modules.get(device_id, {}).values()]

    def get_module(self, device_id: str, module_id: str) -> dict:
        if device_id not in self.devices:
            raise not_found(device_id)
        mod = self.modules.get(device_id, {}).get(module_id)
        if mod is None:
            raise ApiError(404, "ModuleNotFound", f"{device_id}/{module_id}")
        return copy.deepcopy(mod)
