# -*- coding: utf-8 -*-
# Copyright: fleet.azure_iot contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The fleet.azure_iot.sas_token filter (documentation: sas_token.yml)."""

from __future__ import annotations

import time
import urllib.parse

from ansible.errors import AnsibleFilterError

from ansible_collections.fleet.azure_iot.plugins.module_utils._auth import decode_key, sas_token as _sign
from ansible_collections.fleet.azure_iot.plugins.module_utils._errors import AuthError

PARTS = ("HostName", "DeviceId", "ModuleId", "SharedAccessKey", "SharedAccessKeyName", "GatewayHostName")


def _parts(value: str) -> dict:
    out = {}
    for segment in value.strip().strip(";").split(";"):
        name, sep, val = segment.partition("=")
        if not sep or name.strip() not in PARTS:
            raise AnsibleFilterError("sas_token: the value is neither a key nor a connection string "
                                     "(HostName=...;DeviceId=...;SharedAccessKey=...)")
        out[name.strip()] = val.strip()
    return out


def sas_token(value, resource_uri=None, expiry=3600, key_name=None):
    """A SharedAccessSignature token, as ``az iot hub generate-sas-token`` makes it."""
    if not isinstance(value, str) or not value.strip():
        raise AnsibleFilterError("sas_token: give a device, module or policy connection string, or a key")
    try:
        seconds = int(expiry)
    except (TypeError, ValueError):
        raise AnsibleFilterError(f"sas_token: expiry must be a number of seconds, not {expiry!r}") from None
    if seconds <= 0:
        raise AnsibleFilterError("sas_token: expiry must be more than 0 seconds")
    if "HostName=" in value:
        parts = _parts(value)
        if not parts.get("HostName") or not parts.get("SharedAccessKey"):
            raise AnsibleFilterError("sas_token: the connection string lacks HostName or SharedAccessKey")
        key = parts["SharedAccessKey"]
        if resource_uri is None:
            resource_uri = parts["HostName"]
            if parts.get("DeviceId"):
                resource_uri += "/devices/" + urllib.parse.quote(parts["DeviceId"], safe="")
                if parts.get("ModuleId"):
                    resource_uri += "/modules/" + urllib.parse.quote(parts["ModuleId"], safe="")
        if key_name is None:
            key_name = parts.get("SharedAccessKeyName")
    else:
        key = value.strip()
        if not resource_uri:
            raise AnsibleFilterError("sas_token: with a key, resource_uri is required (for example "
                                     "myhub.azure-devices.net/devices/sensor-1)")
    try:
        decode_key(key, "the key")
    except AuthError as exc:
        raise AnsibleFilterError(f"sas_token: {exc}") from None
    return _sign(resource_uri, key_name, key, int(time.time()) + seconds)


class FilterModule:
    def filters(self):
        return {"sas_token": sas_token}
