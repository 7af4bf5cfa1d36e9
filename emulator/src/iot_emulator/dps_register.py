"""The DPS device registration API (api-version 2019-03-31 .. 2021-06-01) on the DPS port:
``PUT /{idScope}/registrations/{registrationId}/register`` and
``GET /{idScope}/registrations/{registrationId}/operations/{operationId}``.

A device authenticates with a SAS token for ``{idScope}/registrations/{registrationId}`` (key name
``registration``) signed with its individual enrollment's key, or with the key derived from a symmetric-key
group's key (iot-api-2.md §4.7).  The registration allocates a linked hub by the enrollment's policy, creates (or
re-provisions) the device there through that hub's own REST API (keys, ``iotEdge``, the initial twin), and records
the registration state the service API shows.  The answer is 202 ``assigning`` with an operation id; the
operation's status is ``assigned`` (or ``failed``, ``disabled``) once polled.

Emulator choices (docs/emulator.md): the allocation runs before the 202 answer (the first poll sees the result);
``hashed`` picks by SHA-256 of the registration id over the hubs sorted; ``geoLatency`` picks the first hub;
``custom`` fails (no webhook is reachable offline); X.509 and TPM registration are not served (SAS only).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import urllib.parse
import uuid
from typing import Any

import httpx
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .auth import CLOCK_SKEW_S, parse_sas
from .common import now_iso
from .dps import registration_record
from .dps_rules import dps_error, render_error
from .errors import ApiError

DEVICE_API_VERSIONS = frozenset({"2018-11-01", "2019-03-31", "2021-06-01", "2021-10-01"})
HUB_API_VERSION = "2021-04-12"


def derive(group_key: str, registration_id: str) -> str:
    """The emulator's own reading of §4.7 (the collection's is judged against it, and both against the docs)."""
    return base64.b64encode(hmac.new(base64.b64decode(group_key), registration_id.encode(), hashlib.sha256)
                            .digest()).decode()


def hub_sas(host: str, key_name: str, key: str) -> str:
    se = int(time.time()) + 3600
    sr = urllib.parse.quote_plus(host)
    sig = base64.b64encode(hmac.new(base64.b64decode(key), f"{sr}\n{se}".encode(), hashlib.sha256).digest()).decode()
    return f"SharedAccessSignature sr={sr}&sig={urllib.parse.quote(sig, safe='')}&se={se}&skn={key_name}"


class LinkedHub:
    """A linked IoT hub reached through its REST API with its owner connection string."""

    def __init__(self, connection_string: str, verify):
        parts = dict(p.split("=", 1) for p in connection_string.split(";") if "=" in p)
        self.host, self.key_name, self.key = parts["HostName"], parts["SharedAccessKeyName"], parts["SharedAccessKey"]
        self.verify = verify

    async def call(self, client: httpx.AsyncClient, method: str, path: str, body: Any = None,
                   if_match: str | None = None) -> httpx.Response:
        headers = {"Authorization": hub_sas(self.host, self.key_name, self.key)}
        if if_match:
            headers["If-Match"] = f'"{if_match}"'
        return await client.request(method, f"https://{self.host}{path}", params={"api-version": HUB_API_VERSION},
                                    json=body, headers=headers)

    async def provision(self, device_id: str, keys: tuple, edge: bool, twin: dict | None, migrate_from=None) -> None:
        """Create the device (or update its keys and capabilities), then set the twin it starts with."""
        async with httpx.AsyncClient(verify=self.verify, timeout=30) as client:
            path = f"/devices/{urllib.parse.quote(device_id, safe='')}"
            r = await self.call(client, "GET", path)
            body = {"deviceId": device_id, "status": "enabled", "capabilities": {"iotEdge": edge},
                    "authentication": {"type": "sas", "symmetricKey": {"primaryKey": keys[0],
                                                                       "secondaryKey": keys[1]}}}
            if r.status_code == 200:
                current = r.json()
                body = {**current, "capabilities": body["capabilities"], "authentication": body["authentication"]}
                r = await self.call(client, "PUT", path, body, if_match=current["etag"])
            else:
                r = await self.call(client, "PUT", path, body)
            if r.status_code != 200:
                raise ApiError(500, "500001", f"the linked hub {self.host} refused the device: HTTP {r.status_code}")
            if twin:
                patch = {"tags": twin.get("tags") or {}, "properties": {"desired": twin.get("desired") or {}}}
                r = await self.call(client, "PATCH", f"/twins/{urllib.parse.quote(device_id, safe='')}", patch)
                if r.status_code != 200:
                    raise ApiError(500, "500001", f"the linked hub {self.host} refused the twin: HTTP {r.status_code}")

    async def read_twin(self, device_id: str) -> dict | None:
        async with httpx.AsyncClient(verify=self.verify, timeout=30) as client:
            r = await self.call(client, "GET", f"/twins/{urllib.parse.quote(device_id, safe='')}")
            if r.status_code != 200:
                return None
            doc = r.json()
            return {"tags": doc.get("tags") or {}, "desired": {k: v for k, v in (doc.get("properties", {})
                                                                            .get("desired") or {}).items()
                                                               if not k.startswith("$")}}

    async def delete(self, device_id: str) -> None:
        async with httpx.AsyncClient(verify=self.verify, timeout=30) as client:
            await self.call(client, "DELETE", f"/devices/{urllib.parse.quote(device_id, safe='')}", if_match="*")


def allocate(hubs: list[str], policy: str | None, registration_id: str) -> str:
    ordered = sorted(hubs, key=str.lower)
    if policy == "hashed" or policy is None:
        return ordered[int(hashlib.sha256(registration_id.lower().encode()).hexdigest(), 16) % len(ordered)]
    return ordered[0]  # static (one hub) and geoLatency (every hub is as near as the others here)


def routes(emu) -> list[Route]:
    store = emu.dps
    operations: dict[str, dict] = {}

    def answer(body: Any, status: int = 200) -> Response:
        return Response(json.dumps(body), status_code=status, media_type="application/json; charset=utf-8",
                        headers={"retry-after": "1"} if status == 202 else {})

    def check_version(request: Request) -> None:
        version = request.query_params.get("api-version")
        if version not in DEVICE_API_VERSIONS:
            raise dps_error(400, f"api-version {version!r} is not supported by the device API")

    def authenticate(request: Request, scope: str, registration_id: str) -> tuple[dict, str | None, tuple]:
        """(enrollment, group id or None, the device's keys) of a device whose SAS token checks out, or 401."""
        header = request.headers.get("authorization")
        if not header:
            raise dps_error(401, "The request has no Authorization header", 401002)
        try:
            f = parse_sas(header)
        except ApiError as err:
            raise dps_error(401, err.message, 401002) from None
        if urllib.parse.unquote_plus(f["sr"]).lower() != f"{scope}/registrations/{registration_id}".lower():
            raise dps_error(401, "The SharedAccessSignature is for another registration", 401002)
        if int(f["se"]) + CLOCK_SKEW_S < time.time():
            raise dps_error(401, "The SharedAccessSignature has expired", 401002)
        sig = urllib.parse.unquote(f["sig"])

        def signed_by(key: str) -> bool:
            want = base64.b64encode(hmac.new(base64.b64decode(key), f"{f['sr']}\n{f['se']}".encode(),
                                             hashlib.sha256).digest()).decode()
            return hmac.compare_digest(want, sig)

        rec = store.enrollments.get(registration_id.lower())
        if rec is not None:
            keys = (rec["attestation"].get("symmetricKey") or {})
            pair = (keys.get("primaryKey"), keys.get("secondaryKey"))
            if any(k and signed_by(k) for k in pair):
                return rec, None, pair
            raise dps_error(401, "The signature does not match the enrollment's keys", 401002)
        for gid, grp in sorted(store.groups.items()):
            keys = grp["attestation"].get("symmetricKey") or {}
            pair = tuple(derive(k, registration_id) if k else None for k in (keys.get("primaryKey"),
                                                                             keys.get("secondaryKey")))
            if any(k and signed_by(k) for k in pair):
                return grp, grp["enrollmentGroupId"], pair
        raise dps_error(401, f"No enrollment admits {registration_id!r} with this signature", 401002)

    async def register(request: Request) -> Response:
        try:
            check_version(request)
            scope, registration_id = request.path_params["scope"], request.path_params["registration_id"]
            if scope.lower() != emu.dps_id_scope.lower():
                raise dps_error(404, f"Unknown id scope {scope!r}", 404001)
            rec, group_id, keys = authenticate(request, scope, registration_id)
            emu.stats.dps_writes += 1
            emu.stats.requests_by_route["DPS PUT /{scope}/registrations/{id}/register"] += 1
            raw = await request.body()
            payload = json.loads(raw).get("payload") if raw else None
            result = await run_registration(rec, group_id, keys, registration_id, payload)
            op_id = f"4.{uuid.uuid4().hex[:16]}.{uuid.uuid4()}"
            operations[op_id] = result
            return answer({"operationId": op_id, "status": "assigning"}, 202)
        except ApiError as err:
            return render_error(err, request.scope.get("emulator.request_id", ""))

    async def operation(request: Request) -> Response:
        try:
            check_version(request)
            scope, registration_id = request.path_params["scope"], request.path_params["registration_id"]
            authenticate(request, scope, registration_id)
            result = operations.get(request.path_params["operation_id"])
            if result is None or result["registrationState"]["registrationId"].lower() != registration_id.lower():
                raise dps_error(404, "Unknown operation", 404203)
            return answer({"operationId": request.path_params["operation_id"], **result})
        except ApiError as err:
            return render_error(err, request.scope.get("emulator.request_id", ""))

    async def run_registration(rec: dict, group_id: str | None, keys: tuple, registration_id: str,
                               payload: Any) -> dict:
        now = now_iso()
        if (rec.get("provisioningStatus") or "enabled") == "disabled":
            state = {"registrationId": registration_id, "status": "disabled", "createdDateTimeUtc": now,
                     "lastUpdatedDateTimeUtc": now, "errorCode": 401001, "errorMessage": "The enrollment is disabled"}
            return {"status": "disabled", "registrationState": state}
        hubs = rec.get("iotHubs") or ([rec["iotHubHostName"]] if rec.get("iotHubHostName") else list(emu.linked))
        if rec.get("allocationPolicy") == "custom":
            state = {"registrationId": registration_id, "status": "failed", "createdDateTimeUtc": now,
                     "lastUpdatedDateTimeUtc": now, "errorCode": 400209,
                     "errorMessage": "Custom allocation failed: the webhook cannot be reached"}
            return {"status": "failed", "registrationState": state}
        device_id = rec.get("deviceId") or registration_id
        key = registration_id.lower()
        previous = store.registrations.get(key)
        target = allocate(hubs, rec.get("allocationPolicy"), registration_id)
        rp = rec.get("reprovisionPolicy") or {"updateHubAssignment": True, "migrateDeviceData": True}
        twin = rec.get("initialTwin") or {}
        initial = {"tags": twin.get("tags") or {}, "desired": (twin.get("properties") or {}).get("desired") or {}}
        substatus = "initialAssignment"
        if previous and previous.get("status") == "assigned":
            old_hub = previous["assignedHub"]
            if old_hub != target and not rp.get("updateHubAssignment", True):
                target = old_hub  # never move it
            if old_hub == target:
                substatus = previous.get("substatus", "initialAssignment")
                initial = None  # a registration again, to the same hub: the device and its twin stay as they are
            elif rp.get("migrateDeviceData", True):
                initial = await emu.linked[old_hub].read_twin(previous["deviceId"]) or initial
                substatus = "deviceDataMigrated"
            else:
                substatus = "deviceDataReset"
        edge = bool((rec.get("capabilities") or {}).get("iotEdge", False))
        await emu.linked[target].provision(device_id, keys, edge, initial)
        if previous and previous.get("assignedHub") not in (None, target) and substatus != "initialAssignment":
            await emu.linked[previous["assignedHub"]].delete(previous["deviceId"])
        store.counter += 1
        state = registration_record(registration_id, device_id, target, group_id, store.counter, substatus)
        if previous:
            state["createdDateTimeUtc"] = previous.get("createdDateTimeUtc", state["createdDateTimeUtc"])
        if group_id:
            state["symmetricKey"] = {"enrollmentGroupId": group_id}
        if payload is not None:
            state["payload"] = payload
        store.registrations[key] = state
        emu.persist()
        shown = {k: v for k, v in state.items() if not k.startswith("_")}
        return {"status": "assigned", "registrationState": shown}

    return [Route("/{scope}/registrations/{registration_id}/register", register, methods=["PUT"]),
            Route("/{scope}/registrations/{registration_id}/operations/{operation_id}", operation, methods=["GET"])]
