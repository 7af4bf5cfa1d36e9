# -*- coding: utf-8 -*-
# Copyright: fleet.azure_iot contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""PRIVATE to fleet.azure_iot: credentials for the IoT Hub and IoT Central data planes.

- SAS: a service token signed from a shared access policy connection string (iot-api.md §7.2).
- Entra ID: azure-identity's DefaultAzureCredential, imported only when this mode is used (§7.3).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import time
import urllib.parse

from ansible_collections.fleet.azure_iot.plugins.module_utils._errors import AuthError

IOTHUB_SCOPE = "https://iothubs.azure.net/.default"
IOTCENTRAL_SCOPE = "https://apps.azureiotcentral.com/.default"
DPS_SCOPE = "https://azure-devices-provisioning.net/.default"  # the DPS data plane (iot-api-2.md §4.6)
SAS_TTL_SECONDS = 3600
RENEW_BEFORE_SECONDS = 300
CONNECTION_STRING_KEYS = ("HostName", "SharedAccessKeyName", "SharedAccessKey", "SharedAccessSignature",
                          "DeviceId", "ModuleId", "GatewayHostName")


def decode_key(value: str, option: str) -> bytes:
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise AuthError(f"{option}: SharedAccessKey is not valid base64; copy the policy's key again "
                        "(Azure portal: IoT Hub > Shared access policies)") from None
    if not raw:
        raise AuthError(f"{option}: SharedAccessKey is empty")
    return raw


def parse_connection_string(value: str, option: str = "connection_string") -> dict:
    """Parse 'HostName=...;SharedAccessKeyName=...;SharedAccessKey=...' (the SDKs' rules, §7.1)."""
    if not value or not isinstance(value, str):
        raise AuthError(f"{option} is empty")
    parts = {}
    for segment in value.strip().strip(";").split(";"):
        name, sep, val = segment.partition("=")
        name = name.strip()
        if not sep or not name:
            raise AuthError(f"{option} is malformed: expected 'Name=value' pairs separated by ';' "
                            "like 'HostName=<hub>.azure-devices.net;SharedAccessKeyName=<policy>;SharedAccessKey=<key>'")
        if name not in CONNECTION_STRING_KEYS:
            raise AuthError(f"{option} has an unknown part {name!r}; allowed: {', '.join(CONNECTION_STRING_KEYS)}")
        parts[name] = val.strip()
    if "DeviceId" in parts:
        raise AuthError(f"{option} is a device connection string; use a shared access policy connection string "
                        "(with SharedAccessKeyName, e.g. iothubowner or registryReadWrite)")
    missing = [k for k in ("HostName", "SharedAccessKeyName", "SharedAccessKey") if not parts.get(k)]
    if missing:
        raise AuthError(f"{option} lacks {', '.join(missing)}")
    decode_key(parts["SharedAccessKey"], option)
    return parts


def derive_device_key(group_key: str, registration_id: str) -> str:
    """The device key of a symmetric-key enrollment group's member: base64(HMAC-SHA256(base64decode(group key),
    UTF-8 registration id)) (iot-api-2.md §4.7, as the DPS docs and the CLI compute it)."""
    digest = hmac.new(decode_key(group_key, "group_key"), registration_id.encode("utf-8"), hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def sas_token(resource: str, key_name, key: str, expiry: int) -> str:
    """SharedAccessSignature for RESOURCE (the hub host, or ``<host>/devices/<id>`` for a device), as the SDKs sign
    it (sr = quote_plus(resource)); ``skn`` only for a policy key (KEY_NAME), not for a device or module key."""
    sr = urllib.parse.quote_plus(resource)
    digest = hmac.new(base64.b64decode(key), f"{sr}\n{expiry}".encode("utf-8"), hashlib.sha256).digest()
    sig = urllib.parse.quote(base64.b64encode(digest).decode("ascii"), safe="")
    token = f"SharedAccessSignature sr={sr}&sig={sig}&se={expiry}"
    return token + (f"&skn={urllib.parse.quote(key_name, safe='')}" if key_name else "")


class SasCredential:
    """Signs a fresh token when the current one is within RENEW_BEFORE_SECONDS of expiring."""

    def __init__(self, host: str, key_name: str, key: str, clock=time.time):
        self.host, self.key_name, self.key, self.clock = host, key_name, key, clock
        self._token, self._expiry = None, 0

    def header(self) -> str:
        now = self.clock()
        if self._token is None or self._expiry - now < RENEW_BEFORE_SECONDS:
            self._expiry = int(now) + SAS_TTL_SECONDS
            self._token = sas_token(self.host, self.key_name, self.key, self._expiry)
        return self._token


# AWX's built-in "Microsoft Azure Resource Manager" credential injects these names; azure-identity reads the others.
AWX_AZURE_RM_NAMES = {"AZURE_SECRET": "AZURE_CLIENT_SECRET", "AZURE_TENANT": "AZURE_TENANT_ID"}


def azure_environment(environ=None) -> list:
    """Make the environment what azure-identity should see, and return the AZURE_* names that were found empty.

    AWX injects the fields a credential leaves unset as empty strings: an empty value is unset here (azure-identity
    would refuse ``AZURE_CLIENT_ID=""`` with "client_id should be the id of a Microsoft Entra application", and a
    managed identity needs no client id at all).  The names of AWX's built-in Azure Resource Manager credential
    (``AZURE_SECRET``, ``AZURE_TENANT``; ``AZURE_CLIENT_ID`` is the same) fill the standard ones when those are unset,
    so that no custom credential type is needed for Entra ID."""
    environ = os.environ if environ is None else environ
    empty = sorted(name for name, value in environ.items() if name.startswith("AZURE_") and not value.strip())
    for name in empty:
        del environ[name]
    for awx, standard in AWX_AZURE_RM_NAMES.items():
        if environ.get(awx) and not environ.get(standard):
            environ[standard] = environ[awx]
    return empty


class EntraCredential:
    """Bearer tokens from azure-identity's DefaultAzureCredential (environment, managed identity, Azure CLI...)."""

    def __init__(self, scope: str):
        try:
            from azure.identity import DefaultAzureCredential  # imported only for Entra ID (keeps start-up light)
        except ImportError as exc:
            raise AuthError("auth_mode=entra needs the azure-identity Python package on the host that runs the "
                            f"task: pip install azure-identity ({exc})") from None
        self.scope = scope
        empty = azure_environment()
        try:
            self._credential = DefaultAzureCredential()
        except ValueError as exc:  # a malformed AZURE_* value: name what was looked at
            raise AuthError(f"Entra ID: the AZURE_* environment cannot be used ({exc}); AZURE_CLIENT_ID, "
                            "AZURE_TENANT_ID and AZURE_CLIENT_SECRET (or AWX's AZURE_SECRET and AZURE_TENANT) are "
                            "read" + (f", and {', '.join(empty)} were empty (treated as unset)" if empty else ""))
        self._token = None
        self._token = None

    def header(self) -> str:
        if self._token is None or self._token.expires_on - time.time() < RENEW_BEFORE_SECONDS:
            try:
                self._token = self._credential.get_token(self.scope)
            except Exception as exc:  # azure-identity raises ClientAuthenticationError and friends
                raise AuthError(f"Entra ID: could not get a token for {self.scope}: {exc}") from None
        return f"Bearer {self._token.token}"


class StaticCredential:
    """A fixed Authorization header value (IoT Central API tokens)."""

    def __init__(self, value: str):
        self.value = value

    def header(self) -> str:
        return self.value
