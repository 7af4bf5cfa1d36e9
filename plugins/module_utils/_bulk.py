# -*- coding: utf-8 -*-
# Copyright: fleet.azure_iot contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""PRIVATE to fleet.azure_iot: converge a declared fleet with the fewest registry operations.

Reads with paged queries (a scan or ``deviceId IN [...]`` lists, whichever costs fewer pages), plans every
device with the same ``plan_device`` as iothub_device (plus ``plan_twin`` for tags and desired
properties), and writes only the differences through ``POST /devices`` (at most 100 per call), parents
before children.  Every bulk entry is conditional (create, updateIfMatchETag, deleteIfMatchETag,
updateTwinIfMatchETag), so a repeated call can never apply twice; an entry that meets a changed device
(409, 412, or a 404 for a query "ghost") is re-read with GET and re-planned.

Query twins carry no keys, and a bulk update replaces the whole identity (omitted keys are regenerated), so
a SAS device whose identity must be rewritten, or whose declared keys must be compared, is read with GET
first.  Twin-only changes need no GET.
"""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Set

from ansible_collections.fleet.azure_iot.plugins.module_utils._http import (
    AmbiguousWriteError,
    AuthorizationError,
    IoTApiError,
    error_from_response,
    maybe_applied,
)
from ansible_collections.fleet.azure_iot.plugins.module_utils._iothub import (
    MAX_QUERY_CHARS,
    MAX_USER_QUERY_CHARS,
    quote_literal,
)
from ansible_collections.fleet.azure_iot.plugins.module_utils._models import (
    MAX_EDGE_DEPTH,
    DeviceSpec,
    SpecError,
    format_validation_error,
    is_planned_scope,
    parent_id_of_scope,
    planned_scope,
)
from ansible_collections.fleet.azure_iot.plugins.module_utils._plan import (
    DevicePlan,
    PlanError,
    display_view,
    kept_twin,
    plan_device,
    plan_secrets,
    plan_twin,
    twin_change_view,
)
from ansible_collections.fleet.azure_iot.plugins.module_utils._models import TWIN_SECTION_LIMITS, section_size
from ansible_collections.fleet.azure_iot.plugins.module_utils._query import QueryError, compile_where
from ansible_collections.fleet.azure_iot.plugins.module_utils._resource import KeyIntent, fresh_key

MAX_BATCH = 100
PLAN_CHUNK = 1000  # devices planned at a time (their plans are dropped once their writes are collected)
MAX_ROUNDS = 4  # rounds of re-read and re-plan after conflicts (one more carries an update's twin)
DIFF_SUMMARY_ABOVE = 50
DIFF_KEPT = 1000  # diff_detail=summary: plans kept of the changed devices whose ids sort first
PRUNE_QUERY_PREFIX = "SELECT * FROM devices WHERE "
# Without max_deletes, a prune may delete at most this many devices, or this share of what its selector matches,
# whichever is more (a device list that a failed lookup cut short must not empty the fleet).
PRUNE_FREE_COUNT = 10
PRUNE_FREE_SHARE = 0.10
RECONCILE_CODES = {"PreconditionFailed", "EtagDoesNotMatch", "GenericPreconditionFailed", "DeviceAlreadyExists",
                   "DeviceNotFound"}
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


def validate_fleet(specs: List[DeviceSpec], prune: bool, prune_query: Optional[str], batch_size: int,
                   max_concurrency: int, max_deletes: Optional[int] = None) -> None:
    """Everything that can be checked before the first request."""
    if prune_query is not None and not prune:
        raise PlanError("prune_query is set but prune is not: prune_query only selects what prune=true deletes; "
                        "set prune=true, or drop prune_query")
    if max_deletes is not None and max_deletes < 0:
        raise PlanError("max_deletes must be 0 or more")
    if prune_query is not None and len(PRUNE_QUERY_PREFIX + prune_query) > MAX_USER_QUERY_CHARS:
        raise PlanError(f"prune_query makes a query of {len(PRUNE_QUERY_PREFIX + prune_query)} characters; IoT Hub "
                        f"takes at most {MAX_USER_QUERY_CHARS}")
    if not 1 <= batch_size <= MAX_BATCH:
        raise PlanError(f"batch_size must be between 1 and {MAX_BATCH} (IoT Hub takes at most {MAX_BATCH} devices per bulk call)")
    if max_concurrency < 1:
        raise PlanError("max_concurrency must be at least 1")
    if prune and not (prune_query or "").strip():
        raise PlanError("prune=true needs prune_query, a WHERE clause that selects the devices this task owns "
                        "(for example tags.fleet = 'plant-7'); pruning the whole hub is refused")
    if prune_query is not None:
        prune_matcher(prune_query)
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
    # Cycles and depth among declared devices.
    for s in specs:
        chain, cur = [s.device_id], s
        edge_layers = 1 if s.edge_enabled else 0
        while cur.parent and cur.parent in by_id:
            if cur.parent in chain:
                raise PlanError(f"devices: parent cycle: {' -> '.join(chain + [cur.parent])}")
            chain.append(cur.parent)
            cur = by_id[cur.parent]
            edge_layers += 1
        if edge_layers > MAX_EDGE_DEPTH:
            raise PlanError(f"devices: {s.device_id!r} would nest IoT Edge devices {edge_layers} layers deep "
                            f"({' -> '.join(reversed(chain))}); IoT Edge supports at most {MAX_EDGE_DEPTH}")


def prune_matcher(prune_query: str):
    """``prune_query`` as a test of one twin: every prune candidate is re-checked with it on a GET of its twin (the
    query index lags).  A clause that cannot be read is an input error, before any request."""
    try:
        return compile_where(prune_query)
    except QueryError as exc:
        raise PlanError(f"prune_query {prune_query!r}: {exc}; nothing was sent to the hub") from None


def parent_scope_of(twin: Dict[str, Any]) -> Optional[str]:
    """The scope of a device's parent, as its twin or identity says (parentScopes[0]; a leaf's deviceScope)."""
    parents = twin.get("parentScopes") or []
    if parents:
        return parents[0]
    return None if (twin.get("capabilities") or {}).get("iotEdge") else (twin.get("deviceScope") or None)


def deep_merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def parse_specs(devices, defaults, labels: Optional[List[str]] = None) -> List[DeviceSpec]:
    """Validate every entry before any request; errors name the entry (its tree path when given) and the option."""
    if not isinstance(defaults, dict):
        raise PlanError("defaults must be a dictionary of device options")
    specs, problems = [], []
    for i, entry in enumerate(devices):
        if isinstance(entry, str):
            entry = {"device_id": entry}  # a bare device id
        if not isinstance(entry, dict):
            problems.append(f"devices[{i}]: must be a device id or a dictionary with at least device_id")
            continue
        merged = {**defaults, **entry}
        for key in ("tags", "desired_properties"):  # dictionaries merge key by key; the entry wins
            if isinstance(defaults.get(key), dict) and isinstance(entry.get(key), dict):
                merged[key] = deep_merge(defaults[key], entry[key])
        where = labels[i] if labels else f"devices[{i}]"
        label = f"{where} ({entry.get('device_id')})" if entry.get("device_id") else where
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
            if not isinstance(node, dict):
                problems.append(f"{where}: must be a dictionary with at least device_id")
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
            children = node.pop("children", None) or []
            label = f"{where} ({node.get('device_id')})"
            if children:
                if node.get("edge_enabled") is False:
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


def parse_fleet(devices, tree, defaults, hide=None):
    """The devices or tree option -> (validated specs, ids of tree nodes with an explicit children list, the tree
    nodes' deployments).  ``hide`` is called with every declared secret (keys), so that the caller can mask it."""
    if devices is not None:
        entries, paths, declares_children, deployments = devices, None, set(), {}
    else:
        entries, paths, declares_children, deployments = flatten_tree(tree)
    if hide is not None:
        for entry in list(entries) + [defaults or {}]:
            if isinstance(entry, dict):
                for k in ("primary_key", "secondary_key"):
                    if isinstance(entry.get(k), str):
                        hide(entry[k])
    return parse_specs(entries, defaults, paths), declares_children, deployments


class BulkReconciler:
    def __init__(self, client, specs: List[DeviceSpec], *, prune: bool = False, prune_query: Optional[str] = None,
                 batch_size: int = MAX_BATCH, max_concurrency: int = 4, check_mode: bool = False,
                 prune_children: bool = False, prune_descendants: bool = False, orphan_children: bool = False,
                 max_deletes: Optional[int] = None, declares_children: Optional[set] = None,
                 deployments: Optional[Dict[str, Any]] = None, jobs=None, diff_detail: Optional[str] = "full",
                 hide: Optional[Callable[[str], None]] = None):
        # The diff to be shown: None (no diff, no plan kept), "summary" (the plans of the DIFF_KEPT changed devices
        # whose ids sort first: diffs() shows DIFF_SUMMARY_ABOVE of them) or "full" (every changed device's plan).
        self.diff_detail = diff_detail
        self._diff_cut: Optional[str] = None  # summary: a changed device whose id sorts after it keeps no plan
        self.hide = hide  # called with every key a changed device's plan saw (the module masks them)
        self.prune_children = prune_children
        self.prune_descendants = prune_descendants
        self.orphan_children = orphan_children
        self.max_deletes = max_deletes
        self.declares_children = set(declares_children or ())  # tree nodes with an explicit children list
        self.deployments = dict(deployments or {})  # tree nodes' deployment manifests (applied by the roles)
        self.client = client
        self.specs = specs
        self.by_id = {s.device_id: s for s in specs}
        self.prune = prune
        self.prune_query = prune_query
        self.prune_match = prune_matcher(prune_query) if prune and prune_query else None
        # Why each prune candidate is deleted: "prune_query", or the scope of the parent whose child it must still be.
        self.prune_why: Dict[str, str] = {}
        self.deleting_scopes: Dict[str, str] = {}  # edge scope -> the gateway this run deletes (orphan re-check)
        self.batch_size = batch_size
        self.max_concurrency = max_concurrency
        self.check_mode = check_mode
        self.state: Dict[str, Known] = {}
        self.plans: Dict[str, DevicePlan] = {}  # for the diff: device id -> the plan the task acted on
        self.views: Dict[str, tuple] = {}  # for the diff: device id -> ((twin before, twin after), keys were read)
        self._stale: Set[str] = set()  # edge devices written in this run whose scope only a read tells
        self._write_proven = False  # a bulk call of this run succeeded (or was refused per device): rights are fine
        self.jobs = jobs  # the import/export jobs path (storage_container_uri), or None
        self.read_current = False  # True when the state was read by an export job (current, not a lagging index)
        self.maybe_written: Dict[str, str] = {}  # device id -> import mode of a write whose answer was lost
        # rotate_keys: each rotation decided once (the keys it puts in), re-planned as those keys after a conflict
        # or a lost answer (the same rule as iothub_device's)
        self.key_intents: Dict[str, KeyIntent] = {s.device_id: KeyIntent() for s in specs if s.rotate_keys}
        self.out = Outcome()
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ reads
    def _pool(self, fn, items):
        if not items:
            return []
        if self.max_concurrency == 1 or len(items) == 1:
            return [fn(i) for i in items]
        with ThreadPoolExecutor(max_workers=min(self.max_concurrency, len(items))) as pool:
            return list(pool.map(fn, items))

    def _remember(self, twin: Dict[str, Any]) -> str:
        did = twin["deviceId"]
        if did not in self.state or not self.state[did].exists:
            self.state[did] = Known(identity_from_twin(twin), False, twin)
        return did

    def read(self) -> List[str]:
        """Load the current state of every declared device and referenced parent; return prune candidates
        (sorted): for ``prune``, the undeclared devices ``prune_query`` matches; for ``prune_children``, the
        undeclared direct children of the gateways whose children this task declares (see ``prunable``)."""
        wanted = set(self.by_id)
        wanted |= {s.parent for s in self.specs if s.parent}
        ids = sorted(wanted)
        if self.jobs is not None and self.jobs.read_by_export(len(self.specs)):
            self._read_export(wanted)
        else:
            for twin in self._read_twins(ids, wanted):
                self.state[twin["deviceId"]] = Known(identity_from_twin(twin), False, twin)
        # A device the query does not show is taken as absent: a create then meets DeviceAlreadyExists and is
        # reconciled; a device declared absent but created moments ago (not yet indexed) is deleted by the next
        # run.  Confirming every unseen absent device with GET would cost a read per device every night.
        for device_id in ids:
            self.state.setdefault(device_id, Known(None, True, None))
        self.selected: Dict[str, List[str]] = {}  # selector -> every device it matched (declared or not)
        candidates = []
        if self.prune_children:
            kids = self.children_of([self.state[d].identity["deviceScope"] for d in self.prunable()])
            matched = sorted({t["deviceId"] for ts in kids.values() for t in ts})
            self.selected["prune_children"] = matched
            for scope, twins in kids.items():
                for t in twins:
                    if t["deviceId"] not in self.by_id:
                        self.prune_why.setdefault(t["deviceId"], scope)
        if self.prune:
            matched = sorted({self._remember(t) for t in self._prune_query() if t.get("deviceId")})
            self.selected["prune_query"] = matched
            for did in matched:
                if did not in self.by_id:
                    self.prune_why[did] = "prune_query"
        return self.confirm_prune(sorted(self.prune_why))

    def _prune_query(self):
        try:
            yield from self.client.query(PRUNE_QUERY_PREFIX + self.prune_query)
        except AuthorizationError:
            raise
        except IoTApiError as exc:
            if getattr(exc, "status", None) == 400:  # deterministic: the hub cannot read the clause
                raise PlanError(f"prune_query {self.prune_query!r} was refused by IoT Hub: {exc}. Fix the clause "
                                "(string quotes are escaped as \\', reserved words as [[name]]); nothing was "
                                "written") from None
            raise

    def confirm_prune(self, ids: List[str]) -> List[str]:
        """The prune candidates that still are candidates on a strongly consistent read: each twin is read with GET
        (the query that found them lags) and must still match ``prune_query``, or still name the gateway whose
        child it was for ``prune_children``.  A device another job moved out of the selection, or deleted, is
        dropped with a note and never deleted; the deletes use the etag this read shows."""
        def fetch(did):
            return did, self.client.get_twin(did)
        confirmed = []
        for did, twin in self._pool(fetch, sorted(ids)):
            why = self.prune_why.get(did)
            if twin is None:
                self.state[did] = Known(None, True, None)
                self.prune_why.pop(did, None)
                self.out.notes.append(f"{did}: no longer exists (read with GET); nothing to prune")
                continue
            self.state[did] = Known(identity_from_twin(twin), False, twin)
            if why == "prune_query":
                still = self.prune_match(twin)
                lost = f"no longer matches prune_query {self.prune_query!r}"
            else:
                still = parent_scope_of(twin) == why
                lost = f"is no longer a child of {parent_id_of_scope(why) or why!r}"
            if still:
                confirmed.append(did)
                continue
            self.prune_why.pop(did, None)
            self.maybe_written.pop(did, None)  # it is there: a delete of an earlier attempt did not land
            self.out.notes.append(f"{did}: {lost} (read with GET: another writer moved it); left alone")
        return confirmed

    def _edge_scope(self, did: str) -> Optional[str]:
        known = self.state.get(did)
        return known.edge_scope if known else None

    def prunable(self) -> List[str]:
        """The declared, existing edge devices whose undeclared direct children ``prune_children`` deletes.

        Only the roots of the declared tree (their parent is not declared in this task) and the gateways this task
        declares children of (at least one declared child, or an explicit ``children`` list in a tree).  A nested
        gateway declared without any of its children keeps them: a task that does not mention a gateway's
        children never deletes them (edge_gateway lists a child gateway, not its grandchildren)."""
        parents_of_declared = {s.parent for s in self.specs if s.state == "present" and s.parent}
        out = []
        for s in self.specs:
            if s.state != "present" or not self._edge_scope(s.device_id):
                continue
            root = not s.parent or s.parent not in self.by_id
            if root or s.device_id in parents_of_declared or s.device_id in self.declares_children:
                out.append(s.device_id)
        return sorted(out)

    def children_of(self, scopes: List[str]) -> Dict[str, List[Dict[str, Any]]]:
        """The hub's direct children of each edge scope (remembered as read state)."""
        found = self.client.children_of_scopes(scopes)
        for twins in found.values():
            for twin in twins:
                self._remember(twin)
        return found

    # ------------------------------------------------------------ deletions
    def plan_deletes(self, candidates: List[str]) -> List[List[DeviceSpec]]:
        """Every device this run deletes, in levels to run one after the other (children before parents), after
        the guard rails: descendants of pruned gateways (``prune_descendants``), no orphaned children
        (``orphan_children``), ``max_deletes`` and the empty-declaration guard.  Raises before any write."""
        deleting = {s.device_id for s in self.specs if s.state == "absent" and self._exists(s.device_id)}
        deleting |= set(candidates)
        if self.prune_descendants:
            frontier = sorted(d for d in candidates if self._edge_scope(d))
            for _layer in range(MAX_EDGE_DEPTH + 1):
                if not frontier:
                    break
                kids = self.children_of([self._edge_scope(d) for d in frontier])
                for scope, twins in kids.items():
                    for t in twins:
                        if t["deviceId"] not in deleting and t["deviceId"] not in self.by_id:
                            self.prune_why.setdefault(t["deviceId"], scope)
                new = self.confirm_prune(sorted({t["deviceId"] for ts in kids.values() for t in ts}
                                                - deleting - set(self.by_id)))
                deleting |= set(new)
                frontier = [d for d in new if self._edge_scope(d)]
        if not self.orphan_children:
            self._refuse_orphans(deleting)
        self._check_delete_budget(deleting, candidates)
        self.deleting_scopes = {self._edge_scope(d): d for d in deleting if self._edge_scope(d)}
        return self._delete_levels(deleting)

    def _exists(self, did: str) -> bool:
        known = self.state.get(did)
        return bool(known and known.exists)

    def _refuse_orphans(self, deleting: set) -> None:
        gateways = sorted(d for d in deleting if self._edge_scope(d))
        if not gateways:
            return
        kids = self.children_of([self._edge_scope(d) for d in gateways])
        owner = {self._edge_scope(d): d for d in gateways}
        problems = []
        for scope, twins in sorted(kids.items()):
            left = []
            for t in twins:
                did = t["deviceId"]
                spec = self.by_id.get(did)
                moving_away = spec is not None and spec.state == "present" and spec.parent is not None \
                    and spec.parent != owner[scope]
                if did not in deleting and not moving_away:
                    left.append(did)
            if left:
                problems.append(f"{owner[scope]!r} (children: {', '.join(sorted(left)[:10])}"
                                f"{', ...' if len(left) > 10 else ''})")
        if problems:
            raise PlanError("deleting IoT Edge device(s) that still have children would leave those children pointing "
                            "at a parent that no longer exists: " + "; ".join(problems[:10])
                            + ". Delete or move the children in the same task, or set orphan_children=true"
                            + (" (edge_hierarchy deletes a removed gateway's whole subtree)" if self.prune_children else ""))

    def _check_delete_budget(self, deleting: set, candidates: List[str]) -> None:
        n = len(deleting)
        first = ", ".join(sorted(deleting)[:10]) + (", ..." if n > 10 else "")
        if self.max_deletes is not None:
            if n > self.max_deletes:
                raise PlanError(f"this run would delete {n} device(s) ({first}), more than max_deletes="
                                f"{self.max_deletes}; nothing was written. Check the declared devices and the prune "
                                "selector, or raise max_deletes")
            return
        for selector, matched in self.selected.items():
            undeclared = [d for d in matched if d not in self.by_id]
            what = (f"prune_query {self.prune_query!r}" if selector == "prune_query"
                    else "prune_children (every child of the declared gateways)")
            if matched and len(undeclared) == len(matched):
                raise PlanError(f"{what} selects {len(matched)} device(s) and this task declares none of them, so "
                                f"prune would delete them all ({', '.join(matched[:10])}"
                                f"{', ...' if len(matched) > 10 else ''}); refused, as this is usually an empty or "
                                "wrong device list. Set max_deletes to the number you mean to delete to allow it")
        pruned = sorted(d for d in deleting if d in self.prune_why)
        matched_all = set().union(*self.selected.values()) if self.selected else set()
        allowed = max(PRUNE_FREE_COUNT, int(PRUNE_FREE_SHARE * len(matched_all)))
        if len(pruned) > allowed:
            raise PlanError(f"prune would delete {len(pruned)} of the {len(matched_all)} device(s) its selector "
                            f"matches ({', '.join(pruned[:10])}{', ...' if len(pruned) > 10 else ''}): more than "
                            f"{PRUNE_FREE_COUNT} and more than {int(PRUNE_FREE_SHARE * 100)} %, which is the mark of a "
                            "device list cut short (a failed lookup); nothing was written. Check the declared "
                            f"devices, or set max_deletes={len(deleting)} to allow exactly this")

    def _delete_levels(self, deleting: set) -> List[List[DeviceSpec]]:
        """Children before their parents: the deepest devices of the deletion set first."""
        owner = {self._edge_scope(d): d for d in deleting if self._edge_scope(d)}
        depth: Dict[str, int] = {}

        def level(did: str, seen=()) -> int:
            if did not in depth:
                ident = self.state[did].identity if self._exists(did) else None
                parent_scope = ((ident.get("parentScopes") or [None])[0]) if ident else None
                parent = owner.get(parent_scope) if parent_scope else None
                depth[did] = 0 if parent is None or parent == did or parent in seen else level(parent, seen + (did,)) + 1
            return depth[did]
        by_level: Dict[int, List[DeviceSpec]] = {}
        for did in sorted(deleting):
            spec = self.by_id.get(did) or DeviceSpec(device_id=did, state="absent")
            by_level.setdefault(level(did), []).append(spec)
        return [by_level[k] for k in sorted(by_level, reverse=True)]

    def _read_export(self, wanted: set) -> None:
        """Read the registry through an export job: its devices.txt is streamed line by line, and only the wanted
        devices are kept.  The export is current (no query index lag), and with keys it spares the GETs a SAS
        device's rewrite otherwise needs."""
        keys = self.jobs.export_keys(self.specs)
        canonical = {did: did for did in wanted}  # the state is keyed by the declared id strings (no second copy)
        for line in self.jobs.export(keys, devices=len(wanted)):
            did = canonical.get(line.get("id"))
            if did is not None and not line.get("moduleId"):
                identity, twin = from_export_line(line)
                self.state[did] = Known(identity, keys, twin)
        self.read_current = True

    def _read_twins(self, ids: List[str], wanted: set):
        """The twins of the wanted devices, by a scan of the hub or by ``deviceId IN [...]`` lists, whichever costs
        fewer query pages at the page size the hub actually uses (documented: up to 100; the first full page of
        the scan shows it): a scan costs ceil(devices in the hub / page), the lists about one page per page-full
        of ids."""
        total = next(iter(self.client.query("SELECT COUNT() AS n FROM devices")), {}).get("n", 0)
        if not ids:
            return
        pages = self.client.query_pages("SELECT * FROM devices")
        first = next(pages, None)
        if first is None:
            return
        items, token = first
        page = self.client.page_size
        yield from (t for t in items if t.get("deviceId") in wanted)
        if not token:
            return
        scan_left = max(0, -(-total // page) - 1)
        chunks = self._in_chunks(ids, page)
        if scan_left <= len(chunks):
            for items, _token in pages:
                yield from (t for t in items if t.get("deviceId") in wanted)
            return
        pages.close()
        for chunk in chunks:
            yield from self.client.query(chunk)

    @staticmethod
    def _in_chunks(ids: List[str], per_chunk: int) -> List[str]:
        """IN-list queries of at most PER_CHUNK ids (one page each) and MAX_QUERY_CHARS characters."""
        chunks, current = [], []
        base = "SELECT * FROM devices WHERE deviceId IN []"
        length = len(base)
        for did in ids:
            lit = quote_literal(did)
            if current and (length + len(lit) + 2 > MAX_QUERY_CHARS or len(current) >= per_chunk):
                chunks.append(current)
                current, length = [], len(base)
            current.append(lit)
            length += len(lit) + 2
        if current:
            chunks.append(current)
        return [f"SELECT * FROM devices WHERE deviceId IN [{', '.join(c)}]" for c in chunks]

    def refresh(self, ids: List[str], with_twin: bool = False) -> None:
        """GET the full identities (keys included), and the twins when asked."""
        def fetch(did):
            device = self.client.get_device(did)
            twin = self.client.get_twin(did) if (with_twin and device is not None) else None
            return did, device, twin
        for did, device, twin in self._pool(fetch, sorted(set(ids))):
            old = self.state.get(did)
            if device is None:
                self.state[did] = Known(None, True, None)
            else:
                self.state[did] = Known(device, True, twin if twin is not None else (old.twin if old else None))

    # ------------------------------------------------------------- planning
    def check_parents(self, candidates: List[str]) -> None:
        """After the read, before any write: every referenced parent exists (or is declared) and is edge."""
        problems = []
        missing = [s.parent for s in self.specs if s.state == "present" and s.parent and s.parent not in self.by_id
                   and not self.state[s.parent].exists]
        if missing:
            self.refresh(missing)  # the query index lags: confirm with GET before calling a parent missing
        for s in self.specs:
            if s.state != "present" or not s.parent:
                continue
            if s.parent in candidates:
                problems.append(f"{s.device_id!r}: its parent {s.parent!r} matches prune_query but is not declared; "
                                "declare it or narrow prune_query")
                continue
            declared = self.by_id.get(s.parent)
            known = self.state.get(s.parent)
            current_edge = bool(known and known.edge)
            if declared is not None:
                if declared.edge_enabled is None and not current_edge and known and known.exists:
                    problems.append(f"{s.device_id!r}: parent {s.parent!r} is not an IoT Edge device; declare it "
                                    "with edge_enabled=true")
                elif declared.edge_enabled is None and (known is None or not known.exists):
                    problems.append(f"{s.device_id!r}: parent {s.parent!r} is declared without edge_enabled=true "
                                    "and does not exist yet; declare it with edge_enabled=true")
                continue
            if self.check_mode and not current_edge:
                why = "does not exist" if known is None or not known.exists else "is not an IoT Edge device"
                self.out.warnings.append(f"{s.device_id}: parent {s.parent!r} {why} (yet); check mode assumes an "
                                         "earlier task makes it an edge device. If it is a typo, the real run will fail")
                continue
            if known is None or not known.exists:
                problems.append(f"{s.device_id!r}: parent {s.parent!r} does not exist; declare it in devices or "
                                "create it first")
            elif not current_edge:
                problems.append(f"{s.device_id!r}: parent {s.parent!r} is not an IoT Edge device")
        if problems:
            raise PlanError("devices: " + "; ".join(problems[:20]) + (f" (and {len(problems) - 20} more)" if len(problems) > 20 else ""))

    # ------------------------------------------------------------- topology
    def check_topology(self) -> None:
        """The rules the hub enforces against its current state, before any write (check mode too): a device
        with children stays an IoT Edge device; no parent cycle through existing devices; at most MAX_EDGE_DEPTH
        edge layers, counting the existing chain above a declared device (one GET per ancestor, at most five).
        Only devices whose place changes (created, moved, edge switched on) are walked: a no-op run reads nothing."""
        problems = []
        leaving = {s.device_id: self._edge_scope(s.device_id) for s in self.specs
                   if s.state == "present" and s.edge_enabled is False and self._edge_scope(s.device_id)}
        if leaving:
            kids = self.children_of(list(leaving.values()))
            for did, scope in sorted(leaving.items()):
                left = sorted(t["deviceId"] for t in kids[scope] if not self._leaves(t["deviceId"], did))
                if left:
                    problems.append(f"{did!r} is declared edge_enabled=false but still has {len(left)} child device(s) "
                                    f"({', '.join(left[:10])}{', ...' if len(left) > 10 else ''}); a parent must stay an "
                                    "IoT Edge device: move or delete its children first (in this task or before)")
        scope_owner = {self._edge_scope(d): d for d in self.state if self._edge_scope(d)}
        for s in self.specs:
            if s.state != "present" or not self._is_edge(s.device_id) or not self._moves(s):
                continue
            chain, cur = [], s.device_id
            while len(chain) <= MAX_EDGE_DEPTH:
                cur = self._parent_after(cur, scope_owner)
                if cur is None:
                    break
                if cur == s.device_id or cur in chain:
                    problems.append(f"{s.device_id!r}: parent cycle through existing devices: "
                                    f"{' -> '.join([s.device_id] + chain + [cur])}")
                    break
                chain.append(cur)
            height = self._declared_height(s.device_id)
            if len(chain) + height > MAX_EDGE_DEPTH and not any(p.startswith(f"{s.device_id!r}: parent cycle") for p in problems):
                problems.append(f"{s.device_id!r} would be at IoT Edge layer {len(chain) + 1}"
                                + (f" with {height - 1} edge layer(s) below it" if height > 1 else "")
                                + f" ({' -> '.join(list(reversed(chain)) + [s.device_id])}); IoT Edge supports at "
                                f"most {MAX_EDGE_DEPTH}")
        if problems:
            raise PlanError("devices: " + "; ".join(problems[:20]) + (f" (and {len(problems) - 20} more)" if len(problems) > 20 else ""))

    def _leaves(self, child: str, parent: str) -> bool:
        """Whether CHILD stops being a child of PARENT in this run (declared elsewhere, detached or deleted)."""
        spec = self.by_id.get(child)
        return spec is not None and (spec.state == "absent" or (spec.parent is not None and spec.parent != parent))

    def _moves(self, s: DeviceSpec) -> bool:
        known = self.state.get(s.device_id)
        if known is None or not known.exists:
            return True
        if s.edge_enabled and not known.edge:
            return True
        current = (known.identity.get("parentScopes") or [None])[0]
        return s.parent is not None and (self._edge_scope(s.parent) if s.parent else None) != current

    def _hub_parent(self, did: str, scope_owner: Dict[str, str]) -> Optional[str]:
        """The device id of DID's parent in the hub (None for none): from the devices read, else one GET to
        confirm the owner of the scope (a scope of a deleted device has none)."""
        known = self.state.get(did)
        ident = known.identity if known else None
        scope = ((ident.get("parentScopes") or [None])[0]) if ident else None
        if not scope:
            return None
        if scope not in scope_owner:
            pid = parent_id_of_scope(scope)
            if pid and pid not in self.state:
                self.refresh([pid])
            scope_owner[scope] = pid if pid and self._edge_scope(pid) == scope else None
        return scope_owner[scope]

    def _parent_after(self, did: str, scope_owner: Dict[str, str]) -> Optional[str]:
        spec = self.by_id.get(did)
        if spec is not None and spec.state == "present" and spec.parent is not None:
            return spec.parent or None
        return self._hub_parent(did, scope_owner)

    def _declared_height(self, did: str) -> int:
        """Edge layers at and below DID among the declared devices (1 for an edge device without edge children)."""
        kids = [s.device_id for s in self.specs if s.state == "present" and s.parent == did and self._is_edge(s.device_id)]
        return 1 + max((self._declared_height(k) for k in kids), default=0)

    def levels(self) -> List[List[DeviceSpec]]:
        depth: Dict[str, int] = {}

        def level(s: DeviceSpec) -> int:
            # A device waits for its parent only when the parent's scope is not known yet (a parent created, or
            # made an edge device, in this run).  Below existing gateways every device goes in the first wave,
            # however deep: a drift of k devices costs ceil(k/100) bulk calls.
            if s.device_id not in depth:
                parent = self.by_id.get(s.parent) if s.parent else None
                ready = parent is None or self._edge_scope(parent.device_id) is not None
                depth[s.device_id] = 0 if ready else level(parent) + 1
            return depth[s.device_id]
        out: Dict[int, List[DeviceSpec]] = {}
        for s in self.specs:
            if s.state == "present":
                out.setdefault(level(s), []).append(s)
        return [out[k] for k in sorted(out)]

    def parent_scope(self, s: DeviceSpec) -> Optional[str]:
        if s.parent is None or s.parent == "":
            return s.parent
        known = self.state.get(s.parent)
        scope = known.device_scope if known else None
        if scope:
            return scope
        if self.check_mode:
            return planned_scope(s.parent)
        raise PlanError(f"devices: parent {s.parent!r} of {s.device_id!r} has no deviceScope yet")

    def plan(self, s: DeviceSpec):
        known = self.state.get(s.device_id) or Known(None, True, None)
        spec, intent = s, self.key_intents.get(s.device_id)
        if intent is not None:
            if known.exists and not known.keys_known and intent.keys is None:
                spec = s.with_keys(None, None)  # the keys are not read yet: rotated once they are (needs_get)
            else:
                spec = intent.spec_for(s, known.identity)
        plan = plan_device(spec, known.identity, self.parent_scope(s) if s.state == "present" else None,
                           fresh_key() if spec.rotate_keys else None)
        if intent is not None and spec.rotate_keys:
            intent.record(spec, plan)
        twin = plan_twin(s, known.twin) if s.state == "present" and plan.action != "delete" else {}
        for part, option in (("tags", "tags"), ("desired", "desired_properties")):
            full = (twin.get("full") or {}).get(part)
            if full is not None:
                limit = TWIN_SECTION_LIMITS[option]
                size = section_size(full)
                if size > limit:
                    raise PlanError(f"devices: {s.device_id!r}: {option} would be {size} bytes with what the twin holds "
                                    f"already; IoT Hub allows {limit}: remove keys (value null) or shorten values")
        return plan, twin, known

    def needs_get(self, s: DeviceSpec, plan: DevicePlan, known: Known) -> bool:
        if known.keys_known or not known.exists or s.state != "present":
            return False
        if s.primary_key is not None or s.secondary_key is not None or s.rotate_keys:
            return True  # declared keys must be compared with the hub's, a rotation keeps the other key
        return plan.action == "update" and plan.after["auth_type"] == "sas" and plan.before["auth_type"] == "sas"

    # --------------------------------------------------------------- writes
    def entry(self, s: DeviceSpec, plan: DevicePlan, twin: Dict[str, Any], known: Known) -> Optional[Dict[str, Any]]:
        """The bulk entry for a device, or None (nothing to write in a bulk call).  It shares the plan's values: it is
        serialized at once, never changed.

        Twin data travels in a create entry (the import docs define it for the create modes), or in its own
        updateTwinIfMatchETag entry carrying the complete intended sections, so that a hub that merges and a
        hub that replaces the supplied sections end with the same twin.  An identity update carries no twin
        data: the twin follows in a later call.  A removal of a twin key goes through a twin PATCH (``patch``)."""
        e: Dict[str, Any] = {"id": s.device_id}
        if plan.action in ("create", "update"):
            e["importMode"] = "create" if plan.action == "create" else "updateIfMatchETag"
            if plan.action == "update":
                e["eTag"] = plan.etag
            for k in EXPORT_FIELDS:
                if k in plan.body and not (k == "deviceScope" and plan.body[k] is None):
                    e[k] = plan.body[k]
            if plan.action == "create":
                self._twin_fields(e, twin)
            return e
        if plan.action == "delete":
            e.update(importMode="deleteIfMatchETag", eTag=plan.etag)
            return e
        if twin and not twin.get("removes") and (known.twin or {}).get("etag"):
            e.update(importMode="updateTwinIfMatchETag", twinETag=known.twin["etag"])
            self._twin_fields(e, twin)
            return e
        return None

    @staticmethod
    def _twin_fields(e: Dict[str, Any], twin: Dict[str, Any]) -> None:
        full = twin.get("full") or {}
        if "tags" in full:
            e["tags"] = full["tags"]
        if "desired" in full:
            e["properties"] = {"desired": full["desired"]}

    def patch_twins(self, todo: List[tuple]) -> Dict[str, Optional[str]]:
        """Twin PATCHes (with If-Match of the twin etag read) for the twins that lose keys: {id: None when applied,
        else "PreconditionFailed" / "DeviceNotFound" (re-read and re-plan) or the error}."""
        def one(item):
            s, twin, known = item
            patch = {}
            if "tags" in twin:
                patch["tags"] = twin["tags"]
            if "desired" in twin:
                patch["properties"] = {"desired": twin["desired"]}
            try:
                r = self.client.patch_twin(s.device_id, patch, (known.twin or {}).get("etag"))
            except AuthorizationError:
                raise
            except IoTApiError as exc:
                return s.device_id, (str(exc), isinstance(exc, AmbiguousWriteError))
            maybe = maybe_applied(r)
            if r.status_code == 200:
                return s.device_id, (None, maybe)
            if r.status_code in (404, 412):
                return s.device_id, ("DeviceNotFound" if r.status_code == 404 else "PreconditionFailed", maybe)
            return s.device_id, (str(error_from_response(r, f"update twin of {s.device_id!r}")), maybe)
        return dict(self._pool(one, todo))

    def send(self, entries: List[tuple]) -> Dict[str, tuple]:
        """Write the entries ((device id, import mode, JSON) each): through an import job when there are many
        (storage_container_uri), else bulk calls.  {device id: (error or None when applied, maybe_applied)}."""
        if self.jobs is not None and entries and self.jobs.write_by_import(len(entries)):
            return self.jobs.import_entries(entries)
        return self.send_bulk(entries)

    def send_bulk(self, entries: List[tuple]) -> Dict[str, tuple]:
        """POST /devices in chunks: {device id: (error or None when applied, maybe_applied)}.

        ``maybe_applied``: an earlier attempt of the call reached the hub unanswered, so an entry refused now
        (409/412/404) may have been applied by that attempt."""
        chunks = [entries[i:i + self.batch_size] for i in range(0, len(entries), self.batch_size)]

        def post(chunk):
            try:
                r = self.client.bulk([json.loads(text) for _did, _mode, text in chunk])
            except AuthorizationError:
                raise  # the whole call was refused for a missing right: every other call would be too; stop
            except IoTApiError as exc:  # retries exhausted: this chunk is not confirmed, the others stand
                lost = isinstance(exc, AmbiguousWriteError)
                return {did: ({"deviceId": did, "errorCode": exc.code or "RequestFailed",
                               "errorStatus": f"{exc} (not confirmed; a re-run converges)", "operation": mode}, lost)
                        for did, mode, _text in chunk}
            maybe = maybe_applied(r)
            if r.status_code == 200:
                return {did: (None, maybe) for did, _mode, _text in chunk}
            try:
                body = r.json()
            except ValueError:
                body = None
            if r.status_code == 400 and isinstance(body, dict) and "isSuccessful" in body:
                errors = {err.get("deviceId"): err for err in body.get("errors") or []}
                return {did: (errors.get(did), maybe) for did, _mode, _text in chunk}
            err = error_from_response(r, f"bulk call of {len(chunk)} devices")
            return {did: ({"deviceId": did, "errorCode": err.code or f"HTTP{r.status_code}",
                           "errorStatus": str(err), "operation": mode}, maybe) for did, mode, _text in chunk}
        results: Dict[str, tuple] = {}
        if len(chunks) > 1 and not self._write_proven:
            # The first call goes alone: a credential without the right is refused once, not once per chunk.
            results.update(post(chunks.pop(0)))
        self._write_proven = True
        for part in self._pool(post, chunks):
            results.update(part)
        return results

    def converge(self, specs: List[DeviceSpec]) -> None:
        pending = list(specs)
        for round_no in range(1, MAX_ROUNDS + 2):
            entries: List[tuple] = []  # (device id, import mode, the entry as JSON): what send() writes
            by_id: Dict[str, Pending] = {}
            patches: List[tuple] = []
            for start in range(0, len(pending), PLAN_CHUNK):
                self._plan_chunk(pending[start:start + PLAN_CHUNK], entries, by_id, patches)
            if self.check_mode:
                writes = sorted({did for did, p in by_id.items() if p.action != "delete"}
                                | {s.device_id for s, _twin, _known in patches})
                if writes and round_no == 1 and not self.read_current:
                    # The query index lags: a device created moments ago is invisible to it, a twin changed moments
                    # ago shows its old content.  The real run reconciles that through its conditional writes;
                    # check mode must not predict a write it would not make: confirm with GET (twin included).
                    self.refresh(writes, with_twin=True)
                    continue
                for did, p in by_id.items():
                    self._record(did, p.mode)
                    if p.action in ("create", "update"):
                        self.state[did] = p.successor  # what the write would leave (children plan against it)
                for s, _twin, _known in patches:
                    self._record(s.device_id, "updateTwin")
                return
            if not entries and not patches:
                return
            last = round_no >= MAX_ROUNDS
            retry, to_refresh = [], []
            for did, (err, maybe) in self.send(entries).items():
                p = by_id[did]
                if err is None:
                    self._record(did, p.mode)
                    self.state[did] = p.successor
                    if p.stale:
                        self._stale.add(did)  # a new edge device's scope is known only after a read
                    if p.twin_follows:
                        retry.append(p.spec)  # the twin follows in the next call (never inside an identity update)
                    continue
                if maybe:
                    self.maybe_written.setdefault(did, p.mode)
                code = err.get("errorCode")
                if code == "DeviceNotFound" and p.mode == "deleteIfMatchETag":
                    self.state[did] = Known(None, True, None)
                    self._settled(did, "already deleted")
                    continue
                if code in RECONCILE_CODES and not last:
                    self.out.notes.append(f"{did}: {code} on {p.mode}; re-read and re-planned")
                    retry.append(p.spec)
                    to_refresh.append(did)
                    continue
                self._fail(did, code, err.get("errorStatus"), err.get("operation") or p.mode, maybe)
            for did, (err, maybe) in self.patch_twins(patches).items():
                s = self.by_id[did]
                if err is None:
                    self._record(did, "updateTwin")
                    self.state[did] = self.state[did].without_twin()
                    continue
                if maybe:
                    self.maybe_written.setdefault(did, "updateTwin")
                if err in ("PreconditionFailed", "DeviceNotFound") and not last:
                    self.out.notes.append(f"{did}: {err} on the twin PATCH; re-read and re-planned")
                    retry.append(s)
                    to_refresh.append(did)
                    continue
                self._fail(did, err if err in ("PreconditionFailed", "DeviceNotFound") else "TwinUpdateFailed", err,
                           "twin PATCH", maybe)
            recheck = [d for d in to_refresh if d in self.prune_why]
            if recheck:  # a pruned device that met a conflict is re-checked against its selector, never re-planned
                still = set(self.confirm_prune(recheck))  # as a plain state=absent
                retry = [s for s in retry if s.device_id not in recheck or s.device_id in still]
                to_refresh = [d for d in to_refresh if d not in recheck]
            if to_refresh:
                self.refresh(to_refresh, with_twin=True)
            pending = retry
            if not pending:
                return

    def _plan_chunk(self, chunk: List[DeviceSpec], entries: List[tuple], by_id: Dict[str, "Pending"],
                    patches: List[tuple]) -> None:
        """Plan CHUNK (again after a GET, where keys must be read first) and collect its writes.  Planning goes
        a chunk at a time and an unchanged device keeps nothing: a fleet's 100,000 plans are never held at once,
        and a write keeps only its entry (as JSON) and what the state becomes once it lands."""
        planned = [(s, *self.plan(s)) for s in chunk]
        need = [s.device_id for s, plan, _twin, known in planned if self.needs_get(s, plan, known)]
        if need:
            self.refresh(need)
            planned = [(s, *self.plan(s)) for s in chunk]
        for s, plan, twin, known in planned:
            if plan.action != "none" or twin:
                self._keep_for_diff(s.device_id, plan, twin, known)
            e = self.entry(s, plan, twin, known)
            if e is not None:
                entries.append((s.device_id, e["importMode"], json.dumps(e, separators=(",", ":"))))
                by_id[s.device_id] = Pending(s, plan.action, e["importMode"], self._successor(s, plan, known),
                                             plan.action == "update" and bool(twin),
                                             plan.action in ("create", "update") and plan.after["edge_enabled"]
                                             and not (plan.body or {}).get("deviceScope"))
            elif twin and plan.action == "none":
                patches.append((s, twin, known))
            else:
                self._settled(s.device_id)

    def _keep_for_diff(self, did: str, plan: DevicePlan, twin: Dict[str, Any], known: Known) -> None:
        """The keys a changed device's plan saw go to ``hide``; its plan and twin views are kept for the diff only
        when one is asked for (a summary keeps those of the DIFF_KEPT ids that sort first: a 100,000-device first
        apply in diff mode holds 1,000 to 2,000 plans, not 100,000).  A re-plan that finds nothing left keeps the
        plan the task acted on."""
        if self.hide is not None:
            for key in plan_secrets(plan):
                self.hide(key)
        if self.diff_detail is None or (self._diff_cut is not None and did > self._diff_cut):
            return
        self.plans[did] = plan
        if twin or did not in self.views:
            self.views[did] = self._twin_views(twin, known.twin), known.keys_known
        if self.diff_detail != "full" and len(self.plans) > 2 * DIFF_KEPT:
            kept = sorted(self.plans)[:DIFF_KEPT]
            self._diff_cut = kept[-1]
            self.plans = {d: self.plans[d] for d in kept}
            self.views = {d: self.views[d] for d in kept if d in self.views}

    def _successor(self, s: DeviceSpec, plan: DevicePlan, known: Known) -> Optional[Known]:
        """What the reconciler knows of the device once the plan's write lands (in check mode: what it predicts,
        with a planned scope for a new edge device, so that its children plan against it)."""
        if plan.action == "delete":
            return Known(None, True, None)
        if self.check_mode:
            if plan.action not in ("create", "update"):
                return None
            body = dict(plan.body)
            if plan.after["edge_enabled"] and not body.get("deviceScope"):
                body["deviceScope"] = planned_scope(s.device_id)
            return Known(body, True, None)
        if plan.action == "create":
            return Known(None, False, None)  # its etag, keys and scope are the hub's: read again when needed
        if plan.action == "update":
            # An identity write leaves the twin (and its etag) as it was: keep it for the twin that follows.
            return Known(plan.body, known.keys_known, known.twin)
        return known.without_twin()  # a twin-only entry: the identity stays

    def _fail(self, did: str, code: Optional[str], status: Optional[str], operation: str, maybe: bool) -> None:
        if maybe:
            self.out.unconfirmed_writes = True
        self.out.failed.append({"deviceId": did, "errorCode": code, "errorStatus": status, "operation": operation})

    def _settled(self, did: str, why: Optional[str] = None) -> None:
        """Nothing (more) to write for DID: it is unchanged, unless an earlier attempt's lost answer applied it."""
        mode = self.maybe_written.pop(did, None)
        if mode is not None:
            self._record(did, mode)
            self.out.notes.append(f"{did}: the {mode} of an earlier attempt was applied by the hub (its answer was "
                                  "lost); the device now matches: counted as written")
        elif why is not None:
            self.out.notes.append(f"{did}: {why}")
        elif not self._written(did):
            self.out.unchanged.add(did)

    def _written(self, did: str) -> bool:
        return did in self.out.created or did in self.out.updated or did in self.out.deleted

    def _record(self, did: str, mode: str) -> None:
        bucket = (self.out.created if mode == "create" else self.out.deleted if mode.startswith("delete")
                  else self.out.updated)
        bucket.add(did)

    # ------------------------------------------------------------------ run
    def run(self) -> Outcome:
        candidates = self.read()
        self.check_parents(candidates)
        self.check_topology()
        delete_levels = self.plan_deletes(candidates)  # every guard rail is checked before the first write
        levels = self.levels()
        for i, level in enumerate(levels):
            self.converge(level)
            # Children of the next level need their parents' scopes: read back parents written just now.
            if i + 1 < len(levels) and not self.check_mode:
                parents = {s.parent for s in levels[i + 1] if s.parent}
                stale = sorted(p for p in parents if p in self._stale)
                if stale:
                    self.refresh(stale)
        if not self.check_mode:
            unknown = [s.device_id for s in self.specs if s.state == "present" and self._is_edge(s.device_id)
                       and not self.state[s.device_id].device_scope]
            if unknown:
                self.refresh(unknown)
        for s in self.specs:
            if s.state == "absent" and not self._exists(s.device_id):
                self._settled(s.device_id)
        for level in delete_levels:  # children before their parents
            self.converge(level)
        if not self.check_mode and not self.orphan_children:
            self.check_no_orphans()
        return self.out

    def rotated_identities(self) -> List[Dict[str, Any]]:
        """The identities (id and keys) of the devices whose keys this task rotated, with the keys the hub holds:
        the keys written for a confirmed rotation, those read back (GET) for one that failed or was not done (its
        write may have landed).  A rotation that landed unanswered must not leave the caller without the live key."""
        out, read_back = [], []
        failed = {f["deviceId"] for f in self.out.failed}
        for did, intent in sorted(self.key_intents.items()):
            keys = intent.keys  # None: no rotation decided (a create, or not planned before the run stopped)
            if keys is None:
                continue
            if did in self.out.updated and did not in failed:
                out.append({"deviceId": did, "authentication": {"symmetricKey": {"primaryKey": keys[0],
                                                                                 "secondaryKey": keys[1]}}})
            else:  # failed, or not done when the run stopped
                read_back.append(did)
        for did in read_back:
            try:
                live = self.client.get_device(did)
            except IoTApiError:
                continue
            if live is not None:
                out.append(live)
        return sorted(out, key=lambda d: d["deviceId"])

    def check_no_orphans(self) -> None:
        """After deleting gateways, ask the index once more for their children.  The guard before the deletes saw
        the index, which lags: a child attached within the lag is invisible to it, and nothing consistent lists a
        gateway's children.  A child found now is reported as a failure that names it (the delete has happened)."""
        gone = {scope: did for scope, did in self.deleting_scopes.items() if did in self.out.deleted}
        if not gone:
            return
        for scope, twins in self.client.children_of_scopes(sorted(gone)).items():
            for t in twins:
                child = t.get("deviceId")
                if child and child not in self.out.deleted:
                    self.out.failed.append({
                        "deviceId": child, "errorCode": "OrphanedChild", "operation": "orphan check",
                        "errorStatus": f"its parent {gone[scope]!r} was deleted by this task, but {child!r} still "
                                       f"names it: it was attached after the check before the delete (within the "
                                       "query index lag). Give it a new parent, or delete it"})

    def _is_edge(self, did: str) -> bool:
        s = self.by_id[did]
        if s.edge_enabled is not None:
            return s.edge_enabled
        k = self.state.get(did)
        return bool(k and k.edge)

    def edge_devices(self) -> List[Dict[str, Any]]:
        """Every declared edge device with its scope (None when unknown, e.g. in check mode), declared children, its
        ``layer`` among the declared devices (1: no declared edge parent) and the ``deployment`` its tree node
        carries (None without one), top-down."""
        children: Dict[str, List[str]] = {}
        for s in self.specs:
            if s.state == "present" and s.parent:
                children.setdefault(s.parent, []).append(s.device_id)

        def layer(did: str, seen=()) -> int:
            parent = self.by_id[did].parent
            if not parent or parent not in self.by_id or parent in seen:
                return 1
            return layer(parent, seen + (did,)) + 1
        out = []
        for s in self.specs:
            if s.state != "present" or not self._is_edge(s.device_id):
                continue
            scope = self.state[s.device_id].device_scope
            if is_planned_scope(scope):
                scope = None
            out.append({"device_id": s.device_id, "device_scope": scope, "parent": s.parent or None,
                        "children": sorted(children.get(s.device_id, [])), "layer": layer(s.device_id),
                        "deployment": self.deployments.get(s.device_id)})
        return sorted(out, key=lambda d: d["layer"])

    @staticmethod
    def _twin_views(twin: Dict[str, Any], current_twin: Optional[Dict[str, Any]]) -> tuple:
        before, after = {}, {}
        current_twin = current_twin or {}
        for part, option, cur in (("tags", "tags", current_twin.get("tags")),
                                  ("desired", "desired_properties",
                                   ((current_twin.get("properties") or {}).get("desired")))):
            if twin.get(part):
                before[option], after[option] = twin_change_view(twin[part], cur)
        return before, after

    def diffs(self) -> List[Dict[str, Any]]:
        """Per device before/after (keys redacted, twin keys old beside new).  Above DIFF_SUMMARY_ABOVE changed
        devices, a summary first and the first DIFF_SUMMARY_ABOVE devices in full, unless ``diff_detail="full"``."""
        changed = sorted(self.out.created | self.out.updated | self.out.deleted)
        out = []
        if self.diff_detail != "full" and len(changed) > DIFF_SUMMARY_ABOVE:
            counts = {"created": len(self.out.created), "updated": len(self.out.updated), "deleted": len(self.out.deleted)}
            out.append({"before": "", "after_header": "iothub_device_bulk summary",
                        "after": f"{len(changed)} devices change ({', '.join(f'{k} {v}' for k, v in counts.items())}); "
                                 f"the first {DIFF_SUMMARY_ABOVE} are shown in full (diff_detail=full shows all)\n"})
            changed = changed[:DIFF_SUMMARY_ABOVE]
        for did in changed:
            plan = self.plans.get(did)
            if plan is None:
                continue
            (twin_before, twin_after), keys_read = self.views.get(did, (({}, {}), True))
            before = display_view(plan.before, keys_read=keys_read) if plan.before is not None else {}
            after = display_view(plan.after, [f for f in ("primary_key", "secondary_key") if f in plan.changes],
                                 keys_read=keys_read) if plan.after is not None else {}
            if plan.before is not None:
                before.update(twin_before)
            if plan.after is not None:
                after.update(twin_after)
            out.append({"before": before, "after": after, "before_header": f"iothub device {did} (hub)",
                        "after_header": f"iothub device {did} (planned)"})
        return out
