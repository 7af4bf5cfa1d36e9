"""The Device Provisioning Service's service API (api-version 2021-10-01; iot-api-2.md §4), served on its own port
of the same process (``DPS_HOSTNAME`` in ``emulator.env``): individual enrollments, enrollment groups, their bulk
operations, attestation mechanisms, queries with continuation, and registration states.

Recorded behaviour (azure-sdk-for-python ``azure-iot-deviceprovisioning`` test recordings, 2021-10-01):
* a PUT answers 200 with the enrollment, symmetric keys included; GET and query hide them
  (``"attestation": {"type": "symmetricKey"}``); ``POST .../attestationmechanism`` returns them;
* etags are opaque base64 of a quoted GUID-like string, sent back unquoted in If-Match;
* ``provisioningStatus`` is ``null`` when it was not given (the service's default is enabled);
* a bulk call answers 200 ``{"isSuccessful": false, "errors": [{registrationId, errorCode, errorStatus}]}``;
  ``mode: update`` on enrollments that exist answered ``409201 "Enrollment already exists."`` per item;
* a GET of an enrollment never registered carries ``registrationState: {registrationId, status: unassigned}``.

Emulator choices (docs/emulator.md): a PUT without If-Match on an existing id is refused with 409 409201 (knob
``dps_put_without_if_match``: ``conflict`` or ``upsert``); unknown fields are refused with 400; the numeric error
codes other than 409201 are guesses (404201 and 404202 were seen by users, #57082 of azure-docs).
"""

from __future__ import annotations

import base64
import binascii
import copy
import json
import re
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .common import etag_matches, is_wildcard, now_iso
from .dps_rules import check_attestation, check_twin, dps_error, new_etag, render_error
from .errors import ApiError

DPS_API_VERSIONS = frozenset({"2018-09-01-preview", "2019-03-31", "2021-06-01", "2021-10-01"})
DPS_AUDIENCES = ("https://azure-devices-provisioning.net", "https://azure-devices-provisioning.net/")
# iot-api-2.md §4.6: the default policy has every permission.
DPS_POLICIES = {
    "provisioningserviceowner": {"ServiceConfig", "EnrollmentRead", "EnrollmentWrite", "RegistrationStatusRead",
                                 "RegistrationStatusWrite"},
    "enrollmentread": {"EnrollmentRead", "RegistrationStatusRead"},
}
# "A case-insensitive string (up to 128 characters long) of alphanumeric characters plus certain special
# characters : . _ -. No special characters allowed at start or end." (§4.3)
REGISTRATION_ID_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9:._-]{0,126}[A-Za-z0-9])?$")
BULK_MAX = 10  # "Bulk device enrollment operation with maximum of 10 enrollments" (§4.4)
MAX_GROUPS = 100  # enrollment groups per instance (quota; enforcement is a CHOICE)
PAGE_DEFAULT = 100  # CHOICE: the page size when x-ms-max-item-count is absent or 0 (the maximum is unconfirmed)
BULK_MODES = ("create", "update", "updateIfMatchETag", "delete")
ALLOCATION_POLICIES = ("hashed", "geoLatency", "static", "custom")
INDIVIDUAL_FIELDS = ("registrationId", "deviceId", "attestation", "capabilities", "iotHubHostName", "initialTwin",
                     "provisioningStatus", "reprovisionPolicy", "allocationPolicy", "iotHubs",
                     "customAllocationDefinition", "optionalDeviceInformation")
GROUP_FIELDS = ("enrollmentGroupId", "attestation", "capabilities", "iotHubHostName", "initialTwin",
                "provisioningStatus", "reprovisionPolicy", "allocationPolicy", "iotHubs", "customAllocationDefinition")
READ_ONLY = ("etag", "createdDateTimeUtc", "lastUpdatedDateTimeUtc", "registrationState")
class DpsStore:
    """Enrollments, groups and registration states of one DPS instance."""

    def __init__(self, linked_hubs: list[str]):
        self.linked_hubs = list(linked_hubs)  # host names of the linked IoT hubs
        self.put_without_if_match = "conflict"  # or "upsert" (the spec's "Create or update"; §9.11)
        self.reset()

    def reset(self) -> None:
        self.enrollments: dict[str, dict] = {}
        self.groups: dict[str, dict] = {}
        self.registrations: dict[str, dict] = {}
        self.counter = 0

    def dump(self) -> dict:
        return {"enrollments": self.enrollments, "groups": self.groups, "registrations": self.registrations,
                "counter": self.counter}

    def load(self, data: dict) -> None:
        self.enrollments = dict(data.get("enrollments", {}))
        self.groups = dict(data.get("groups", {}))
        self.registrations = dict(data.get("registrations", {}))
        self.counter = int(data.get("counter", 0))

    def secrets(self) -> list:
        out = []
        for rec in list(self.enrollments.values()) + list(self.groups.values()):
            keys = rec["attestation"].get("symmetricKey") or {}
            out += [keys.get("primaryKey"), keys.get("secondaryKey")]
        return [v for v in out if v]

    # -------------------------------------------------------------------------------------------- records
    def _table(self, group: bool) -> dict:
        return self.groups if group else self.enrollments

    @staticmethod
    def id_field(group: bool) -> str:
        return "enrollmentGroupId" if group else "registrationId"

    def validate(self, item_id: str, body: Any, group: bool) -> dict:
        """The record to store from a PUT or bulk body, or 400."""
        id_field = self.id_field(group)
        if not isinstance(body, dict):
            raise dps_error(400, "The enrollment must be a JSON object")
        if not REGISTRATION_ID_RE.match(item_id or ""):
            raise dps_error(400, f"The {id_field} {item_id!r} is invalid: up to 128 letters, digits and : . _ -, "
                                 "starting and ending with a letter or digit")
        fields = GROUP_FIELDS if group else INDIVIDUAL_FIELDS
        unknown = set(body) - set(fields) - set(READ_ONLY)
        if unknown:
            raise dps_error(400, f"Unknown fields: {', '.join(sorted(unknown))}")
        if body.get(id_field) is not None and str(body[id_field]).lower() != item_id.lower():
            raise dps_error(400, f"{id_field} in the body does not match the one in the path")
        rec = {k: copy.deepcopy(body[k]) for k in fields if body.get(k) is not None}
        rec[id_field] = body.get(id_field) or item_id
        rec["attestation"] = check_attestation(body.get("attestation"), group)
        status = rec.get("provisioningStatus")
        if status is not None and status not in ("enabled", "disabled"):
            raise dps_error(400, "provisioningStatus must be enabled or disabled")
        caps = rec.get("capabilities")
        if caps is not None and (not isinstance(caps, dict) or not isinstance(caps.get("iotEdge"), bool)):
            raise dps_error(400, "capabilities.iotEdge is required and must be a boolean")
        rp = rec.get("reprovisionPolicy")
        if rp is not None and (not isinstance(rp, dict) or not all(
                isinstance(rp.get(k), bool) for k in ("updateHubAssignment", "migrateDeviceData"))):
            raise dps_error(400, "reprovisionPolicy takes updateHubAssignment and migrateDeviceData, both booleans")
        policy = rec.get("allocationPolicy")
        if policy is not None and policy not in ALLOCATION_POLICIES:
            raise dps_error(400, f"allocationPolicy must be one of {', '.join(ALLOCATION_POLICIES)}")
        hubs = rec.get("iotHubs")
        if hubs is not None:
            if not isinstance(hubs, list) or not all(isinstance(h, str) for h in hubs):
                raise dps_error(400, "iotHubs must be a list of host names")
            unknown_hubs = [h for h in hubs if h.lower() not in {x.lower() for x in self.linked_hubs}]
            if unknown_hubs:
                raise dps_error(400, f"iotHubs must be a subset of the linked IoT hubs; not linked: "
                                     f"{', '.join(unknown_hubs)}")
        host = rec.get("iotHubHostName")
        if host is not None and host.lower() not in {x.lower() for x in self.linked_hubs}:
            raise dps_error(400, f"iotHubHostName {host!r} is not a linked IoT hub")
        if policy == "static" and hubs is not None and len(hubs) != 1:
            raise dps_error(400, "The static allocation policy takes exactly one IoT hub")
        if policy == "custom":
            cad = rec.get("customAllocationDefinition")
            if not isinstance(cad, dict) or not cad.get("webhookUrl") or not cad.get("apiVersion"):
                raise dps_error(400, "The custom allocation policy requires customAllocationDefinition with "
                                     "webhookUrl and apiVersion")
        if "initialTwin" in rec:
            check_twin(rec["initialTwin"])
        if not group and rec.get("deviceId") is not None and not isinstance(rec["deviceId"], str):
            raise dps_error(400, "deviceId must be a string")
        return rec

    def put(self, item_id: str, body: Any, if_match: str | None, group: bool) -> dict:
        table = self._table(group)
        rec = self.validate(item_id, body, group)
        key = item_id.lower()
        current = table.get(key)
        if current is None:
            if if_match and not is_wildcard(if_match):
                raise dps_error(412, "The enrollment does not exist, so its ETag cannot match", 412001)
            if group and len(self.groups) >= MAX_GROUPS:
                raise dps_error(400, f"An instance holds at most {MAX_GROUPS} enrollment groups")
            rec["createdDateTimeUtc"] = now_iso()
        else:
            if not if_match:
                if self.put_without_if_match == "conflict":
                    raise dps_error(409, "Enrollment already exists.", 409201)
            elif not is_wildcard(if_match) and not etag_matches(if_match, current["etag"]):
                raise dps_error(412, "The ETag does not match the enrollment's", 412001)
            rec["createdDateTimeUtc"] = current["createdDateTimeUtc"]
        self.counter += 1
        rec["etag"] = new_etag(self.counter)
        rec["lastUpdatedDateTimeUtc"] = now_iso()
        table[key] = rec
        return rec

    def get(self, item_id: str, group: bool) -> dict:
        rec = self._table(group).get(item_id.lower())
        if rec is None:
            raise dps_error(404, f"{'Enrollment group' if group else 'Enrollment'} {item_id} not found", 404201)
        return rec

    def delete(self, item_id: str, if_match: str | None, group: bool) -> None:
        rec = self.get(item_id, group)
        if if_match and not is_wildcard(if_match) and not etag_matches(if_match, rec["etag"]):
            raise dps_error(412, "The ETag does not match the enrollment's", 412001)
        del self._table(group)[item_id.lower()]

    def bulk(self, body: Any, group: bool) -> dict:
        items_field = "enrollmentGroups" if group else "enrollments"
        if not isinstance(body, dict) or body.get("mode") not in BULK_MODES:
            raise dps_error(400, f"mode must be one of {', '.join(BULK_MODES)}")
        items = body.get(items_field)
        if not isinstance(items, list) or not items:
            raise dps_error(400, f"{items_field} must be a non-empty list")
        if len(items) > BULK_MAX:
            raise dps_error(400, f"A bulk operation takes at most {BULK_MAX} {items_field}")
        id_field = self.id_field(group)
        errors = []
        for item in items:
            item_id = str(item.get(id_field) or "") if isinstance(item, dict) else ""
            try:
                self._bulk_one(body["mode"], item_id, item, group)
            except ApiError as err:
                errors.append({id_field: item_id, "errorCode": int(err.code) if err.code.isdigit() else 400004,
                               "errorStatus": err.message})
        return {"isSuccessful": not errors, "errors": errors}

    def _bulk_one(self, mode: str, item_id: str, item: Any, group: bool) -> None:
        exists = item_id.lower() in self._table(group)
        if mode == "delete":
            if exists:
                self.delete(item_id, None, group)
            return
        if mode in ("create", "update"):
            # recorded: "update" of enrollments that exist answered 409201 "Enrollment already exists."
            if exists:
                raise dps_error(409, "Enrollment already exists.", 409201)
            self.put(item_id, item, None, group)
            return
        if not exists:
            raise dps_error(404, f"Enrollment {item_id} not found", 404201)
        etag = item.get("etag") if isinstance(item, dict) else None
        if not etag:
            raise dps_error(412, "updateIfMatchETag needs the enrollment's etag", 412001)
        self.put(item_id, item, etag, group)

    def query(self, group: bool, spec: Any) -> list:
        if not isinstance(spec, dict) or not isinstance(spec.get("query"), str):
            raise dps_error(400, 'The body must be {"query": "SELECT *"}')
        words = spec["query"].strip().split()
        if [w.lower() for w in words[:2]] != ["select", "*"] or (
                len(words) > 2 and (len(words) != 4 or words[2].lower() != "from")):
            raise dps_error(400, f"Unsupported query {spec['query']!r}: the emulator answers SELECT * [FROM x]")
        return [self._table(group)[k] for k in sorted(self._table(group))]

    # ------------------------------------------------------------------------------------------ rendering
    def render(self, rec: dict, group: bool, keys: bool, with_state: bool = False) -> dict:
        out = copy.deepcopy(rec)
        att = out["attestation"]
        if att["type"] == "symmetricKey" and not keys:
            out["attestation"] = {"type": "symmetricKey"}
        if att["type"] == "x509":
            for certs in att["x509"].values():
                if isinstance(certs, dict):
                    for slot in certs.values():
                        if isinstance(slot, dict):
                            slot.pop("certificate", None)  # CHOICE: the info is returned, the PEM is not
        out.setdefault("provisioningStatus", None)
        if with_state and not group:
            state = self.registrations.get(rec["registrationId"].lower())
            out["registrationState"] = copy.deepcopy(state) if state else {
                "registrationId": rec["registrationId"], "status": "unassigned"}
        return out

    def attestation(self, rec: dict) -> dict:
        return self.render(rec, False, keys=True)["attestation"]


def page(items: list, request: Request) -> tuple[list, dict]:
    """One page of ITEMS by x-ms-max-item-count and x-ms-continuation (an opaque offset)."""
    raw = request.headers.get("x-ms-max-item-count") or "0"
    try:
        size = int(raw)
    except ValueError:
        raise dps_error(400, "x-ms-max-item-count must be an integer") from None
    if size < 0:
        raise dps_error(400, "x-ms-max-item-count must be 0 or more")
    size = size or PAGE_DEFAULT
    token = request.headers.get("x-ms-continuation")
    start = 0
    if token:
        try:
            start = int(base64.b64decode(token).decode().split(":")[1])
        except (ValueError, IndexError, binascii.Error):
            raise dps_error(400, "x-ms-continuation is not a token this service issued") from None
    chunk = items[start:start + size]
    headers = {"x-ms-max-item-count": str(size)}
    if start + size < len(items):
        headers["x-ms-continuation"] = base64.b64encode(f"offset:{start + size}".encode()).decode()
    return chunk, headers


def routes(emu) -> list[Route]:
    """The service API's routes (the DPS port's app)."""
    store: DpsStore = emu.dps
    emu.register_secrets("dps_keys", store.secrets)

    def route(path: str, methods: list[str], name: str):
        def deco(fn):
            async def endpoint(request: Request) -> Response:
                emu.stats.requests_by_route[f"DPS {request.method} {path}"] += 1
                write = request.method in ("PUT", "DELETE") or (request.method == "POST" and name == "bulk")
                if write:
                    emu.stats.write_requests += 1
                    emu.stats.dps_writes += 1
                else:
                    emu.stats.dps_reads += 1
                try:
                    return await fn(request)
                except ApiError as err:
                    return render_error(err, request.scope.get("emulator.request_id", ""))
            return Route(path, endpoint, methods=methods, name=f"dps_{name}")
        return deco

    def guard(request: Request, right: str) -> None:
        version = request.query_params.get("api-version")
        if not version:
            raise dps_error(400, "The api-version query parameter is required")
        if version not in DPS_API_VERSIONS:
            raise dps_error(400, f"api-version {version!r} is not supported")
        try:
            emu.dps_auth.check(request.headers.get("authorization"), request.url.path, right)
        except ApiError as err:
            raise dps_error(401, err.message) from None

    async def body_of(request: Request) -> Any:
        raw = await request.body()
        if not raw:
            raise dps_error(400, "The request body is empty")
        try:
            return json.loads(raw)
        except ValueError:
            raise dps_error(400, "The request body is not valid JSON") from None

    def json_answer(body: Any, headers: dict | None = None) -> Response:
        return Response(json.dumps(body), status_code=200, headers=headers or {},
                        media_type="application/json; charset=utf-8")

    out: list[Route] = []
    for group, base, item_type in ((False, "/enrollments", "Enrollment"), (True, "/enrollmentGroups",
                                                                            "EnrollmentGroup")):
        def make(group=group, base=base, item_type=item_type):
            @route(base + "/query", ["POST"], f"{base}_query")
            async def query(request: Request) -> Response:
                guard(request, "EnrollmentRead")
                items = store.query(group, await body_of(request))
                chunk, headers = page(items, request)
                headers["x-ms-item-type"] = item_type
                return json_answer([store.render(r, group, keys=False) for r in chunk], headers)

            @route(base, ["POST"], "bulk")
            async def bulk(request: Request) -> Response:
                guard(request, "EnrollmentWrite")
                result = store.bulk(await body_of(request), group)
                emu.persist()
                return json_answer(result)

            @route(base + "/{item_id}/attestationmechanism", ["POST"], f"{base}_attestation")
            async def attestation(request: Request) -> Response:
                guard(request, "EnrollmentWrite")  # CHOICE: reading keys takes the write permission
                return json_answer(store.attestation(store.get(request.path_params["item_id"], group)))

            @route(base + "/{item_id}", ["GET", "PUT", "DELETE"], f"{base}_item")
            async def item(request: Request) -> Response:
                item_id = request.path_params["item_id"]
                if request.method == "GET":
                    guard(request, "EnrollmentRead")
                    return json_answer(store.render(store.get(item_id, group), group, keys=False, with_state=True))
                guard(request, "EnrollmentWrite")
                if request.method == "PUT":
                    rec = store.put(item_id, await body_of(request), request.headers.get("if-match"), group)
                    emu.persist()
                    return json_answer(store.render(rec, group, keys=True))
                store.delete(item_id, request.headers.get("if-match"), group)
                emu.persist()
                return Response(status_code=204)
            return [query, bulk, attestation, item]
        out += make()

    @route("/registrations/{item_id}/query", ["POST"], "registrations_query")
    async def registrations_query(request: Request) -> Response:
        guard(request, "RegistrationStatusRead")
        group_id = request.path_params["item_id"].lower()
        items = [s for _k, s in sorted(store.registrations.items()) if s.get("_group", "").lower() == group_id]
        chunk, headers = page(items, request)
        headers["x-ms-item-type"] = "DeviceRegistration"
        return json_answer([{k: v for k, v in s.items() if not k.startswith("_")} for s in chunk], headers)

    @route("/registrations/{item_id}", ["GET", "DELETE"], "registration")
    async def registration(request: Request) -> Response:
        item_id = request.path_params["item_id"]
        state = store.registrations.get(item_id.lower())
        guard(request, "RegistrationStatusRead" if request.method == "GET" else "RegistrationStatusWrite")
        if state is None:
            raise dps_error(404, f"Registration {item_id} not found", 404202)
        if request.method == "GET":
            return json_answer({k: v for k, v in state.items() if not k.startswith("_")})
        if_match = request.headers.get("if-match")
        if if_match and not is_wildcard(if_match) and not etag_matches(if_match, state["etag"]):
            raise dps_error(412, "The ETag does not match the registration's", 412001)
        del store.registrations[item_id.lower()]
        emu.persist()
        return Response(status_code=204)

    return out + [registrations_query, registration]


def registration_record(registration_id: str, device_id: str, hub: str, group_id: str | None, counter: int,
                        substatus: str = "initialAssignment") -> dict:
    """A DeviceRegistrationState (§4.5); ``_group`` (not rendered) names the group it came through."""
    now = now_iso()
    rec = {"registrationId": registration_id, "createdDateTimeUtc": now, "assignedHub": hub, "deviceId": device_id,
           "status": "assigned", "substatus": substatus, "lastUpdatedDateTimeUtc": now, "etag": new_etag(counter)}
    if group_id:
        rec["_group"] = group_id
    return rec
