# -*- coding: utf-8 -*-
# Copyright: fleet.azure_iot contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""PRIVATE to fleet.azure_iot: the IoT Central client (REST api-version 2022-07-31, iot-api.md §8) on the shared
HTTP layer (retries, error envelopes).  The device resource is in ``_resource_central_device``."""

from __future__ import annotations

import urllib.parse
from typing import Any, Dict, List, Optional

from ansible.module_utils.basic import env_fallback

from ansible_collections.fleet.azure_iot.plugins.module_utils._auth import (
    EntraCredential,
    IOTCENTRAL_SCOPE,
    StaticCredential,
)
from ansible_collections.fleet.azure_iot.plugins.module_utils._errors import AuthError, IoTApiError
from ansible_collections.fleet.azure_iot.plugins.module_utils._client import RestClient, q, retry_policy
from ansible_collections.fleet.azure_iot.plugins.module_utils._http import HttpClient, tls_verify

API_VERSION = "2022-07-31"

CENTRAL_ARGS = dict(
    app_subdomain=dict(type="str"),
    base_domain=dict(type="str", default="azureiotcentral.com"),
    app_url=dict(type="str", fallback=(env_fallback, ["IOTCENTRAL_APP_URL"])),
    api_token=dict(type="str", no_log=True, fallback=(env_fallback, ["IOTCENTRAL_API_TOKEN"])),
    auth_mode=dict(type="str", choices=["token", "entra"]),
    ca_path=dict(type="path", fallback=(env_fallback, ["IOTCENTRAL_CA_PATH"])),
    validate_certs=dict(type="bool", default=True),
)


class CentralClient(RestClient):
    """IoT Central's device REST API on the shared client base (``read``: 404 -> None)."""

    @staticmethod
    def _path(device_id: str, suffix: str = "") -> str:
        return f"/api/devices/{q(device_id)}{suffix}"

    def get(self, device_id: str) -> Optional[Dict[str, Any]]:
        return self.read(self._path(device_id), f"GET Central device {device_id!r}")

    def list(self) -> List[Dict[str, Any]]:
        out, url = [], None
        while True:
            body = self.read("/api/devices", "list Central devices", url=url)
            if body is None:
                raise IoTApiError("list Central devices: HTTP 404", 404)
            out += body.get("value") or []
            url = body.get("nextLink")
            if not url:
                return out

    def check_references(self, plan) -> None:
        """Before a write: the template and organization it sets must exist in the application (so bad input
        is refused without a write)."""
        if plan.action not in ("create", "update"):
            return
        template = (plan.body or {}).get("template")
        checks = [("deviceTemplates", template, "template")] if template else []
        checks += [("organizations", org, "organizations") for org in (plan.body or {}).get("organizations") or []]
        for kind, ref, option in checks:
            if self.read(f"/api/{kind}/{q(ref)}", f"GET {kind} {ref!r}") is None:
                raise IoTApiError(f"{option}: {ref!r} does not exist in this IoT Central application; create it "
                                  "there first or fix the id", 404, "NotFound")

    def credentials(self, device_id: str) -> Dict[str, Any]:
        what = f"GET credentials of {device_id!r}"
        body = self.read(self._path(device_id, "/credentials"), what)
        if body is None:
            raise IoTApiError(f"{what}: HTTP 404", 404, "DeviceNotFound")
        return body

    def write(self, plan):
        """PUT (create: the same body repeated is harmless), PATCH with the etag (conditional), DELETE."""
        path = self._path(plan.device_id)
        if plan.action == "create":
            return self.send("PUT", path, f"create {plan.device_id!r}", body=plan.body)
        if plan.action == "update":
            return self.send("PATCH", path, f"update {plan.device_id!r}", body=plan.body,
                             headers={"Content-Type": "application/merge-patch+json"})
        return self.send("DELETE", path, f"delete {plan.device_id!r}")


def build_central_client(params: dict, warn=None) -> CentralClient:
    """Validate the connection options (before any request) and build the client."""
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
                      timeout=params["timeout"], policy=retry_policy(params), service="IoT Central",
                      origin="app_url (or IOTCENTRAL_APP_URL) / app_subdomain")
    return CentralClient(http, parsed.netloc)
