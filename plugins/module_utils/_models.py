# -*- coding: utf-8 -*-
# Copyright: fleet.azure_iot contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""PRIVATE to fleet.azure_iot: the declared state (the options, checked) and the service's limits.

``DeviceSpec`` and ``ModuleSpec`` validate user input before any request; their field names are the modules'
option names, so every error names the option.  The service's objects stay plain dicts (camelCase, as the hub
returns them), so that a read-modify-write echoes everything the service returned, and no model is built for
them on the hot path.
"""

from __future__ import annotations

import base64
import binascii
import copy
import re
from typing import Any, Dict, List, Optional, Tuple

from ansible.module_utils.parsing.convert_bool import boolean

from ansible_collections.fleet.azure_iot.plugins.module_utils._errors import SpecError

DEVICE_ID_RE = re.compile(r"^[A-Za-z0-9\-:.+%_#*?!(),=@;$']{1,128}$")
THUMBPRINT_RE = re.compile(r"^(?:[0-9A-Fa-f]{40}|[0-9A-Fa-f]{64})$")
STATUS_REASON_MAX = 128
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


# --------------------------------------------------------------------------- desired state (option names)
REQUIRED = object()


def _check_thumbprint(value: str) -> str:
    if not THUMBPRINT_RE.match(value):
        raise ValueError("must be 40 (SHA-1) or 64 (SHA-256) hexadecimal digits, without colons or spaces")
    return value.upper()


def _check_status_reason(value: str) -> str:
    if len(value) > STATUS_REASON_MAX:
        raise ValueError(f"is {len(value)} characters long; IoT Hub allows at most {STATUS_REASON_MAX}")
    return value


def _check_parent(value: str) -> str:
    return value if value == "" else check_device_id(value, "parent")


def _check_module_id(value: str) -> str:
    if value.startswith("$"):
        raise ValueError(f"{value!r}: module ids starting with '$' belong to the IoT Edge runtime ($edgeAgent, "
                         "$edgeHub); IoT Hub refuses them. Their twins are managed with iothub_edge_modules")
    return check_device_id(value, "module_id")


class OptionSpec:
    """Declared options checked the way the modules' argument specs check them, for option sets that also arrive
    as entries of a list (bulk modules): types and choices (``OPTIONS``: option -> (kind, default)), value checks
    (``CHECKS``), unknown names, and the rules across options (``_rules``).  Every problem names its option; all
    are raised at once as a SpecError.  Subclasses declare ``__slots__`` (a fleet declares many)."""

    __slots__ = ()
    OPTIONS: Dict[str, Tuple[Any, Any]] = {}
    CHECKS: Dict[str, Any] = {}

    def __init__(self, **values: Any):
        problems: List[Tuple[str, str]] = [(k, "is not a known option") for k in values if k not in self.OPTIONS]
        for name, (kind, default) in self.OPTIONS.items():
            if name not in values or (values[name] is None and default is not REQUIRED):
                if default is REQUIRED:
                    problems.append((name, "is required"))
                setattr(self, name, None if default is REQUIRED else default)
                continue
            value, problem = _of_kind(values[name], kind)
            if problem is None and name in self.CHECKS:
                try:
                    value = self.CHECKS[name](value)
                except ValueError as exc:
                    problem = str(exc)
            if problem is not None:
                problems.append((name, problem))
            setattr(self, name, value)
        if not problems:
            problems = [("", p) for p in self._rules()]
        if problems:
            raise SpecError(problems)

    def _rules(self) -> List[str]:
        return []


class _IdentitySpec(OptionSpec):
    """What a device and a module identity share: authentication, twin content, state.  ``None`` means "not
    managed: keep what the hub has".

    A plain class, not a pydantic model: a module's options arrive checked by the argument spec, and bulk
    entries are checked here (types, choices, unknown keys) with the same rules, so no task pays pydantic's
    import and model building (about 0.1 s) to validate one identity.  Each option's kind is one of ``str``,
    ``bool``, ``dict`` or a tuple of allowed values; ``None`` is always allowed for an optional option.
    Slotted: a fleet declares 100,000 of them."""

    __slots__ = ("device_id", "state", "auth_type", "primary_key", "secondary_key", "primary_thumbprint",
                 "secondary_thumbprint", "tags", "desired_properties", "rotate_keys")
    OPTIONS: Dict[str, Tuple[Any, Any]] = {  # option -> (kind, default)
        "device_id": (str, REQUIRED),
        "state": (("present", "absent"), "present"),
        "auth_type": (("sas", "self_signed", "certificate_authority", "none"), None),
        "primary_key": (str, None),
        "secondary_key": (str, None),
        "primary_thumbprint": (str, None),
        "secondary_thumbprint": (str, None),
        "tags": (dict, None),
        "desired_properties": (dict, None),
        "rotate_keys": (("primary", "secondary", "swap"), None),
    }
    CHECKS: Dict[str, Any] = {
        "device_id": check_device_id,
        "primary_key": check_key,
        "secondary_key": check_key,
        "primary_thumbprint": _check_thumbprint,
        "secondary_thumbprint": _check_thumbprint,
        "tags": lambda v: check_twin_section(v, "tags"),
        "desired_properties": lambda v: check_twin_section(v, "desired_properties"),
    }

    def with_keys(self, primary_key: Optional[str], secondary_key: Optional[str]) -> "_IdentitySpec":
        """A copy that declares these keys instead of a rotation (the rotation's intent, once decided)."""
        out = copy.copy(self)
        out.primary_key, out.secondary_key, out.rotate_keys = primary_key, secondary_key, None
        return out

    def __repr__(self) -> str:
        shown = {k: getattr(self, k) for k in self.OPTIONS if "key" not in k and getattr(self, k) is not None}
        return f"{type(self).__name__}({shown})"

    def _rules(self) -> List[str]:
        """The rules across options; each problem names the options."""
        has_keys = self.primary_key is not None or self.secondary_key is not None
        has_tp = self.primary_thumbprint is not None or self.secondary_thumbprint is not None
        if has_keys and has_tp:
            return ["primary_key/secondary_key and primary_thumbprint/secondary_thumbprint are mutually "
                    "exclusive: an identity authenticates with SAS keys or with x509 thumbprints"]
        if self.auth_type in ("self_signed", "certificate_authority", "none") and has_keys:
            return [f"auth_type={self.auth_type} takes no primary_key/secondary_key; use auth_type=sas"]
        if self.auth_type in ("sas", "certificate_authority", "none") and has_tp:
            return [f"auth_type={self.auth_type} takes no thumbprints; use auth_type=self_signed"]
        if self.rotate_keys is not None:
            if has_keys or has_tp:
                return ["rotate_keys generates new keys: it cannot be combined with primary_key, secondary_key or "
                        "thumbprints"]
            if self.auth_type not in (None, "sas"):
                return [f"rotate_keys rotates SAS keys; auth_type={self.auth_type} has none"]
            if self.state == "absent":
                return ["rotate_keys cannot be combined with state=absent"]
        return []

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


def _of_kind(value: Any, kind: Any) -> Tuple[Any, Optional[str]]:
    """VALUE checked against an option's kind (booleans as Ansible reads them: yes/no, true/false, 1/0)."""
    if kind is bool:
        if isinstance(value, bool):
            return value, None
        try:
            return boolean(value, strict=True), None
        except TypeError:
            return value, "must be a boolean (true or false)"
    if kind is str:
        return (value, None) if isinstance(value, str) else (value, "must be a string")
    if kind is dict:
        return (value, None) if isinstance(value, dict) else (value, "must be a dictionary")
    if kind is list:
        ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
        return (value, None) if ok else (value, "must be a list of strings")
    if value in kind:
        return value, None
    return value, "must be one of " + ", ".join(kind)


class DeviceSpec(_IdentitySpec):
    """What the user declares for one device."""

    __slots__ = ("status", "status_reason", "edge_enabled", "parent")
    OPTIONS = {
        **_IdentitySpec.OPTIONS,
        "status": (("enabled", "disabled"), None),
        "status_reason": (str, None),
        "edge_enabled": (bool, None),
        "parent": (str, None),
    }
    CHECKS = {**_IdentitySpec.CHECKS, "parent": _check_parent, "status_reason": _check_status_reason}

    def _rules(self) -> List[str]:
        if self.parent and self.parent == self.device_id:
            return ["parent: a device cannot be its own parent"]
        return super()._rules()


class ModuleSpec(_IdentitySpec):
    """What the user declares for one module identity (iot-api-2.md §1)."""

    __slots__ = ("module_id", "managed_by")
    OPTIONS = {**_IdentitySpec.OPTIONS, "module_id": (str, REQUIRED), "managed_by": (str, None)}
    CHECKS = {**_IdentitySpec.CHECKS, "module_id": _check_module_id}

    def _rules(self) -> List[str]:
        if self.auth_type == "none":
            return ["auth_type=none: IoT Hub gives every module identity credentials (it turns none into sas); "
                    "use sas, self_signed or certificate_authority"]
        return super()._rules()
