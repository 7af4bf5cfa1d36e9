"""Device identities: ``/devices/{id}``, the bulk registry operation ``POST /devices``, the query
``POST /devices/query`` and ``POST /devices/keys/regenerate`` (iot-api.md §1-§4)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from . import modules as _modules
from .errors import ApiError, bad_request

KEY_POLICIES = {"primarykey": ("primaryKey",), "secondarykey": ("secondaryKey",),
                "both": ("primaryKey", "secondaryKey")}


def _has_twin(entry) -> bool:
    return isinstance(entry, dict) and (entry.get("importMode") in ("updateTwin", "updateTwinIfMatchETag")
                                        or entry.get("tags") is not None or entry.get("properties") is not None)


def routes(emu) -> list:
    reg = emu.registry

    @emu.hub_route("/devices/query", ["POST"], "query")
    async def query(request: Request) -> Response:
        # The security doc: ServiceConnect runs queries; an SDK sample says RegistryRead (§9.6): --query-right.
        emu.guard(request, emu.settings.query_right, kind="query")
        body = await emu.read_json(request)
        if not isinstance(body, dict) or "query" not in body:
            raise bad_request('The body must be {"query": "..."}', code="ArgumentNull")
        try:
            max_items = int(request.headers.get("x-ms-max-item-count") or 0)
        except ValueError:
            max_items = 0  # §7: an invalid value means the maximum, never a 4xx
        items, token, item_type = reg.query(body["query"], max_items, request.headers.get("x-ms-continuation"))
        emu.stats.query_pages += 1
        headers = {"x-ms-item-type": item_type}
        if token:
            headers["x-ms-continuation"] = token
        return emu.json(items, headers=headers)

    @emu.hub_route("/devices", ["GET", "POST"], "bulk")
    async def devices(request: Request) -> Response:
        if request.method == "GET":
            emu.guard(request, "RegistryRead")
            top = request.query_params.get("top")
            try:
                n = int(top) if top not in (None, "") else None
            except ValueError:
                raise bad_request("top must be an integer") from None
            emu.stats.registry_reads += 1
            return emu.json(reg.list(n))
        body = await emu.read_json(request)
        # Twin entries (updateTwin, or tags / desired in an entry) also need ServiceConnect (§6.5).
        needs_twin = isinstance(body, list) and any(_has_twin(e) for e in body)
        emu.authorize(request, "RegistryWrite+ServiceConnect" if needs_twin else "RegistryWrite")
        emu.consume("registry", len(body) if isinstance(body, list) else 1)  # each device counts (§4)
        status, result, written = reg.bulk(body)
        emu.stats.bulk_calls += 1
        emu.stats.registry_writes += written
        if written:
            emu.persist()
        return emu.json(result, status=status)

    @emu.hub_route("/devices/keys/regenerate", ["POST"], "regenerate")
    async def regenerate(request: Request) -> Response:
        """What `az iot hub device-identity renew-key` calls (api-version 2024-03-31): new keys for many devices.
        Body {"policyKey": "primaryKey"|"secondaryKey"|"both", "devices": [{"id": ...}, ...]}; answer
        {"policyKey", "rotatedKeys": [{"id", "primaryKey", "secondaryKey", "etag"}], "errors": [...]}."""
        body = await emu.read_json(request)
        emu.authorize(request, "RegistryWrite")
        if not isinstance(body, dict) or not isinstance(body.get("devices"), list):
            raise bad_request('The body must be {"policyKey": "...", "devices": [{"id": "..."}]}')
        which = KEY_POLICIES.get(str(body.get("policyKey", "")).lower())
        if which is None:
            raise bad_request("policyKey must be primaryKey, secondaryKey or both")
        emu.consume("registry", max(1, len(body["devices"])))
        rotated, errors = [], []
        for entry in body["devices"]:
            entry = entry if isinstance(entry, dict) else {}
            did, mid = entry.get("id"), entry.get("moduleId")
            try:  # an entry with moduleId rotates that module's keys, never its device's (the CLI's live tests)
                rotated.append(reg.regenerate_key(did, which) if mid is None
                               else _modules.regenerate_module_key(reg, did, mid, which))
            except ApiError as exc:
                errors.append({"id": did, **({"moduleId": mid} if mid is not None else {}),
                               "errorCode": exc.code, "errorStatus": exc.message})
        emu.stats.registry_writes += len(rotated)
        if rotated:
            emu.persist()
        return emu.json({"policyKey": body["policyKey"], "rotatedKeys": rotated, "errors": errors})

    @emu.hub_route("/devices/{device_id}", ["GET", "PUT", "DELETE"], "device")
    async def device(request: Request) -> Response:
        device_id = request.path_params["device_id"]
        if request.method == "GET":
            emu.guard(request, "RegistryRead")
            emu.stats.registry_reads += 1  # a read of a missing device is an operation too
            dev = reg.get(device_id)
            emu.run_race(device_id)
            return emu.json(dev, etag=dev["etag"])
        emu.guard(request, "RegistryWrite")
        if request.method == "PUT":
            body = await emu.read_json(request)
            dev = reg.put(device_id, body, request.headers.get("if-match"))
            emu.stats.registry_writes += 1
            emu.persist()
            return emu.json(dev, etag=dev["etag"])
        reg.delete(device_id, request.headers.get("if-match"))
        emu.stats.registry_writes += 1
        emu.persist()
        return Response(status_code=204, headers={"Content-Length": "0"})

    return [query, devices, regenerate, device]
