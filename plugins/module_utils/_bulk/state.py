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
    return shared


class Known:
    """What the reconciler knows of one device: its identity (None: absent), whether its keys were read (a query
    carries none), its twin as ``kept_twin`` keeps it (etag, tags, desired properties; None: not read).

    A fleet holds 100,000 of these while it plans, so they are packed: the identity as a tuple of the fields a
    bulk entry and a plan use (``EXPORT_FIELDS``, the etag and the id), the twin as (etag, tags, desired) with
    equal sections shared.  ``identity`` and ``twin`` rebuild dicts on each access (read them once per use)."""

    __slots__ = ("_identity", "keys_known", "_twin")

    def __init__(self, identity: Optional[Dict[str, Any]], keys_known: bool = False,
                 twin: Optional[Dict[str, Any]] = None):
        self._identity = None if identity is None else _pack_identity(identity)
        self.keys_known = keys_known
        self._twin = None
        if twin is not None:
            kept = kept_twin(twin)
            self._twin = (kept["etag"], _shared_section(kept["tags"]), _shared_section(kept["properties"]["desired"]))

    @property
    def identity(self) -> Optional[Dict[str, Any]]:
        if self._identity is None:
            return None
        did, etag, status, reason, auth, pk, sk, pt, st, edge, scope, parents = self._identity
        authentication: Dict[str, Any] = {"type": auth, "symmetricKey": {"primaryKey": pk, "secondaryKey": sk},
                                          "x509Thumbprint": {"primaryThumbprint": pt, "secondaryThumbprint": st}}
        return {"deviceId": did, "etag": etag, "status": status, "statusReason": reason,
                "authentication": authentication, "capabilities": {"iotEdge": edge}, "deviceScope": scope,
                "parentScopes": list(parents)}

    @property
    def exists(self) -> bool:
        return self._identity is not None

    @property
    def device_scope(self) -> Optional[str]:
        """deviceScope as read: an edge device's own scope, a leaf's parent scope."""
        return self._identity[10] if self._identity is not None else None

    @property
    def edge(self) -> bool:
        return self._identity is not None and self._identity[9]

    @property
    def edge_scope(self) -> Optional[str]:
        """The device's own scope when it is an IoT Edge device with one, else None."""
        ident = self._identity
        return ident[10] or None if ident is not None and ident[9] else None

    def without_twin(self) -> "Known":
        """The same identity, with the twin forgotten (it was written: what was read of it is stale)."""
        out = Known(None, self.keys_known, None)
        out._identity = self._identity
        return out

    @property
    def twin(self) -> Optional[Dict[str, Any]]:
        if self._twin is None:
            return None
        etag, tags, desired = self._twin
        return {"etag": etag, "tags": tags or {}, "properties": {"desired": desired or {}}}


def _pack_identity(identity: Dict[str, Any]) -> tuple:
    auth = identity.get("authentication") or {}
    keys = auth.get("symmetricKey") or {}
    tps = auth.get("x509Thumbprint") or {}
    return (identity["deviceId"], identity.get("etag"), identity.get("status") or "enabled", identity.get("statusReason"),
            auth.get("type") or "sas", keys.get("primaryKey") or None, keys.get("secondaryKey") or None,
            tps.get("primaryThumbprint") or None, tps.get("secondaryThumbprint") or None,
            bool((identity.get("capabilities") or {}).get("iotEdge")), identity.get("deviceScope"),
            tuple(identity.get("parentScopes") or ()))


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
