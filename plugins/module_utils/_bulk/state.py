# -*- coding: utf-8 -*-
# Copyright: fleet.azure_iot contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""PRIVATE to fleet.azure_iot: iothub_device_bulk, what it knows of each device while it plans: identities and twins
packed (a fleet holds 100,000 of them), what a write on its way needs, and the outcome."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Dict, List, NamedTuple, Optional, Set

from ansible_collections.fleet.azure_iot.plugins.module_utils._models import DeviceSpec
from ansible_collections.fleet.azure_iot.plugins.module_utils._plan import DevicePlan
from ansible_collections.fleet.azure_iot.plugins.module_utils._twin import kept_twin

EXPORT_FIELDS = ("status", "statusReason", "authentication", "capabilities", "deviceScope", "parentScopes")


def from_export_line(line: Dict[str, Any]) -> tuple:
    """(identity, twin) of a device line of an export job's devices.txt (ExportImportDevice)."""
    identity = {
        "deviceId": line["id"], "etag": line.get("eTag"), "status": line.get("status") or "enabled",
        "statusReason": line.get("statusReason"),
        "authentication": line.get("authentication") or {"type": "sas", "symmetricKey": {}, "x509Thumbprint": {}},
        "capabilities": line.get("capabilities") or {"iotEdge": False},
        "deviceScope": line.get("deviceScope"), "parentScopes": line.get("parentScopes") or [],
    }
    twin = {"deviceId": line["id"], "etag": line.get("twinETag"), "tags": line.get("tags") or {},
            "properties": line.get("properties") or {"desired": {}, "reported": {}}}
    return identity, twin


def identity_from_twin(twin: Dict[str, Any]) -> Dict[str, Any]:
    """What a query twin says of the identity (no keys: twins never carry them)."""
    return {
        "deviceId": twin["deviceId"],
        "etag": twin.get("deviceEtag"),
        "status": twin.get("status", "enabled"),
        "statusReason": twin.get("statusReason"),
        "authentication": {"type": twin.get("authenticationType") or "sas",
                           "symmetricKey": {"primaryKey": None, "secondaryKey": None},
                           "x509Thumbprint": twin.get("x509Thumbprint") or {}},
        "capabilities": twin.get("capabilities") or {"iotEdge": False},
        "deviceScope": twin.get("deviceScope"),
        "parentScopes": twin.get("parentScopes") or [],
    }


_SHARED: Dict[str, Dict[str, Any]] = {}  # canonical JSON -> one dict shared by every twin section equal to it
_SHARED_IDS: Set[int] = set()  # the ids of those dicts

_SHARED_MAX = 4096


def _shared_section(section: Optional[Dict[str, Any]]) -> Optional[Dict[str, Any]]:
    """A twin section (tags, desired properties) as one object shared by the devices whose section is equal (a
    fleet's 100,000 devices mostly carry the same few tag sets); None for an empty one.  Shared sections are
    never changed in place: planning copies what it changes (merge_patch)."""
    if not section:
        return None
    key = json.dumps(section, sort_keys=True, separators=(",", ":"))
    if len(key) > 512:
        return section
    shared = _SHARED.get(key)
    if shared is None:
        if len(_SHARED) >= _SHARED_MAX:
            return section
        shared = _SHARED[key] = section
        _SHARED_IDS.add(id(section))
    return shared


_SHAPES: Dict[tuple, tuple] = {}  # the fields most devices share (status, reason, auth type, edge, scope, ...)
_TWINS: Dict[tuple, tuple] = {}  # (etag, tags, desired) triples equal between devices
_SHARED_TUPLES_MAX = 65536


def _shared_tuple(cache: Dict[tuple, tuple], key: tuple, value: tuple) -> tuple:
    """VALUE, or the equal one already kept under KEY: a fleet's devices mostly look alike (bounded: past the
    limit, values are kept as they are)."""
    shared = cache.get(key)
    if shared is not None:
        return shared
    if len(cache) < _SHARED_TUPLES_MAX:
        cache[key] = value
    return value


class Known:
    """What the reconciler knows of one device: its identity (None: absent), whether its keys were read (a query
    carries none), its twin as ``kept_twin`` keeps it (etag, tags, desired properties; None: not read).

    A fleet holds a million of these while it plans, so they are packed: the identity as (id, etag, primary key,
    secondary key, shape), the shape being the tuple of the other fields a bulk entry and a plan use (status,
    reason, auth type, thumbprints, edge, scope, parent scopes) shared by every device with the same one; the twin
    as (etag, tags, desired) with equal sections and equal triples shared.  ``identity`` and ``twin`` rebuild
    dicts on each access (read them once per use)."""

    # The identity is held in slots of its own (no tuple beside the object): a million devices save 80 MB.
    __slots__ = ("_did", "_etag", "_pk", "_sk", "_shape", "keys_known", "_twin")

    def __init__(self, identity: Optional[Dict[str, Any]], keys_known: bool = False,
                 twin: Optional[Dict[str, Any]] = None):
        self._did = self._etag = self._pk = self._sk = self._shape = None
        if identity is not None:
            self._did, self._etag, self._pk, self._sk, self._shape = _pack_identity(identity)
        self.keys_known = keys_known
        self._twin = None
        if twin is not None:
            kept = kept_twin(twin)
            tags, desired = _shared_section(kept["tags"]), _shared_section(kept["properties"]["desired"])
            triple = (kept["etag"], tags, desired)
            if (tags is None or _is_shared(tags)) and (desired is None or _is_shared(desired)):
                triple = _shared_tuple(_TWINS, (kept["etag"], id(tags), id(desired)), triple)
            self._twin = triple

    @property
    def identity(self) -> Optional[Dict[str, Any]]:
        if self._shape is None:
            return None
        status, reason, auth, pt, st, edge, scope, parents = self._shape
        authentication: Dict[str, Any] = {"type": auth, "symmetricKey": {"primaryKey": self._pk, "secondaryKey": self._sk},
                                          "x509Thumbprint": {"primaryThumbprint": pt, "secondaryThumbprint": st}}
        return {"deviceId": self._did, "etag": self._etag, "status": status, "statusReason": reason,
                "authentication": authentication, "capabilities": {"iotEdge": edge}, "deviceScope": scope,
                "parentScopes": list(parents)}

    @property
    def exists(self) -> bool:
        return self._shape is not None

    @property
    def device_scope(self) -> Optional[str]:
        """deviceScope as read: an edge device's own scope, a leaf's parent scope."""
        return self._shape[6] if self._shape is not None else None

    @property
    def edge(self) -> bool:
        return self._shape is not None and self._shape[5]

    @property
    def edge_scope(self) -> Optional[str]:
        """The device's own scope when it is an IoT Edge device with one, else None."""
        shape = self._shape
        return shape[6] or None if shape is not None and shape[5] else None

    def _copy(self, keys: bool, twin: bool) -> "Known":
        out = Known(None, self.keys_known and keys, None)
        out._did, out._etag, out._shape = self._did, self._etag, self._shape
        if keys:
            out._pk, out._sk = self._pk, self._sk
        if twin:
            out._twin = self._twin
        return out

    def without_twin(self) -> "Known":
        """The same identity, with the twin forgotten (it was written: what was read of it is stale)."""
        return self._copy(keys=True, twin=False)

    def without_keys(self) -> "Known":
        """The same device with its keys forgotten (``keys_known`` false: a plan that rewrites the identity reads
        them with GET first, as after a query)."""
        return self._copy(keys=False, twin=True)

    @property
    def twin(self) -> Optional[Dict[str, Any]]:
        if self._twin is None:
            return None
        etag, tags, desired = self._twin
        return {"etag": etag, "tags": tags or {}, "properties": {"desired": desired or {}}}


ABSENT = Known(None, True, None)  # a device that does not exist (one object for every such device: never changed)


def _is_shared(section: Dict[str, Any]) -> bool:
    """SECTION is the one object kept for its content (its id stays valid: _SHARED keeps it alive)."""
    return id(section) in _SHARED_IDS


def _pack_identity(identity: Dict[str, Any]) -> tuple:
    auth = identity.get("authentication") or {}
    keys = auth.get("symmetricKey") or {}
    tps = auth.get("x509Thumbprint") or {}
    shape = (identity.get("status") or "enabled", identity.get("statusReason"), auth.get("type") or "sas",
             tps.get("primaryThumbprint") or None, tps.get("secondaryThumbprint") or None,
             bool((identity.get("capabilities") or {}).get("iotEdge")), identity.get("deviceScope"),
             tuple(identity.get("parentScopes") or ()))
    return (identity["deviceId"], identity.get("etag"), keys.get("primaryKey") or None,
            keys.get("secondaryKey") or None, _shared_tuple(_SHAPES, shape, shape))


def uses_keys(s: DeviceSpec) -> bool:
    """Declared keys are compared with the hub's, and a rotation keeps the other key: both need the keys read."""
    return s.primary_key is not None or s.secondary_key is not None or bool(s.rotate_keys)


def rewrites_keys(plan: DevicePlan) -> bool:
    """A rewrite of a SAS identity carries its keys (a bulk update without them makes the hub generate new ones)."""
    return plan.action == "update" and plan.after["auth_type"] == "sas" and plan.before["auth_type"] == "sas"


class Pending(NamedTuple):
    """A write on its way: what converge needs once its answer comes (the plan itself is not kept)."""
    spec: DeviceSpec
    action: str  # the plan's action
    mode: str  # the entry's import mode
    successor: Optional[Known]  # the state once it lands (check mode: as predicted)
    twin_follows: bool  # an identity update whose twin goes in the next call
    stale: bool  # a new edge device whose scope only a read tells


@dataclass
class Outcome:
    # sets: a fleet has 100,000 ids, and each is looked up as it settles (the result lists them sorted)
    created: Set[str] = field(default_factory=set)
    updated: Set[str] = field(default_factory=set)
    deleted: Set[str] = field(default_factory=set)
    unchanged: Set[str] = field(default_factory=set)
    failed: List[Dict[str, Any]] = field(default_factory=list)
    diffs: List[Dict[str, Any]] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)
    unconfirmed_writes: bool = False  # a bulk call whose answer was lost: its writes may have landed
    warnings: List[str] = field(default_factory=list)  # for module.warn (check mode's assumptions)

    @property
    def changed(self) -> bool:
        return bool(self.created or self.updated or self.deleted or self.unconfirmed_writes)
