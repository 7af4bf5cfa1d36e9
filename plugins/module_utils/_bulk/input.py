# -*- coding: utf-8 -*-
# Copyright: fleet.azure_iot contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""PRIVATE to fleet.azure_iot: iothub_device_bulk, its input: the devices or tree option and defaults as validated
specs (every entry checked before any request, errors naming the entry and the option), and the task options."""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional

from ansible_collections.fleet.azure_iot.plugins.module_utils._bulk.devices_file import for_hub, read_entries
from ansible_collections.fleet.azure_iot.plugins.module_utils._errors import (
    format_validation_error,
    PlanError,
    QueryError,
    SpecError,
)
from ansible_collections.fleet.azure_iot.plugins.module_utils._iothub import MAX_USER_QUERY_CHARS
from ansible_collections.fleet.azure_iot.plugins.module_utils._models import DeviceSpec
from ansible_collections.fleet.azure_iot.plugins.module_utils._query import compile_where
from ansible_collections.fleet.azure_iot.plugins.module_utils._topology import chain_above, place_problem

MAX_BATCH = 100

PRUNE_QUERY_PREFIX = "SELECT * FROM devices WHERE "


# Without max_deletes, a prune may delete at most this many devices, or this share of what its selector matches,
# whichever is more (a device list that a failed lookup cut short must not empty the fleet).
PRUNE_FREE_COUNT = 10

PRUNE_FREE_SHARE = 0.10


@dataclass(frozen=True)
class BulkOptions:
    """The options of an iothub_device_bulk task that steer the reconciler: built once from the module's params,
    checked once (``validate``), read by every part of ``_bulk``."""

    prune: bool = False
    prune_query: Optional[str] = None
    prune_children: bool = False
    prune_descendants: bool = False
    orphan_children: bool = False
    max_deletes: Optional[int] = None
    batch_size: int = MAX_BATCH
    max_concurrency: int = 4
    check_mode: bool = False
    diff_detail: Optional[str] = "full"  # None: no diff asked for; "summary" or "full"

    @classmethod
    def from_params(cls, params: dict, check_mode: bool, diff: bool) -> "BulkOptions":
        return cls(prune=params["prune"], prune_query=params["prune_query"], prune_children=params["prune_children"],
                   prune_descendants=params["prune_descendants"], orphan_children=params["orphan_children"],
                   max_deletes=params["max_deletes"], batch_size=params["batch_size"],
                   max_concurrency=params["max_concurrency"], check_mode=check_mode,
                   diff_detail=params["diff_detail"] if diff else None)

    def validate(self) -> None:
        """The option rules, before the first request."""
        if self.prune_query is not None and not self.prune:
            raise PlanError("prune_query is set but prune is not: prune_query only selects what prune=true deletes; "
                            "set prune=true, or drop prune_query")
        if self.max_deletes is not None and self.max_deletes < 0:
            raise PlanError("max_deletes must be 0 or more")
        if self.prune_query is not None and len(PRUNE_QUERY_PREFIX + self.prune_query) > MAX_USER_QUERY_CHARS:
            raise PlanError(f"prune_query makes a query of {len(PRUNE_QUERY_PREFIX + self.prune_query)} characters; "
                            f"IoT Hub takes at most {MAX_USER_QUERY_CHARS}")
        if not 1 <= self.batch_size <= MAX_BATCH:
            raise PlanError(f"batch_size must be between 1 and {MAX_BATCH} (IoT Hub takes at most {MAX_BATCH} devices "
                            "per bulk call)")
        if self.max_concurrency < 1:
            raise PlanError("max_concurrency must be at least 1")
        if self.prune and not (self.prune_query or "").strip():
            raise PlanError("prune=true needs prune_query, a WHERE clause that selects the devices this task owns "
                            "(for example tags.fleet = 'plant-7'); pruning the whole hub is refused")
        if self.prune_query is not None:
            prune_matcher(self.prune_query)


def validate_fleet(specs: List[DeviceSpec], options: BulkOptions, source: str = "devices") -> None:
    """Everything that can be checked before the first request: the options, then the declared devices.  SOURCE
    names where they came from in messages (``devices``, or ``devices_file '<path>'``)."""
    options.validate()
    if not specs and options.prune and options.max_deletes is None:
        raise PlanError(f"{source} declares no device, and prune=true would delete every device prune_query selects "
                        "(this task declares none of them); refused before any request, as this is usually an empty "
                        "or wrong device list (an export that failed, a lookup cut short). Fix the list, or set "
                        "max_deletes to the number you mean to delete to allow it")
    seen, dups = set(), []
    for s in specs:
        if s.device_id in seen and s.device_id not in dups:
            dups.append(s.device_id)
        seen.add(s.device_id)
    if dups:
        raise PlanError(f"devices: declared more than once: {', '.join(dups[:20])}")
    by_id = {s.device_id: s for s in specs}
    for s in specs:
        if s.state != "present" or not s.parent:
            continue
        parent = by_id.get(s.parent)
        if parent is not None:
            if parent.state == "absent":
                raise PlanError(f"devices: {s.device_id!r} has parent {s.parent!r}, which is declared state=absent")
            if parent.edge_enabled is False:
                raise PlanError(f"devices: {s.device_id!r} has parent {s.parent!r}, which is declared with "
                                "edge_enabled=false; only IoT Edge devices can be parents")
    # Cycles and depth among the declared devices (the topology rules of _topology, on the declared parents).

    def declared_parent(did: str) -> Optional[str]:
        spec = by_id.get(did)
        return spec.parent if spec is not None and spec.parent in by_id else None
    for s in specs:
        chain, cycle = chain_above(s.device_id, declared_parent)
        problem = place_problem(s.device_id, s.parent or None, chain, cycle, 1 if s.edge_enabled else 0)
        if problem:
            raise PlanError(f"devices: {s.device_id!r}: {problem}")


def prune_matcher(prune_query: str):
    """``prune_query`` as a test of one twin: every prune candidate is re-checked with it on a GET of its twin (the
    query index lags).  A clause that cannot be read is an input error, before any request."""
    try:
        return compile_where(prune_query)
    except QueryError as exc:
        raise PlanError(f"prune_query {prune_query!r}: {exc}; nothing was sent to the hub") from None


def deep_merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def parse_specs(devices, defaults, labels: Optional[List[str]] = None, hide=None) -> List[DeviceSpec]:
    """Validate every entry before any request; errors name the entry (its tree path when given) and the option."""
    return parse_entries(((labels[i] if labels else f"devices[{i}]", entry) for i, entry in enumerate(devices)),
                         defaults, hide)


def _hide_keys(entry, hide) -> None:
    """Call HIDE with the keys an entry (or the defaults) declares, so that the caller can mask them."""
    if hide is not None and isinstance(entry, dict):
        for k in ("primary_key", "secondary_key"):
            if isinstance(entry.get(k), str):
                hide(entry[k])


def parse_entries(pairs, defaults, hide=None) -> List[DeviceSpec]:
    """(label, entry) pairs (a list, or a file read line by line) -> validated specs, merged with DEFAULTS; errors name
    each entry by its label (``devices[3]``, a tree path, ``fleet.csv:12``) and the option.  ``hide`` is called
    with every declared key.  A device id declared twice is an error naming both places."""
    if not isinstance(defaults, dict):
        raise PlanError("defaults must be a dictionary of device options")
    _hide_keys(defaults, hide)
    specs, problems, seen = [], [], {}
    for where, entry in pairs:
        if isinstance(entry, str):
            entry = {"device_id": entry}  # a bare device id
        if not isinstance(entry, dict):
            problems.append(f"{where}: must be a device id or a dictionary with at least device_id")
            continue
        _hide_keys(entry, hide)
        did = entry.get("device_id")
        if isinstance(did, str) and ":" in where:  # a file: a duplicate is named with both lines
            place, _colon, line = where.rpartition(":")
            if did in seen:
                problems.append(f"{where}: device {did!r} is declared again (first at {place}:{seen[did]}); declare "
                                "each device once")
                continue
            seen[did] = int(line)  # the line number alone: a million labels would cost 100 MB
        merged = {**defaults, **entry}
        for key in ("tags", "desired_properties"):  # dictionaries merge key by key; the entry wins
            if isinstance(defaults.get(key), dict) and isinstance(entry.get(key), dict):
                merged[key] = deep_merge(defaults[key], entry[key])
        label = f"{where} ({entry.get('device_id')})" if entry.get("device_id") and ":" not in where else where
        try:
            specs.append(DeviceSpec(**merged))
        except SpecError as exc:
            problems.append(f"{label}: {format_validation_error(exc)}")
    if problems:
        more = f" (and {len(problems) - 10} more)" if len(problems) > 10 else ""
        raise PlanError("Invalid input: " + "; ".join(problems[:10]) + more)
    return specs


def flatten_tree(tree):
    """Nested nodes -> (flat device entries with parent and edge_enabled set, each entry's path in the tree
    (``tree[0].children[1]``), the ids of the nodes that carry an explicit ``children`` list); errors name the
    node's path."""
    out, paths, problems, declares_children, deployments = [], [], [], set(), {}

    def walk(nodes, path, parent):
        if not isinstance(nodes, list):
            problems.append(f"{path}: must be a list of device nodes")
            return
        for i, node in enumerate(nodes):
            where = f"{path}[{i}]"
            if isinstance(node, str):
                node = {"device_id": node}  # a bare device id, as in devices
            if not isinstance(node, dict):
                problems.append(f"{where}: must be a device id or a dictionary with at least device_id")
                continue
            node = dict(node)
            if "children" in node and node.get("device_id"):
                declares_children.add(node["device_id"])
            deployment = node.pop("deployment", None)
            if deployment is not None:
                if not isinstance(deployment, dict):
                    problems.append(f"{where}: deployment must be a deployment manifest (a dictionary)")
                elif node.get("edge_enabled") is False:
                    problems.append(f"{where}: only an IoT Edge device runs a deployment")
                else:
                    node.setdefault("edge_enabled", True)
                    deployments[node.get("device_id")] = deployment
            declares = "children" in node  # a children key, empty or not: a gateway (with no children yet)
            children = node.pop("children", None) or []
            label = f"{where} ({node.get('device_id')})"
            if declares:
                if children and node.get("edge_enabled") is False:
                    problems.append(f"{label}: a leaf device (edge_enabled=false) cannot have children; only IoT "
                                    "Edge devices can be parents")
                node.setdefault("edge_enabled", True)
            if parent is not None:
                if node.get("parent") not in (None, parent):
                    problems.append(f"{label}: parent {node['parent']!r} contradicts its place below {parent!r}")
                node["parent"] = parent
            out.append(node)
            paths.append(where)
            walk(children, f"{where}.children", node.get("device_id"))

    walk(tree, "tree", None)
    if problems:
        raise PlanError("Invalid tree: " + "; ".join(problems[:10]))
    return out, paths, declares_children, deployments


def parse_devices_file(path: str, fmt, defaults, hide=None, hub: Optional[str] = None) -> List[DeviceSpec]:
    """``devices_file``: the fleet read line by line and validated before any request (see devices_file.py); with
    HUB (``hub_key_filter``), only the lines of that hub."""
    return parse_entries(for_hub(read_entries(path, fmt), hub), defaults or {}, hide)


def parse_fleet(devices, tree, defaults, hide=None):
    """The devices or tree option -> (validated specs, ids of tree nodes with an explicit children list, the tree
    nodes' deployments).  ``hide`` is called with every declared secret (keys), so that the caller can mask it."""
    if devices is not None:
        entries, paths, declares_children, deployments = devices, None, set(), {}
    else:
        entries, paths, declares_children, deployments = flatten_tree(tree)
    return parse_specs(entries, defaults, paths, hide), declares_children, deployments
