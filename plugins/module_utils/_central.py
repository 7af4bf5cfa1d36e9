# -*- coding: utf-8 -*-
# Copyright: fleet.azure_iot contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""PRIVATE to fleet.azure_iot: IoT Central devices (REST api-version 2022-07-31, iot-api.md §8).

Reuses the shared HTTP client (retries, error envelopes) and follows the same read -> plan -> write shape as
the IoT Hub modules.  Central has no If-Match: concurrency rides on the ``etag`` field of the body, so an
update is a JSON merge PATCH of only the changed fields plus the etag read, never a blind PUT (which would
replace the whole device: re-enable it, rename it).
"""

from __future__ import annotations

import copy
import re
import urllib.parse
from dataclasses import dataclass, field
from typing import Any, Dict, List, Literal, Optional

from ansible.module_utils.basic import env_fallback

from ansible_collections.fleet.azure_iot.plugins.module_utils._auth import (
    IOTCENTRAL_SCOPE,
    AuthError,
    EntraCredential,
    StaticCredential,
)
from ansible_collections.fleet.azure_iot.plugins.module_utils._deps import BaseModel, ConfigDict, field_validator
from ansible_collections.fleet.azure_iot.plugins.module_utils._http import (
    HttpClient,
    IoTApiError,
    error_from_response,
    maybe_applied,
    tls_verify,
)
from ansible_collections.fleet.azure_iot.plugins.module_utils._resource import Converged, Resource, Written, converge

API_VERSION = "2022-07-31"
DEVICE_ID_RE = re.compile(r"^[a-z0-9._:-]{1,128}$")
FIELDS = {"display_name": "displayName", "template": "template", "simulated": "simulated", "enabled": "enabled",
          "organizations": "organizations"}

CENTRAL_ARGS = dict(
    app_subdomain=dict(type="str"),
    base_domain=dict(type="str", default="azureiotcentral.com"),
    app_url=dict(type="str", fallback=(env_fallback, ["IOTCENTRAL_APP_URL"])),
    api_token=dict(type="str", no_log=True, fallback=(env_fallback, ["IOTCENTRAL_API_TOKEN"])),
    auth_mode=dict(type="str", choices=["token", "entra"]),
    ca_path=dict(type="path", fallback=(env_fallback, ["IOTCENTRAL_CA_PATH"])),
    validate_certs=dict(type="bool", default=True),
)


class CentralSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    device_id: str
    state: Literal["present", "absent"] = "present"
    display_name: Optional[str] = None
    template: Optional[str] = None
    simulated: Optional[bool] = None
    enabled: Optional[bool] = None
    organizations: Optional[List[str]] = None

    @field_validator("device_id")
    @classmethod
    def _id(cls, v):
        if not DEVICE_ID_RE.match(v or ""):
            raise ValueError(f"{v!r} is not a valid IoT Central device id: up to 128 lowercase letters, digits, "
                             "'-', '.', '_' or ':'")
        return v

    @field_validator("organizations")
    @classmethod
    def _orgs(cls, v):
        if v is not None and len(v) > 1:
            raise ValueError("IoT Central supports one organization per device")
        return v


@dataclass
class CentralPlan:
    device_id: str
    action: str  # create | update | delete | none
    changes: Dict[str, tuple] = field(default_factory=dict)
    body: Optional[Dict[str, Any]] = None
    before: Optional[Dict[str, Any]] = None
    after: Optional[Dict[str, Any]] = None


def central_view(device: Optional[Dict[str, Any]]) -> Optional[Dict[str, Any]]:
    if device is None:
        return None
    return {"display_name": device.get("displayName"), "template": device.get("template"),
            "simulated": bool(device.get("simulated", False)), "enabled": bool(device.get("enabled", True)),
            "organizations": sorted(device.get("organizations") or [])}


def plan_central(spec: CentralSpec, current: Optional[Dict[str, Any]]) -> CentralPlan:
    """The pure plan: desired + current -> create (full PUT body) / update (merge patch of the changed fields
    with the etag read) / delete / none."""
    before = central_view(current)
    if spec.state == "absent":
        if current is None:
            return CentralPlan(spec.device_id, "none")
        return CentralPlan(spec.device_id, "delete", {f: (before[f], None) for f in FIELDS}, None, before, None)
    wanted = {"display_name": spec.display_name, "template": spec.template, "simulated": spec.simulated,
              "enabled": spec.enabled, "organizations": sorted(spec.organizations) if spec.organizations is not None else None}
    if current is None:
        after = {"display_name": spec.display_name or spec.device_id, "template": spec.template,
                 "simulated": bool(spec.simulated), "enabled": True if spec.enabled is None else spec.enabled,
                 "organizations": sorted(spec.organizations or [])}
        body = {FIELDS[k]: v for k, v in after.items() if v is not None and not (k == "organizations" and not v)}
        changes = {k: (None, v) for k, v in after.items() if v not in (None, [])}
        return CentralPlan(spec.device_id, "create", changes, body, None, after)
    after = dict(before)
    changes = {}
    for key, value in wanted.items():
        if value is not None and value != before[key]:
            changes[key] = (before[key], value)
            after[key] = value
    if not changes:
        return CentralPlan(spec.device_id, "none", {}, None, before, before)
    body = {FIELDS[k]: copy.deepcopy(v[1]) for k, v in changes.items()}
    body["etag"] = current.get("etag")
    return CentralPlan(spec.device_id, "update", changes, body, before, after)


class CentralClient:
    def __init__(self, http: HttpClient):
        self.http = http
        self.reads = 0
        self.writes = 0

    def _path(self, device_id: str, suffix: str = "") -> str:
        return f"/api/devices/{urllib.parse.quote(device_id, safe='')}{suffix}"

    def get(self, device_id: str) -> Optional[Dict[str, Any]]:
        r = self.http.request("GET", self._path(device_id), safe=True, what=f"GET Central device {device_id!r}")
        self.reads += 1
        if r.status_code == 404:
            return None
        if r.status_code != 200:
            raise error_from_response(r, f"GET Central device {device_id!r}")
        return r.json()

    def list(self) -> List[Dict[str, Any]]:
        out, url = [], None
        while True:
            r = self.http.request("GET", "/api/devices", url=url, safe=True, what="list Central devices")
            self.reads += 1
            if r.status_code != 200:
                raise error_from_response(r, "list Central devices")
            body = r.json()
            out += body.get("value") or []
            url = body.get("nextLink")
            if not url:
                return out

    def check_references(self, plan: "CentralPlan") -> None:
        """Before a write: the template and organization it sets must exist in the application (so bad input
        is refused without a write)."""
        if plan.action not in ("create", "update"):
            return
        template = (plan.body or {}).get("template")
        checks = [("deviceTemplates", template, "template")] if template else []
        checks += [("organizations", org, "organizations") for org in (plan.body or {}).get("organizations") or []]
        for kind, ref, option in checks:
            r = self.http.request("GET", f"/api/{kind}/{urllib.parse.quote(ref, safe='')}", safe=True,
                                  what=f"GET {kind} {ref!r}")
            self.reads += 1
            if r.status_code == 404:
                raise IoTApiError(f"{option}: {ref!r} does not exist in this IoT Central application; create it "
                                  "there first or fix the id", 404, "NotFound")
            if r.status_code != 200:
                raise error_from_response(r, f"GET {kind} {ref!r}")

    def credentials(self, device_id: str) -> Dict[str, Any]:
        r = self.http.request("GET", self._path(device_id, "/credentials"), safe=True,
                              what=f"GET credentials of {device_id!r}")
        self.reads += 1
        if r.status_code != 200:
            raise error_from_response(r, f"GET credentials of {device_id!r}")
        return r.json()

    def write(self, plan: CentralPlan):
        """PUT (create: the same body repeated is harmless), PATCH with the etag (conditional), DELETE."""
        self.writes += 1
        path = self._path(plan.device_id)
        if plan.action == "create":
            return self.http.request("PUT", path, json_body=plan.body, safe=True, what=f"create {plan.device_id!r}")
        if plan.action == "update":
            return self.http.request("PATCH", path, json_body=plan.body, safe=True, what=f"update {plan.device_id!r}",
                                     headers={"Content-Type": "application/merge-patch+json"})
        return self.http.request("DELETE", path, safe=True, what=f"delete {plan.device_id!r}")


def build_central_client(params: dict, policy, warn=None) -> CentralClient:
    url, sub = params.get("app_url"), params.get("app_subdomain")
    if sub:  # an explicit subdomain wins over an app_url (which may come from the environment)
        url = f"https://{sub}.{params['base_domain'].strip('.')}"
    if not url:
        raise AuthError("No IoT Central application: set app_subdomain (and base_domain for other clouds) or "
                        "app_url (or IOTCENTRAL_APP_URL)")
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme != "https" or not parsed.netloc:
        raise AuthError(f"app_url {url!r} must be an https:// URL such as https://myapp.azureiotcentral.com")
    mode = params.get("auth_mode") or ("token" if params.get("api_token") else "entra")
    if mode == "token":
        token = params.get("api_token")
        if not token:
            raise AuthError("auth_mode=token needs api_token (or IOTCENTRAL_API_TOKEN)")
        if not token.startswith("SharedAccessSignature "):
            raise AuthError("api_token must be an IoT Central API token ('SharedAccessSignature sr=...&sig=...&skn=..."
                            "&se=...'), as created under Permissions > API tokens")
        credential = StaticCredential(token)
    else:
        credential = EntraCredential(IOTCENTRAL_SCOPE)
    verify = tls_verify(params["validate_certs"], params.get("ca_path"), "ca_path (or IOTCENTRAL_CA_PATH)", warn)
    http = HttpClient(f"{parsed.scheme}://{parsed.netloc}", credential, api_version=API_VERSION, verify=verify,
                      timeout=params["timeout"], policy=policy, service="IoT Central",
                      origin="app_url (or IOTCENTRAL_APP_URL) / app_subdomain")
    return CentralClient(http)


class CentralDeviceResource(Resource):
    """A Central device for ``converge``: GET, ``plan_central``, PUT / PATCH with the body etag / DELETE."""

    def __init__(self, client: CentralClient, spec: CentralSpec):
        self.client, self.spec = client, spec
        self.label = f"Central device {spec.device_id!r}"

    def read(self):
        return self.client.get(self.spec.device_id)

    def plan(self, current, pinned_etag):
        plan = plan_central(self.spec, current)
        if pinned_etag is not None and plan.body is not None and plan.action == "update":
            plan.body["etag"] = pinned_etag
        self.client.check_references(plan)
        return plan

    def write(self, plan) -> Written:
        r = self.client.write(plan)
        if r.status_code in (200, 201, 204):
            return Written(True, None if plan.action == "delete" else r.json(), r.status_code, maybe_applied(r))
        if r.status_code in (404, 412) or (r.status_code == 409 and plan.action == "create"):
            return Written(False, None, r.status_code, maybe_applied(r))
        raise error_from_response(r, f"{plan.action} Central device {self.spec.device_id!r}")

    def predict(self, current, plan):
        return None if plan.action == "delete" else _predict(current, plan)


def ensure_central_device(client: CentralClient, spec: CentralSpec, *, check_mode: bool,
                          pinned_etag: Optional[str] = None) -> Converged:
    return converge(CentralDeviceResource(client, spec), check_mode=check_mode, pinned_etag=pinned_etag,
                    state_present=spec.state == "present")


def _predict(current: Optional[Dict[str, Any]], plan: CentralPlan) -> Dict[str, Any]:
    out = dict(current or {"id": plan.device_id, "provisioned": False})
    for key, value in (plan.body or {}).items():
        if key != "etag":
            out[key] = value
    return out
