"""Authorization of service requests: SAS tokens signed with a shared access policy (iot-api.md §7.2), and
Entra ID bearer tokens in a test mode (§7.3, emulator choice: the JWT's audience and expiry are checked, its
signature is not, since no identity provider can be reached here)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from dataclasses import dataclass
from urllib.parse import unquote, unquote_plus

from .errors import unauthorized

CLOCK_SKEW_S = 300  # C# SharedAccessSignature.MaxClockSkew (§7.2)

# Default policies of a hub and their rights (§7.1).
DEFAULT_POLICIES = {
    "iothubowner": {"RegistryRead", "RegistryWrite", "ServiceConnect", "DeviceConnect"},
    "service": {"ServiceConnect"},
    "device": {"DeviceConnect"},
    "registryRead": {"RegistryRead"},
    "registryReadWrite": {"RegistryRead", "RegistryWrite"},
}

IOTHUB_AUDIENCES = ("https://iothubs.azure.net", "https://iothubs.azure.net/")


@dataclass
class Policy:
    name: str
    key: str
    rights: set


def sign(resource: str, key_b64: str, expiry: int) -> str:
    """HMAC-SHA256 over '<resource>\\n<expiry>' with the base64-decoded key (§7.2)."""
    digest = hmac.new(base64.b64decode(key_b64), f"{resource}\n{expiry}".encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def parse_sas(header: str) -> dict:
    scheme, _, rest = header.strip().partition(" ")
    if scheme != "SharedAccessSignature" or not rest:
        raise unauthorized("The Authorization header is not a SharedAccessSignature")
    fields = {}
    for part in rest.strip().split("&"):
        name, sep, value = part.partition("=")
        if not sep:
            raise unauthorized("Malformed SharedAccessSignature")
        fields[name.strip()] = value  # sr stays raw: the HMAC is over sr exactly as sent (§7.2)
    for required in ("sr", "sig", "se", "skn"):
        if required not in fields:
            raise unauthorized(f"SharedAccessSignature lacks {required}")
    return fields


class Authorizer:
    def __init__(self, policies: dict[str, Policy], hosts: list[str], entra_test_mode: bool = False,
                 audiences: tuple = IOTHUB_AUDIENCES):
        self.policies = policies
        self.hosts = [h.lower() for h in hosts]
        self.entra_test_mode = entra_test_mode
        self.audiences = audiences

    def _resource_ok(self, sr_raw: str, path: str) -> bool:
        # Python sends quote_plus(host), Node the raw host, C# WebUtility.UrlEncode (uppercase escapes).
        decoded = unquote_plus(sr_raw).lower().rstrip("/")
        for host in self.hosts:
            if decoded == host:
                return True
            if decoded.startswith(host + "/"):
                # A token scoped to part of the hub is good only at or below that part, by whole path segments:
                # a token for /devices/sas1 does not open /devices/sas10.
                sub = decoded[len(host):].rstrip("/")
                target = path.lower().rstrip("/")
                if target == sub or target.startswith(sub + "/"):
                    return True
        return False

    def check(self, header: str | None, path: str, right: str) -> str:
        """Raise 401 unless the header grants ``right``; return the principal's name."""
        if not header:
            raise unauthorized("The request has no Authorization header")
        if header.startswith("Bearer "):
            return self._check_bearer(header[7:].strip())
        f = parse_sas(header)
        try:
            expiry = int(f["se"])
        except ValueError:
            raise unauthorized("SharedAccessSignature se is not a number") from None
        if expiry + CLOCK_SKEW_S < time.time():
            raise unauthorized("The SharedAccessSignature has expired")
        policy = self.policies.get(unquote(f["skn"]))
        if policy is None:
            raise unauthorized(f"Unknown shared access policy {unquote(f['skn'])!r}")
        if not self._resource_ok(f["sr"], path):
            raise unauthorized("The SharedAccessSignature is for another resource")
        expected = sign(f["sr"], policy.key, expiry)
        if not hmac.compare_digest(expected, unquote(f["sig"])):
            raise unauthorized("The SharedAccessSignature signature does not match")
        if right not in policy.rights:
            raise unauthorized(f"Policy {policy.name!r} does not grant {right}")
        return policy.name

    def _check_bearer(self, token: str) -> str:
        if not self.entra_test_mode:
            raise unauthorized("Bearer tokens are accepted only with --entra-test-mode")
        payload, problem = check_test_jwt(token, self.audiences)
        if problem:
            raise unauthorized(problem)
        return str(payload.get("oid") or payload.get("sub") or "entra")


def check_test_jwt(token: str, audiences: tuple) -> tuple[dict, str | None]:
    """Entra ID test mode: (payload, None) when the JWT's audience is one of ``audiences`` and it has not
    expired, else ({}, why).  The signature is not verified (no identity provider is reachable offline)."""
    try:
        payload_b64 = token.split(".")[1]
        payload = json.loads(base64.urlsafe_b64decode(payload_b64 + "=" * (-len(payload_b64) % 4)))
    except (IndexError, ValueError, binascii.Error):
        return {}, "The bearer token is not a JWT"
    if not isinstance(payload, dict) or payload.get("aud") not in audiences:
        aud = payload.get("aud") if isinstance(payload, dict) else None
        return {}, f"The bearer token audience {aud!r} is not {audiences[0]}"
    if not isinstance(payload.get("exp"), (int, float)) or payload["exp"] + CLOCK_SKEW_S < time.time():
        return {}, "The bearer token has expired"
    return payload, None
