# -*- coding: utf-8 -*-
# Copyright: fleet.azure_iot contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""PRIVATE to fleet.azure_iot: the declared state (pydantic models of the options) and the service's limits.

``DeviceSpec`` and ``ModuleSpec`` validate user input before any request; their field names are the modules'
option names, so every error names the option.  The service's objects stay plain dicts (camelCase, as the hub
returns them), so that a read-modify-write echoes everything the service returned, and no model is built for
them on the hot path.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any, Dict, Literal, Optional

from ansible_collections.fleet.azure_iot.plugins.module_utils._deps import (
    BaseModel,
    ConfigDict,
    ValidationError,
    field_validator,
    model_validator,
)

DEVICE_ID_RE = re.compile(r"^[A-Za-z0-9\-:.+%_#*?!(),=@;$']{1,128}$")
THUMBPRINT_RE = re.compile(r"^(?:[0-9A-Fa-f]{40}|[0-9A-Fa-f]{64})$")
EDGE_SCOPE_PREFIX = "ms-azure-iot-edge://"
STATUS_REASON_MAX = 128
MAX_EDGE_DEPTH = 5  # IoT Edge: at most five layers of edge devices (iot-api.md §5)
AUTH_TYPES = {"sas": "sas", "self_signed": "selfSigned", "certificate_authority": "certificateAuthority", "none": "none"}
AUTH_TYPES_BACK = {v: k for k, v in AUTH_TYPES.items()}
ID_RULE = ("up to 128 characters: ASCII letters, digits and - : . + % _ # * ? ! ( ) , = @ ; $ '")


# Twin limits (iot-api-2.md §6.4, ~2019-2021 docs and the swagger): keys up to 1 KB without '.', '$', space and
# control characters; string values up to 4 KB; objects nested at most 10 deep below the section; tags 8 KB and
# desired properties 32 KB, counted as keys + values (numbers 8, booleans 4, strings by their characters).
TWIN_KEY_MAX_BYTES = 1024
TWIN_STRING_MAX_BYTES = 4096
TWIN_MAX_DEPTH = 10
TWIN_SECTION_LIMITS = {"tags": 8 * 1024, "desired_properties": 32 * 1024}


def _control(c: str) -> bool:
    return ord(c) < 32 or 0x7F <= ord(c) <= 0x9F


def section_size(value: Any) -> int:
    """A twin section's size as IoT Hub counts it."""
    if isinstance(value, dict):
        return sum(len(k) + section_size(v) for k, v in value.items())
    if isinstance(value, list):
        return sum(section_size(v) for v in value)
    if isinstance(value, bool):
        return 4
    if isinstance(value, (int, float)):
        return 8
    if isinstance(value, str):
        return sum(1 for c in value if not _control(c))
    return 0


def check_twin_section(value: Optional[Dict[str, Any]], option: str) -> Optional[Dict[str, Any]]:
    """Declared tags / desired properties within the service's limits (a null value means "remove the key")."""
    if value is None:
        return None

    def walk(node: Any, path: str, depth: int) -> None:
        if isinstance(node, dict):
            if depth > TWIN_MAX_DEPTH:
                raise ValueError(f"{path} nests objects deeper than {TWIN_MAX_DEPTH} levels (IoT Hub's limit)")
            for key, sub in node.items():
                if (not isinstance(key, str) or not key or any(c in key for c in ".$ ") or any(_control(c) for c in key)
                        or len(key.encode("utf-8")) > TWIN_KEY_MAX_BYTES):
                    raise ValueError(f"key {key!r} is not allowed: twin keys are 1 to {TWIN_KEY_MAX_BYTES} bytes and "
                                     "exclude '.', '$', spaces and control characters")
                walk(sub, f"{path}.{key}" if path else key, depth + 1)
        elif isinstance(node, str) and len(node.encode("utf-8")) > TWIN_STRING_MAX_BYTES:
            raise ValueError(f"the value of {path} is {len(node.encode('utf-8'))} bytes; IoT Hub allows string values "
                             f"of at most {TWIN_STRING_MAX_BYTES}")
        elif isinstance(node, list):
            for item in node:
                if item is None:
                    raise ValueError(f"{path} holds null inside a list; IoT Hub refuses it")
                walk(item, path, depth)
    walk(value, "", 0)
    size = section_size(value)
    if size > TWIN_SECTION_LIMITS[option]:
        raise ValueError(f"is {size} bytes; IoT Hub allows at most {TWIN_SECTION_LIMITS[option]} for {option}")
    return value


def check_device_id(value: str, option: str = "device_id") -> str:
    if not isinstance(value, str) or not DEVICE_ID_RE.match(value):
        raise ValueError(f"{option} {value!r} is not a valid IoT Hub device id: {ID_RULE}")
    return value


def check_key(value: Optional[str]) -> Optional[str]:
    if value is None:
        return None
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("must be base64 (for example the output of 'openssl rand -base64 32')") from None
    if not 16 <= len(raw) <= 64:
        raise ValueError(f"must decode to 16 to 64 bytes, not {len(raw)} (use 'openssl rand -base64 32')")
    return value


def planned_scope(device_id: str) -> str:
    """The stand-in scope check mode plans with for an edge device that does not exist yet."""
    return f"{EDGE_SCOPE_PREFIX}{device_id}-planned"


def is_planned_scope(scope: Optional[str]) -> bool:
    return bool(scope) and scope.startswith(EDGE_SCOPE_PREFIX) and scope.endswith("-planned")


def parent_id_of_scope(scope: Optional[str]) -> Optional[str]:
    """Best-effort device id from an edge scope, for display only (scopes are opaque, iot-api.md §5)."""
    if not scope:
        return None
    if scope.startswith(EDGE_SCOPE_PREFIX) and "-" in scope[len(EDGE_SCOPE_PREFIX):]:
        return scope[len(EDGE_SCOPE_PREFIX):scope.rindex("-")]
    return scope


# --------------------------------------------------------------------------- desired state (option names)
class _IdentitySpec(BaseModel):
    """What a device and a module identity share: authentication, twin content, state.  ``None`` means "not
    managed: keep what the hub has"."""

    # Built on first use, not at import: a task validates one kind of identity, and building every model's
    # validator at import time cost each task about 25 ms.
    model_config = ConfigDict(extra="forbid", defer_build=True)

    device_id: str
    state: Literal["present", "absent"] = "present"
    auth_type: Optional[Literal["sas", "self_signed", "certificate_authority", "none"]] = None
    primary_key: Optional[str] = None
    secondary_key: Optional[str] = None
    primary_thumbprint: Optional[str] = None
    secondary_thumbprint: Optional[str] = None
    tags: Optional[Dict[str, Any]] = None
    desired_properties: Optional[Dict[str, Any]] = None
    rotate_keys: Optional[Literal["primary", "secondary", "swap"]] = None

    @field_validator("device_id")
    @classmethod
    def _device_id(cls, v):
        return check_device_id(v)

    @field_validator("primary_key", "secondary_key")
    @classmethod
    def _keys(cls, v):
        return check_key(v)

    @field_validator("primary_thumbprint", "secondary_thumbprint")
    @classmethod
    def _thumbprints(cls, v):
        if v is None:
            return None
        if not THUMBPRINT_RE.match(v):
            raise ValueError("must be 40 (SHA-1) or 64 (SHA-256) hexadecimal digits, without colons or spaces")
        return v.upper()

    @field_validator("tags", "desired_properties")
    @classmethod
    def _twin_doc(cls, v, info):
        return check_twin_section(v, info.field_name)

    @model_validator(mode="after")
    def _auth_rules(self):
        has_keys = self.primary_key is not None or self.secondary_key is not None
        has_tp = self.primary_thumbprint is not None or self.secondary_thumbprint is not None
        if has_keys and has_tp:
            raise ValueError("primary_key/secondary_key and primary_thumbprint/secondary_thumbprint are mutually "
                             "exclusive: an identity authenticates with SAS keys or with x509 thumbprints")
        if self.auth_type in ("self_signed", "certificate_authority", "none") and has_keys:
            raise ValueError(f"auth_type={self.auth_type} takes no primary_key/secondary_key; use auth_type=sas")
        if self.auth_type in ("sas", "certificate_authority", "none") and has_tp:
            raise ValueError(f"auth_type={self.auth_type} takes no thumbprints; use auth_type=self_signed")
        if self.rotate_keys is not None:
            if has_keys or has_tp:
                raise ValueError("rotate_keys generates new keys: it cannot be combined with primary_key, "
                                 "secondary_key or thumbprints")
            if self.auth_type not in (None, "sas"):
                raise ValueError(f"rotate_keys rotates SAS keys; auth_type={self.auth_type} has none")
            if self.state == "absent":
                raise ValueError("rotate_keys cannot be combined with state=absent")
        return self

    @property
    def wanted_auth_type(self) -> Optional[str]:
        """The API auth type the options ask for, or None when they leave it to the hub."""
        if self.auth_type:
            return AUTH_TYPES[self.auth_type]
        if self.primary_key is not None or self.secondary_key is not None:
            return "sas"
        if self.primary_thumbprint is not None or self.secondary_thumbprint is not None:
            return "selfSigned"
        return None


class DeviceSpec(_IdentitySpec):
    """What the user declares for one device."""

    status: Optional[Literal["enabled", "disabled"]] = None
    status_reason: Optional[str] = None
    edge_enabled: Optional[bool] = None
    parent: Optional[str] = None

    @field_validator("parent")
    @classmethod
    def _parent(cls, v):
        if v in (None, ""):
            return v
        return check_device_id(v, "parent")

    @field_validator("status_reason")
    @classmethod
    def _status_reason(cls, v):
        if v is not None and len(v) > STATUS_REASON_MAX:
            raise ValueError(f"is {len(v)} characters long; IoT Hub allows at most {STATUS_REASON_MAX}")
        return v

    @model_validator(mode="after")
    def _device_rules(self):
        if self.parent and self.parent == self.device_id:
            raise ValueError("parent: a device cannot be its own parent")
        return self


class ModuleSpec(_IdentitySpec):
    """What the user declares for one module identity (iot-api-2.md §1)."""

    module_id: str

    @field_validator("module_id")
    @classmethod
    def _module_id(cls, v):
        if isinstance(v, str) and v.startswith("$"):
            raise ValueError(f"{v!r}: module ids starting with '$' belong to the IoT Edge runtime ($edgeAgent, "
                             "$edgeHub); IoT Hub refuses them. Their twins are managed with iothub_edge_modules")
        return check_device_id(v, "module_id")

    @model_validator(mode="after")
    def _module_rules(self):
        if self.auth_type == "none":
            raise ValueError("auth_type=none: IoT Hub gives every module identity credentials (it turns none into "
                             "sas); use sas, self_signed or certificate_authority")
        return self


def format_validation_error(exc: ValidationError, prefix: str = "") -> str:
    """One line per problem, each naming the option; never echoes the rejected value (it may be a key)."""
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err.get("loc", ()) if p != "__root__")
        msg = err.get("msg", "invalid")
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, "):]
        if err.get("type") == "extra_forbidden":
            msg = "is not a known option"
        elif err.get("type") == "literal_error":
            msg = "must be one of " + str(err.get("ctx", {}).get("expected", ""))
        name = f"{prefix}{loc}" if loc else prefix.rstrip(".")
        if name and not msg.startswith(loc or "\0"):
            lines.append(f"{name}: {msg}")
        else:
            lines.append(msg)
    return "; ".join(lines)
