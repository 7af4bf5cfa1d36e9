# -*- coding: utf-8 -*-
# Copyright: fleet.azure_iot contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""PRIVATE to fleet.azure_iot: the one pure plan function for an IoT Hub device identity.

``plan_device(spec, current, parent_scope)`` -> ``DevicePlan``: create / update (with the exact changed
fields and the full body to PUT) / delete / none.  ``changed``, check mode and diff all come from it; it
does no I/O.  PUT replaces the whole identity (iot-api.md §1.1), so an update body starts from the current
identity and changes only what the plan says: keys, scopes and status reason are echoed, never dropped.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Dict, Optional

from ansible_collections.fleet.azure_iot.plugins.module_utils._models import (
    AUTH_TYPES,
    AUTH_TYPES_BACK,
    DeviceSpec,
)
from ansible_collections.fleet.azure_iot.plugins.module_utils._errors import PlanError
from ansible_collections.fleet.azure_iot.plugins.module_utils._twin import twin_views

# The fields a plan compares, in option terms.  "parent_scope" is the parent's deviceScope.
FIELDS = ("status", "status_reason", "auth_type", "primary_key", "secondary_key", "primary_thumbprint",
          "secondary_thumbprint", "edge_enabled", "parent_scope")
DEFAULTS = {"status": "enabled", "status_reason": None, "auth_type": "sas", "primary_key": None,
            "secondary_key": None, "primary_thumbprint": None, "secondary_thumbprint": None,
            "edge_enabled": False, "parent_scope": ""}


@dataclass
class DevicePlan:
    device_id: str
    action: str  # "create" | "update" | "delete" | "none"
    changes: Dict[str, tuple] = field(default_factory=dict)  # field -> (before, after)
    body: Optional[Dict[str, Any]] = None  # full identity to PUT (create/update)
    etag: Optional[str] = None  # the etag the plan was made from (If-Match for update/delete)
    before: Optional[Dict[str, Any]] = None  # view of the current identity (None when absent)
    after: Optional[Dict[str, Any]] = None  # view of the planned identity (None when deleted)
    twin: Dict[str, Any] = field(default_factory=dict)  # plan_twin(): what the twin needs (empty: nothing)
    twin_etag: Optional[str] = None  # the twin etag read (If-Match of the twin PATCH)
    twin_view: tuple = ({}, {})  # (before, after) of the twin keys that change, for the diff
    twin_result: Optional[Dict[str, Any]] = None  # the twin as the PATCH answered it (None: not written, or lost)

    @property
    def changed(self) -> bool:
        return self.action != "none"

    @property
    def writes_identity(self) -> bool:
        return self.body is not None or self.action == "delete"

    def add_twin(self, twin_plan: Dict[str, Any], twin: Optional[Dict[str, Any]]) -> None:
        """Attach a twin plan: a twin-only change makes an identity plan of "none" an "update" (no identity write)."""
        if not twin_plan:
            return
        self.twin, self.twin_etag = twin_plan, (twin or {}).get("etag")
        self.twin_view = twin_views(twin_plan, twin)
        for option, before in self.twin_view[0].items():
            self.changes[option] = (before, self.twin_view[1][option])
        if self.action == "none":
            self.action = "update"


def view_of(device: Optional[Dict[str, Any]]) -> Optional[Dict[str, Any]]:
    """The current identity in option terms (the fields a plan compares)."""
    if device is None:
        return None
    auth = device.get("authentication") or {}
    keys = auth.get("symmetricKey") or {}
    tps = auth.get("x509Thumbprint") or {}
    edge = bool((device.get("capabilities") or {}).get("iotEdge"))
    parents = device.get("parentScopes") or []
    return {
        "status": device.get("status") or "enabled",
        "status_reason": device.get("statusReason"),
        "auth_type": AUTH_TYPES_BACK[auth.get("type") or "sas"],
        "primary_key": keys.get("primaryKey") or None,
        "secondary_key": keys.get("secondaryKey") or None,
        "primary_thumbprint": tps.get("primaryThumbprint") or None,
        "secondary_thumbprint": tps.get("secondaryThumbprint") or None,
        "edge_enabled": edge,
        # The parent's scope: parentScopes[0] for an edge device, deviceScope for a leaf (iot-api.md §5).
        "parent_scope": (parents[0] if parents else "") if edge else (device.get("deviceScope") or ""),
    }


def _norm_tp(value: Optional[str]) -> Optional[str]:
    return value.upper() if isinstance(value, str) else value


AUTH_FIELDS = ("auth_type", "primary_key", "secondary_key", "primary_thumbprint", "secondary_thumbprint")


def desired_auth(spec, base: Dict[str, Any], label: str) -> Dict[str, Any]:
    """The authentication the options ask for (a device's or a module's), from ``base`` (a view of the current
    identity, or the defaults) for what they leave unmanaged."""
    out = {f: base[f] for f in AUTH_FIELDS}
    wanted = spec.wanted_auth_type
    auth = AUTH_TYPES_BACK[wanted] if wanted else base["auth_type"]
    out["auth_type"] = auth
    same_auth = auth == base["auth_type"]
    if auth == "sas":
        # Omitted keys: generated on create, kept on update (never regenerated by accident).
        out["primary_key"] = spec.primary_key if spec.primary_key is not None else (base["primary_key"] if same_auth else None)
        out["secondary_key"] = spec.secondary_key if spec.secondary_key is not None else (base["secondary_key"] if same_auth else None)
        out["primary_thumbprint"] = out["secondary_thumbprint"] = None
    elif auth == "self_signed":
        out["primary_key"] = out["secondary_key"] = None
        if spec.primary_thumbprint is None and not same_auth:
            raise PlanError(f"auth_type=self_signed needs primary_thumbprint for {label}")
        # Each thumbprint is managed only when given: an omitted one is kept, exactly like an omitted key
        # (rotating the primary certificate must not drop the secondary).
        kept = (lambda f: _norm_tp(base[f])) if same_auth else (lambda f: None)
        out["primary_thumbprint"] = spec.primary_thumbprint if spec.primary_thumbprint is not None else kept("primary_thumbprint")
        out["secondary_thumbprint"] = (spec.secondary_thumbprint if spec.secondary_thumbprint is not None
                                       else kept("secondary_thumbprint"))
    else:
        out["primary_key"] = out["secondary_key"] = out["primary_thumbprint"] = out["secondary_thumbprint"] = None
    return out


def rotate_keys(after: Dict[str, Any], before: Optional[Dict[str, Any]], rotation: Optional[str],
                fresh_key: Optional[str], label: str) -> None:
    """Apply a deliberate key rotation to a planned view: a new primary or secondary key (``fresh_key``, made by
    the caller), or the two keys swapped; the other key and everything else are kept."""
    if rotation is None or before is None:
        return  # a new identity gets fresh keys from the hub anyway
    if after["auth_type"] != "sas" or not (before["primary_key"] and before["secondary_key"]):
        raise PlanError(f"rotate_keys: {label} does not authenticate with SAS keys (auth_type={after['auth_type']})")
    if rotation == "swap":
        after["primary_key"], after["secondary_key"] = before["secondary_key"], before["primary_key"]
    else:
        after[f"{rotation}_key"] = fresh_key


def desired_view(spec: DeviceSpec, current: Optional[Dict[str, Any]], parent_scope: Optional[str]) -> Dict[str, Any]:
    """The identity the options ask for, starting from ``current`` (a view) for what they leave unmanaged."""
    base = dict(current or DEFAULTS)
    out = dict(base)
    out.update(desired_auth(spec, base, f"device {spec.device_id!r}"))
    if spec.status is not None:
        out["status"] = spec.status
    if spec.status_reason is not None:
        out["status_reason"] = spec.status_reason or None  # "" clears it
    if spec.edge_enabled is not None:
        out["edge_enabled"] = spec.edge_enabled
    if parent_scope is not None:
        out["parent_scope"] = parent_scope
    return out


def _comparable(view: Dict[str, Any]) -> Dict[str, Any]:
    v = dict(view)
    v["primary_thumbprint"] = _norm_tp(v["primary_thumbprint"])
    v["secondary_thumbprint"] = _norm_tp(v["secondary_thumbprint"])
    return v


def _auth_body(view: Dict[str, Any]) -> Dict[str, Any]:
    api_type = AUTH_TYPES[view["auth_type"]]
    body: Dict[str, Any] = {"type": api_type}
    if api_type == "sas":
        keys = {}
        if view["primary_key"]:
            keys["primaryKey"] = view["primary_key"]
        if view["secondary_key"]:
            keys["secondaryKey"] = view["secondary_key"]
        body["symmetricKey"] = keys  # an empty object: the hub generates the keys
    elif api_type == "selfSigned":
        body["x509Thumbprint"] = {"primaryThumbprint": view["primary_thumbprint"],
                                  "secondaryThumbprint": view["secondary_thumbprint"]}
    return body


def _apply_scopes(body: Dict[str, Any], view: Dict[str, Any], current: Optional[Dict[str, Any]]) -> None:
    parent = view["parent_scope"] or ""
    if view["edge_enabled"]:
        current_is_edge = bool(current and (current.get("capabilities") or {}).get("iotEdge"))
        # An edge device's own scope is generated by the hub and immutable: echo it, never invent one.
        body["deviceScope"] = current.get("deviceScope") if current_is_edge else None
        body["parentScopes"] = [parent] if parent else []
    else:
        body["deviceScope"] = parent
        body["parentScopes"] = [parent] if parent else []


def plan_device(spec: DeviceSpec, current: Optional[Dict[str, Any]], parent_scope: Optional[str] = None,
                fresh_key: Optional[str] = None) -> DevicePlan:
    """Desired + current -> actions.  ``parent_scope``: None leaves the parent as it is, "" detaches, else
    the parent's deviceScope (resolved by the caller from the ``parent`` option).  ``fresh_key``: the new key a
    ``rotate_keys`` of primary or secondary puts in (made by the caller, so that this function stays pure)."""
    before = view_of(current)
    etag = current.get("etag") if current else None
    if spec.state == "absent":
        if current is None:
            return DevicePlan(spec.device_id, "none")
        return DevicePlan(spec.device_id, "delete", {f: (before[f], None) for f in FIELDS}, etag=etag,
                          before=before, after=None)

    after = desired_view(spec, before, parent_scope)
    rotate_keys(after, before, spec.rotate_keys, fresh_key, f"device {spec.device_id!r}")
    if current is None:
        body = {"deviceId": spec.device_id, "status": after["status"], "authentication": _auth_body(after),
                "capabilities": {"iotEdge": after["edge_enabled"]}}
        if after["status_reason"] is not None:
            body["statusReason"] = after["status_reason"]
        _apply_scopes(body, after, None)
        if not body.get("deviceScope"):
            body.pop("deviceScope", None)
        changes = {f: (None, after[f]) for f in FIELDS if after[f] not in (None, "", False) or f == "edge_enabled"}
        return DevicePlan(spec.device_id, "create", changes, body, None, None, after)

    b, a = _comparable(before), _comparable(after)
    changes = {f: (before[f], after[f]) for f in FIELDS if b[f] != a[f]}
    if not changes:
        return DevicePlan(spec.device_id, "none", {}, None, etag, before, before)
    body = copy.deepcopy(current)
    body["status"] = after["status"]
    body["statusReason"] = after["status_reason"]
    body["authentication"] = _auth_body(after)
    body.setdefault("capabilities", {})
    body["capabilities"] = dict(body["capabilities"], iotEdge=after["edge_enabled"])
    _apply_scopes(body, after, current)
    return DevicePlan(spec.device_id, "update", changes, body, etag, before, after)


# --------------------------------------------------------------------------- module identities
MODULE_FIELDS = AUTH_FIELDS + ("managed_by",)
MODULE_DEFAULTS = {"auth_type": "sas", "primary_key": None, "secondary_key": None, "primary_thumbprint": None,
                   "secondary_thumbprint": None, "managed_by": None}


def edge_managed(module: Optional[Dict[str, Any]]) -> bool:
    """Whether the IoT Edge runtime owns a module identity (it compares managedBy case-insensitively)."""
    return str((module or {}).get("managedBy") or "").lower() == "iotedge"


def module_view(module: Optional[Dict[str, Any]]) -> Optional[Dict[str, Any]]:
    if module is None:
        return None
    auth = module.get("authentication") or {}
    keys = auth.get("symmetricKey") or {}
    tps = auth.get("x509Thumbprint") or {}
    return {"auth_type": AUTH_TYPES_BACK.get(auth.get("type") or "sas", "sas"),
            "primary_key": keys.get("primaryKey") or None, "secondary_key": keys.get("secondaryKey") or None,
            "primary_thumbprint": _norm_tp(tps.get("primaryThumbprint") or None),
            "secondary_thumbprint": _norm_tp(tps.get("secondaryThumbprint") or None),
            "managed_by": module.get("managedBy")}


def plan_module(spec, current: Optional[Dict[str, Any]], fresh_key: Optional[str] = None,
                force: bool = False) -> DevicePlan:
    """Desired + current -> actions for a module identity.  PUT replaces the whole module (iot-api-2.md §1.2): an
    update starts from the current module, so ``managedBy`` and the keys are echoed, never dropped."""
    label = f"module {spec.module_id!r} of device {spec.device_id!r}"
    name = f"{spec.device_id}/{spec.module_id}"
    before = module_view(current)
    etag = current.get("etag") if current else None
    managed_by = getattr(spec, "managed_by", None)
    moves_owner = managed_by is not None and current is not None and managed_by != current.get("managedBy")
    if edge_managed(current) and not force and (spec.state == "absent" or spec.rotate_keys
                                                or spec.wanted_auth_type is not None or moves_owner):
        raise PlanError(f"{label} is managed by the IoT Edge runtime (managedBy: {current.get('managedBy')}), which "
                        "creates and deletes it from the deployment; changing or deleting it here fights the edge agent. "
                        "Set force=true to do it anyway")
    if spec.state == "absent":
        if current is None:
            return DevicePlan(name, "none")
        return DevicePlan(name, "delete", {f: (before[f], None) for f in AUTH_FIELDS}, etag=etag, before=before)
    base = dict(before or MODULE_DEFAULTS)
    after = dict(base)
    after.update(desired_auth(spec, base, label))
    rotate_keys(after, before, spec.rotate_keys, fresh_key, label)
    if managed_by is not None:  # not given: not managed (echoed as it is)
        after["managed_by"] = managed_by
    if current is None:
        body = {"moduleId": spec.module_id, "deviceId": spec.device_id, "authentication": _auth_body(after)}
        if managed_by is not None:
            body["managedBy"] = managed_by
        changes = {f: (None, after[f]) for f in MODULE_FIELDS if after[f] is not None}
        return DevicePlan(name, "create", changes, body, None, None, after)
    changes = {f: (before[f], after[f]) for f in MODULE_FIELDS if _norm_tp(before[f]) != _norm_tp(after[f])}
    if not changes:
        return DevicePlan(name, "none", {}, None, etag, before, before)
    body = copy.deepcopy(current)
    body["authentication"] = _auth_body(after)
    body["managedBy"] = after["managed_by"]
    return DevicePlan(name, "update", changes, body, etag, before, after)
