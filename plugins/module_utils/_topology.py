# -*- coding: utf-8 -*-
# Copyright: fleet.azure_iot contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""PRIVATE to fleet.azure_iot: the IoT Edge topology rules, once, for iothub_device and iothub_device_bulk (and the
roles through them).  Pure functions over lookups that the caller fills: iothub_device from hub reads (GET, queries),
iothub_device_bulk from its packed state (and GET where it has nothing).

- a parent is an existing IoT Edge device with a scope (``resolve_parent``; check mode assumes, with a warning);
- the chain above a device (``chain_above``): its parent, grandparent, ... as they will be; a scope whose owner is
  gone ends it (``hub_parent``);
- no parent cycle, at most MAX_EDGE_DEPTH edge layers counting the layers below (``place_problem``,
  ``edge_height``);
- a device with children stays an edge device (``leaving_edge_problem``); deleting a gateway with children is
  refused unless orphan_children (``orphans_problem``), and children found after the delete are reported
  (``orphaned_after_delete``).

The messages are the same whichever module meets the rule; iothub_device_bulk puts the device id in front.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

from ansible_collections.fleet.azure_iot.plugins.module_utils._errors import PlanError

EDGE_SCOPE_PREFIX = "ms-azure-iot-edge://"
MAX_EDGE_DEPTH = 5  # IoT Edge: at most five layers of edge devices (iot-api.md §5)


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


def is_edge(device: Optional[Dict[str, Any]]) -> bool:
    return bool(device and (device.get("capabilities") or {}).get("iotEdge"))


def edge_scope(device: Optional[Dict[str, Any]]) -> Optional[str]:
    """The device's own scope when it is an IoT Edge device with one, else None."""
    return (device.get("deviceScope") or None) if is_edge(device) else None


def parent_scope_of(twin: Dict[str, Any]) -> Optional[str]:
    """The scope of a device's parent, as its twin or identity says (parentScopes[0]; a leaf's deviceScope)."""
    parents = twin.get("parentScopes") or []
    if parents:
        return parents[0]
    return None if is_edge(twin) else (twin.get("deviceScope") or None)


def listing(ids: Iterable[str], limit: int = 10) -> str:
    """Ids for a message: the first LIMIT (sorted), then '...'."""
    ids = sorted(ids)
    return ", ".join(ids[:limit]) + (", ..." if len(ids) > limit else "")


# ---------------------------------------------------------------------------------------------------- parents
def parent_problem(parent_id: str, device: Optional[Dict[str, Any]]) -> Optional[str]:
    """Why DEVICE (as the hub holds it; None: absent) cannot be the parent PARENT_ID, or None."""
    if device is None:
        return (f"parent: device {parent_id!r} does not exist; create it as an IoT Edge device first (with "
                "iothub_device_bulk, declare it in the same task)")
    if not is_edge(device):
        return (f"parent: device {parent_id!r} is not an IoT Edge device (capabilities.iotEdge is false); only edge "
                "devices can be parents: set edge_enabled=true on it")
    if not device.get("deviceScope"):
        return f"parent: edge device {parent_id!r} has no deviceScope"
    return None


def assumed_parent_warning(parent_id: str, device: Optional[Dict[str, Any]]) -> str:
    """Check mode's warning for a parent that an earlier task of the play may create or make an edge device."""
    why = "does not exist" if device is None else "is not an IoT Edge device"
    return (f"parent {parent_id!r} {why} (yet); check mode assumes an earlier task makes it an edge device. If it is "
            "a typo, the real run will fail")


def resolve_parent(parent_id: str, device: Optional[Dict[str, Any]],
                   check_mode: bool) -> Tuple[str, Optional[Dict[str, Any]], Optional[str]]:
    """The ``parent`` option -> (its deviceScope, the parent device or None when assumed, a warning or None).

    In check mode a parent that is missing, or not yet an edge device, may be created or made one by an earlier
    task of the same play: plan with a placeholder scope and warn (a typo must be visible in a ``--check`` run),
    rather than fail a dry run."""
    if check_mode and not is_edge(device):
        return planned_scope(parent_id), None, assumed_parent_warning(parent_id, device)
    problem = parent_problem(parent_id, device)
    if problem:
        raise PlanError(problem)
    return device["deviceScope"], device, None


# ------------------------------------------------------------------------------------------------------ chains
def hub_parent(device: Optional[Dict[str, Any]], lookup: Callable[[str], Optional[Dict[str, Any]]]) -> Optional[str]:
    """The id of DEVICE's parent in the hub, confirmed by LOOKUP (id -> device or None): the owner of its parent
    scope must be an edge device holding that scope (the scope of a deleted gateway has none)."""
    scope = ((device or {}).get("parentScopes") or [None])[0]
    pid = parent_id_of_scope(scope) if scope else None
    if not pid:
        return None
    return pid if edge_scope(lookup(pid)) == scope else None


def chain_above(device_id: str, parent_of: Callable[[str], Optional[str]]) -> Tuple[List[str], bool]:
    """(the ids above DEVICE_ID, nearest first, whether they close a cycle back to it or within), following
    PARENT_OF (id -> parent id or None) at most MAX_EDGE_DEPTH + 1 steps."""
    chain: List[str] = []
    cur = device_id
    while len(chain) <= MAX_EDGE_DEPTH:
        cur = parent_of(cur)
        if cur is None:
            break
        if cur == device_id or cur in chain:
            chain.append(cur)
            return chain, True
        chain.append(cur)
    return chain, False


def edge_height(scope: Optional[str], children_of_scopes: Callable[[List[str]], Dict[str, List[Dict[str, Any]]]]) -> int:
    """Edge layers at and below the edge device of SCOPE (1 when it has no edge children): one lookup per layer."""
    height, frontier = 1, [scope] if scope else []
    while frontier and height <= MAX_EDGE_DEPTH:
        kids = children_of_scopes(frontier)
        frontier = [t["deviceScope"] for ts in kids.values() for t in ts if is_edge(t) and t.get("deviceScope")]
        if frontier:
            height += 1
    return height


def place_problem(device_id: str, parent_id: Optional[str], chain: List[str], cycle: bool, height: int) -> Optional[str]:
    """Whether an edge device can sit below CHAIN (nearest first, from ``chain_above``) with HEIGHT edge layers at
    and below it: no parent cycle, at most MAX_EDGE_DEPTH layers."""
    via = f"parent: {parent_id!r}" if parent_id else "parent"
    if cycle:
        return f"{via} would create a parent cycle: {' -> '.join([device_id] + chain)}"
    if len(chain) + height > MAX_EDGE_DEPTH:
        return (f"{via} would put {device_id!r} at IoT Edge layer {len(chain) + 1}"
                + (f" with {height - 1} edge layer(s) below it" if height > 1 else "")
                + f" ({' -> '.join(list(reversed(chain)) + [device_id])}); IoT Edge supports at most {MAX_EDGE_DEPTH}")
    return None


# ------------------------------------------------------------------------------------------------ children
def leaving_edge_problem(device_id: str, kids: List[str]) -> Optional[str]:
    """A device with children must stay an IoT Edge device."""
    if not kids:
        return None
    return (f"edge_enabled=false: {device_id!r} still has {len(kids)} child device(s) ({listing(kids)}); a parent "
            "must stay an IoT Edge device. Move or delete its children first")


def orphans_problem(device_id: str, kids: List[str]) -> Optional[str]:
    """Deleting an edge device leaves its children pointing at a scope that no longer exists: refused."""
    if not kids:
        return None
    return (f"state=absent: edge device {device_id!r} still has {len(kids)} child device(s) ({listing(kids)}); "
            "deleting it would leave them pointing at a parent that no longer exists. Delete or move them first "
            "(with iothub_device_bulk, in the same task), or set orphan_children=true to delete it anyway")


def orphaned_after_delete(device_id: str, kids: List[str]) -> str:
    """Children found after a gateway was deleted (attached within the query index lag): reported, never hidden."""
    return (f"state=absent: edge device {device_id!r} was deleted, but {len(kids)} device(s) still name it as "
            f"their parent ({listing(kids)}): they were attached after the check before the delete, within the "
            "query index lag. Give them a new parent, or delete them")
