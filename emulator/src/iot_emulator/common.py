"""What every service area of the emulator shares: the service's formats (etags, timestamps, keys), If-Match
comparison, id and key rules.  No state here: each area owns its own (devices, twins, modules, ...)."""

from __future__ import annotations

import base64
import binascii
import copy
import datetime as _dt
import json
import re
import secrets
import time
from typing import Any

from .errors import ApiError, bad_request

DEVICE_ID_RE = re.compile(r"^[A-Za-z0-9\-:.+%_#*?!(),=@;$']{1,128}$")  # §6, C# s_deviceIdRegex

THUMBPRINT_RE = re.compile(r"^(?:[0-9A-Fa-f]{40}|[0-9A-Fa-f]{64})$")  # §1.3, C# X509ThumbprintExtensions

EDGE_SCOPE_PREFIX = "ms-azure-iot-edge://"  # §5

NEVER = "0001-01-01T00:00:00Z"  # §1.3

MAX_EDGE_DEPTH = 5  # §5, IoT Edge limits (registry enforcement is a CHOICE)

STATUS_REASON_MAX = 128  # §6 (enforcement is a CHOICE)

AUTH_TYPES = ("sas", "selfSigned", "certificateAuthority", "none")


def now_iso(t: float | None = None) -> str:
    """UTC time with 7 fractional digits and Z, as the service writes it (§1.3)."""
    t = time.time() if t is None else t
    dt = _dt.datetime.fromtimestamp(t, tz=_dt.timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond:06d}0Z"


def dotnet_ticks(t: float | None = None) -> str:
    """generationId: .NET DateTime ticks of the creation time (§1.3)."""
    t = time.time() if t is None else t
    return str(int((t + 62135596800) * 10_000_000))


def etag_of(counter: int) -> str:
    """Identity etag: base64 of the ASCII decimal counter (§1.3)."""
    return base64.b64encode(str(counter).encode()).decode()


def twin_etag_of(counter: int) -> str:
    """Twin etag: base64 of an 8-byte big-endian integer (§3.2)."""
    return base64.b64encode(counter.to_bytes(8, "big")).decode()


def new_key() -> str:
    return base64.b64encode(secrets.token_bytes(32)).decode()


def etag_matches(if_match: str, etag: str) -> bool:
    """If-Match compare: quoted or unquoted, weak prefix tolerated (§1.1)."""
    value = if_match.strip()
    if value.startswith("W/"):
        value = value[2:]
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = value[1:-1]
    return value == etag


def is_wildcard(if_match: str) -> bool:
    return if_match.strip() in ("*", '"*"')


def validate_key(name: str, value: Any) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise bad_request(f"{name} must be a base64 string")
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise bad_request(f"{name} is not valid base64") from None
    if not 16 <= len(raw) <= 64:
        raise bad_request("The primary and secondary keys must be between 16 and 64 bytes in length.")
    return value


def validate_thumbprint(name: str, value: Any) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not THUMBPRINT_RE.match(value):
        raise bad_request(f"{name} must be 40 or 64 hexadecimal characters")
    return value


def with_new_keys(existing: dict, which: tuple, what: str) -> dict:
    """A copy of a SAS identity (device or module) with new keys in WHICH ("primaryKey", "secondaryKey")."""
    if existing["authentication"]["type"] != "sas":
        raise ApiError(400, "InvalidAuthenticationType", f"{what} does not use symmetric keys")
    record = copy.deepcopy(existing)
    for k in which:
        record["authentication"]["symmetricKey"][k] = new_key()
    return record


def rotated_keys_answer(record: dict, which: tuple) -> dict:
    """The keys part of a keys/regenerate answer: only the rotated keys, the other one null."""
    keys = record["authentication"]["symmetricKey"]
    return {"primaryKey": keys["primaryKey"] if "primaryKey" in which else None,
            "secondaryKey": keys["secondaryKey"] if "secondaryKey" in which else None, "etag": record["etag"]}


SECRET_NAME_WORDS = ("password", "passwd", "secret", "token", "key", "credential")


def _secret_named(name: str) -> bool:
    low = name.lower()
    return any(w in low for w in SECRET_NAME_WORDS) and not low.endswith(("name", "keyname"))


def document_secrets(doc: Any) -> list:
    """Secrets stored inside documents (deployment manifests, configuration content, desired properties), for the
    test harness's leak scan: the strings under a name that says password/secret/token/key (an env entry's
    ``value`` too), and ``NAME=value`` lines with such a name.  The emulator's own reading, written apart from the
    collection's masking so that it judges it."""
    out: list = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                if isinstance(k, str) and _secret_named(k):
                    if isinstance(v, str):
                        out.append(v)
                    elif isinstance(v, dict) and isinstance(v.get("value"), str):
                        out.append(v["value"])
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)
        elif isinstance(node, str):
            text = node.strip()
            if text.startswith("{"):
                try:
                    walk(json.loads(text))
                except ValueError:
                    pass
            name, eq, value = node.partition("=")
            if eq and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name) and _secret_named(name):
                out.append(value)
    walk(doc)
    return [v for v in out if len(v) >= 8]  # short values (placeholders, flags) would match everywhere
