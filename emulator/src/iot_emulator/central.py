"""The IoT Central devices API (api-version 2022-07-31) of one application (iot-api.md §8).

Served by the same process as the hub, under ``/api``; its app URL is ``https://127.0.0.1:PORT`` (written to
``emulator.env`` as ``IOTCENTRAL_APP_URL``).  Documented behaviour and emulator choices: docs/emulator.md.
"""

from __future__ import annotations

import base64
import copy
import datetime as _dt
import json
import re
import secrets
import uuid
from dataclasses import dataclass, field
from email.utils import format_datetime
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .auth import CLOCK_SKEW_S, check_test_jwt
from .errors import ApiError

CENTRAL_API_VERSIONS = frozenset({"2022-05-31", "2022-07-31", "2022-10-31-preview", "2023-07-31-preview"})
DEVICE_ID_RE = re.compile(r"^[a-z0-9._:-]{1,128}$")  # CHOICE: DPS registration id rule (lowercase)
WRITABLE = ("displayName", "template", "enabled", "simulated", "organizations", "etag")
PAGE_SIZE = 25  # "the default size is 25" (2022-10-31-preview docs)
MAX_PAGE = 100  # "maximum returned result size is 100"
CENTRAL_AUDIENCES = ("https://apps.azureiotcentral.com", "https://apps.azureiotcentral.com/")


def new_etag() -> str:
    """Unpadded base64url of a Cosmos-style JSON wrapper, as the service's etags look (§8)."""
    raw = json.dumps({"header": f'"{uuid.uuid4()}"'}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def new_token(app_id: str, name: str = "operator-token") -> str:
    sig = base64.b64encode(secrets.token_bytes(32)).decode().replace("+", "%2B").replace("/", "%2F").replace("=", "%3D")
    expiry_ms = int((_dt.datetime.now(_dt.timezone.utc) + _dt.timedelta(days=365)).timestamp() * 1000)
    return f"SharedAccessSignature sr={app_id}&sig={sig}&skn={name}&se={expiry_ms}"


@dataclass
class CentralApp:
    name: str
    app_id: str
    tokens: list
    templates: set
    organizations: set
    id_scope: str
    devices: dict = field(default_factory=dict)
    credentials: dict = field(default_factory=dict)

    def dump(self) -> dict:
        return {"devices": self.devices, "credentials": self.credentials}

    def load(self, data: dict) -> None:
        self.devices = dict(data.get("devices", {}))
        self.credentials = dict(data.get("credentials", {}))


def central_error(err: ApiError, request_id: str) -> Response:
    """{"error": {"code", "message", "requestId", "time"}} with x-ms-error-code (§8)."""
    body = {"error": {"code": err.code, "message": err.message, "requestId": request_id,
                      "time": format_datetime(_dt.datetime.now(_dt.timezone.utc), usegmt=True)}}
    return Response(json.dumps(body), status_code=err.status, media_type="application/json; charset=utf-8",
                    headers={"x-ms-error-code": err.code, **err.headers})


def _json(body, status: int = 200) -> Response:
    return Response(json.dumps(body), status_code=status, media_type="application/json; charset=utf-8")


class CentralApi:
    def __init__(self, emulator, app: CentralApp):
        self.emu = emulator
        self.app = app
        emulator.register_secrets("central_tokens", lambda: list(app.tokens))
        emulator.register_secrets("central_device_keys",
                                  lambda: [v for cred in app.credentials.values() for v in cred.values()])

    # ------------------------------------------------------------------ checks
    def authorize(self, request: Request) -> None:
        version = request.query_params.get("api-version")
        if not version:
            raise ApiError(400, "MissingApiVersion", "The api-version query parameter is required")
        if version not in CENTRAL_API_VERSIONS:
            raise ApiError(400, "UnsupportedApiVersion", f"api-version {version!r} is not supported")
        header = request.headers.get("authorization") or ""
        if header.startswith("Bearer "):
            self._check_bearer(header[7:].strip())
            return
        if not header:
            raise ApiError(401, "Unauthorized", "The request has no Authorization header")
        if header.strip() not in self.app.tokens:
            raise ApiError(401, "Unauthorized", "The API token is not valid for this application")
        m = re.search(r"[&\s]se=(\d+)", " " + header)
        if m and int(m.group(1)) / 1000 + CLOCK_SKEW_S < _dt.datetime.now(_dt.timezone.utc).timestamp():
            raise ApiError(401, "Unauthorized", "The API token has expired")

    def _check_bearer(self, token: str) -> None:
        if not self.emu.settings.entra_test_mode:
            raise ApiError(401, "Unauthorized", "Bearer tokens are accepted only with --entra-test-mode")
        _, problem = check_test_jwt(token, CENTRAL_AUDIENCES)
        if problem:
            raise ApiError(401, "Unauthorized", problem)

    def _device_id(self, request: Request) -> str:
        device_id = request.path_params["device_id"]
        if not DEVICE_ID_RE.match(device_id):
            raise ApiError(400, "InvalidDeviceId", f"Device id {device_id!r} is invalid: up to 128 lowercase letters, "
                           "digits, '-', '.', '_' or ':'")
        return device_id

    def _validate(self, body, partial: bool) -> dict:
        if not isinstance(body, dict):
            raise ApiError(400, "InvalidBody", "The request body must be a JSON object")
        unknown = sorted(set(body) - set(WRITABLE) - {"id", "provisioned"})
        if unknown:
            raise ApiError(400, "InvalidBody", f"Unknown device properties: {', '.join(unknown)}")
        for key in ("displayName", "template", "etag"):
            if key in body and body[key] is not None and not isinstance(body[key], str):
                raise ApiError(400, "InvalidBody", f"{key} must be a string")
        for key in ("enabled", "simulated"):
            if key in body and body[key] is not None and not isinstance(body[key], bool):
                raise ApiError(400, "InvalidBody", f"{key} must be a boolean")
        if "template" in body and body["template"] not in (None, "") and body["template"] not in self.app.templates:
            # CHOICE: 400 (an unknown template reference is refused; cf. MicrosoftDocs/azure-docs#110004).
            raise ApiError(400, "InvalidDeviceTemplate", f"Device template {body['template']!r} does not exist in "
                           "this application")
        orgs = body.get("organizations")
        if orgs is not None:
            if not isinstance(orgs, list) or not all(isinstance(o, str) for o in orgs):
                raise ApiError(400, "InvalidBody", "organizations must be an array of organization ids")
            if len(orgs) > 1:
                raise ApiError(400, "InvalidBody", "Only one organization is supported per device")
            missing = [o for o in orgs if o not in self.app.organizations]
            if missing:
                raise ApiError(400, "InvalidOrganization", f"Organization {missing[0]!r} does not exist in this application")
        return body

    def _check_etag(self, body: dict, current: dict | None) -> None:
        sent = body.get("etag")
        if sent and current is not None and sent.strip('"') != current["etag"]:
            raise ApiError(412, "PreconditionFailed", "The etag in the request does not match the etag of the device")
        if sent and current is None:
            raise ApiError(404, "NotFound", "The device does not exist")

    # ------------------------------------------------------------------ routes
    def routes(self) -> list:
        app, emu = self.app, self.emu

        def endpoint(fn, write=False):
            async def handler(request: Request) -> Response:
                emu.stats.requests_by_route[f"{request.method} {request.url.path.split('/devices')[0]}/devices..."] += 1
                if write:
                    emu.stats.write_requests += 1
                try:
                    self.authorize(request)
                    return await fn(request)
                except ApiError as err:
                    return central_error(err, request.scope["emulator.request_id"])
            return handler

        async def list_devices(request: Request) -> Response:
            emu.stats.central_reads += 1
            ids = sorted(app.devices)
            start = 0
            # $top: the page size, at most MAX_PAGE (the "maximum returned result size is 100, the default size
            # is 25" of the devices API docs); beyond it the request is refused.
            top_param = request.query_params.get("$top")
            try:
                top = PAGE_SIZE if top_param in (None, "") else int(top_param)
            except ValueError:
                raise ApiError(400, "InvalidParameter", "$top must be an integer") from None
            if not 1 <= top <= MAX_PAGE:
                raise ApiError(400, "InvalidParameter", f"$top must be between 1 and {MAX_PAGE}")
            token = request.query_params.get("$skiptoken")
            if token:
                try:
                    start = int(json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))["s"])
                except (ValueError, KeyError, TypeError):
                    raise ApiError(400, "InvalidSkipToken", "The $skiptoken is invalid") from None
            page = ids[start:start + top]
            body = {"value": [copy.deepcopy(app.devices[d]) for d in page]}
            if start + top < len(ids):
                skip = base64.urlsafe_b64encode(json.dumps({"s": start + top}).encode()).decode().rstrip("=")
                params = {"api-version": request.query_params["api-version"], "$skiptoken": skip}
                if top_param not in (None, ""):
                    params["$top"] = str(top)
                body["nextLink"] = f"{str(request.base_url).rstrip('/')}/api/devices?{urlencode(params)}"
            return _json(body)

        async def get_device(request: Request) -> Response:
            device_id = self._device_id(request)
            emu.stats.central_reads += 1
            dev = app.devices.get(device_id)
            if dev is None:
                raise ApiError(404, "NotFound", f"Device {device_id!r} does not exist")
            return _json(dev)

        async def put_device(request: Request) -> Response:
            device_id = self._device_id(request)
            body = self._validate(await emu.read_json(request), partial=False)
            current = app.devices.get(device_id)
            self._check_etag(body, current)
            # CHOICE: PUT replaces every writable field; an omitted field takes its default.
            dev = {
                "id": device_id, "etag": new_etag(),
                "displayName": body.get("displayName") or device_id,
                "template": body.get("template") or None,
                "simulated": bool(body.get("simulated", False)),
                "provisioned": current["provisioned"] if current else False,
                "enabled": bool(body.get("enabled", True)),
                "organizations": list(body.get("organizations") or []),
            }
            if dev["template"] is None:
                dev.pop("template")
            app.devices[device_id] = dev
            if device_id not in app.credentials:
                app.credentials[device_id] = {
                    "primaryKey": base64.b64encode(secrets.token_bytes(32)).decode(),
                    "secondaryKey": base64.b64encode(secrets.token_bytes(32)).decode()}
            emu.stats.central_writes += 1
            emu.persist()
            return _json(dev)

        async def patch_device(request: Request) -> Response:
            device_id = self._device_id(request)
            ctype = (request.headers.get("content-type") or "").split(";")[0].strip()
            if ctype not in ("application/json", "application/merge-patch+json"):
                raise ApiError(415, "UnsupportedMediaType", "Use application/json or application/merge-patch+json")
            body = self._validate(await emu.read_json(request), partial=True)
            current = app.devices.get(device_id)
            if current is None:
                raise ApiError(404, "NotFound", f"Device {device_id!r} does not exist")
            self._check_etag(body, current)
            dev = copy.deepcopy(current)
            for key in ("displayName", "template", "enabled", "simulated", "organizations"):
                if key in body:
                    if body[key] is None:
                        dev.pop(key, None)
                    else:
                        dev[key] = body[key]
            dev["etag"] = new_etag()
            app.devices[device_id] = dev
            emu.stats.central_writes += 1
            emu.persist()
            return _json(dev)

        async def delete_device(request: Request) -> Response:
            device_id = self._device_id(request)
            if app.devices.pop(device_id, None) is None:
                raise ApiError(404, "NotFound", f"Device {device_id!r} does not exist")
            app.credentials.pop(device_id, None)
            emu.stats.central_writes += 1
            emu.persist()
            return Response(status_code=204)

        async def credentials(request: Request) -> Response:
            device_id = self._device_id(request)
            emu.stats.central_reads += 1
            if device_id not in app.devices:
                raise ApiError(404, "NotFound", f"Device {device_id!r} does not exist")
            return _json({"idScope": app.id_scope, "symmetricKey": dict(app.credentials[device_id])})

        async def template(request: Request) -> Response:
            template_id = request.path_params["template_id"]
            emu.stats.central_reads += 1
            if template_id not in app.templates:
                raise ApiError(404, "NotFound", f"Device template {template_id!r} does not exist")
            return _json({"@id": template_id, "@type": ["ModelDefinition", "DeviceModel"],
                          "displayName": template_id.split(":")[-1].split(";")[0]})

        async def organization(request: Request) -> Response:
            org_id = request.path_params["org_id"]
            emu.stats.central_reads += 1
            if org_id not in app.organizations:
                raise ApiError(404, "NotFound", f"Organization {org_id!r} does not exist")
            return _json({"id": org_id, "displayName": org_id})

        async def device(request: Request) -> Response:
            fn = {"GET": get_device, "PUT": put_device, "PATCH": patch_device, "DELETE": delete_device}[request.method]
            return await fn(request)

        return [
            Route("/api/devices", endpoint(list_devices), methods=["GET"]),
            Route("/api/devices/{device_id}/credentials", endpoint(credentials), methods=["GET"]),
            Route("/api/deviceTemplates/{template_id}", endpoint(template), methods=["GET"]),
            Route("/api/organizations/{org_id}", endpoint(organization), methods=["GET"]),
            Route("/api/devices/{device_id}", self._split(endpoint(device), endpoint(device, write=True)),
                  methods=["GET", "PUT", "PATCH", "DELETE"]),
        ]

    @staticmethod
    def _split(read, write):
        async def handler(request: Request) -> Response:
            return await (read if request.method == "GET" else write)(request)
        return handler
