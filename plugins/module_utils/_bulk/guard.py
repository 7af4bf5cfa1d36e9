# -*- coding: utf-8 -*-
# Copyright: fleet.azure_iot contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""PRIVATE to fleet.azure_iot: iothub_device_bulk, its guard rails, all checked before the first write: parents, the
edge topology (through the shared rules of ``_topology``), what a prune deletes, orphans and the delete budget."""

from __future__ import annotations

from typing import Dict, List, Optional

from ansible_collections.fleet.azure_iot.plugins.module_utils._bulk.input import PRUNE_FREE_COUNT, PRUNE_FREE_SHARE
from ansible_collections.fleet.azure_iot.plugins.module_utils._errors import PlanError
from ansible_collections.fleet.azure_iot.plugins.module_utils._models import DeviceSpec
from ansible_collections.fleet.azure_iot.plugins.module_utils._topology import (
    MAX_EDGE_DEPTH,
    assumed_parent_warning,
    chain_above,
    edge_height,
    hub_parent,
    is_edge,
    leaving_edge_problem,
    orphaned_after_delete,
    orphans_problem,
    parent_problem,
    place_problem,
)


class FleetGuard:
    """The guard rails of ``BulkReconciler`` (a mixin over the reconciler's ``specs``, ``by_id``, ``state`` and
    options): every one is checked before the first write."""

    # ------------------------------------------------------------- planning
    def check_parents(self, candidates: List[str]) -> None:
        """After the read, before any write: every referenced parent exists (or is declared) and is edge."""
        problems = []
        hub_parents: Dict[str, Optional[dict]] = {}  # undeclared parent -> its identity as read (None: absent)
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
            if s.parent not in hub_parents:  # the same rule as iothub_device's, on the identity read
                hub_parents[s.parent] = known.identity if known is not None and known.exists else None
            parent = hub_parents[s.parent]
            if self.check_mode and not is_edge(parent):
                self.out.warnings.append(f"{s.device_id}: {assumed_parent_warning(s.parent, parent)}")
                continue
            problem = parent_problem(s.parent, parent)
            if problem:
                problems.append(f"{s.device_id!r}: {problem}")
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
                problem = leaving_edge_problem(did, [t["deviceId"] for t in kids[scope]
                                                     if not self._leaves(t["deviceId"], did)])
                if problem:
                    problems.append(f"{did!r}: {problem}")
        scope_owner = {self._edge_scope(d): d for d in self.state if self._edge_scope(d)}
        for s in self.specs:
            if s.state != "present" or not self._is_edge(s.device_id) or not self._moves(s):
                continue
            chain, cycle = chain_above(s.device_id, lambda d: self._parent_after(d, scope_owner))
            problem = place_problem(s.device_id, s.parent or None, chain, cycle, self._height(s.device_id))
            if problem:
                problems.append(f"{s.device_id!r}: {problem}")
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
        """The device id of DID's parent in the hub (None for none): ``_topology.hub_parent`` over the devices read,
        with one GET for an owner not read yet (a scope of a deleted device has none)."""
        known = self.state.get(did)
        ident = known.identity if known else None
        scope = ((ident.get("parentScopes") or [None])[0]) if ident else None
        if not scope:
            return None
        if scope not in scope_owner:
            def lookup(pid: str):
                if pid not in self.state:
                    self.refresh([pid])
                return self.state[pid].identity
            scope_owner[scope] = hub_parent(ident, lookup)
        return scope_owner[scope]

    def _parent_after(self, did: str, scope_owner: Dict[str, str]) -> Optional[str]:
        """DID's parent once this run is done: as declared, else as the hub holds it."""
        spec = self.by_id.get(did)
        if spec is not None and spec.state == "present" and spec.parent is not None:
            return spec.parent or None
        return self._hub_parent(did, scope_owner)

    def _height(self, did: str) -> int:
        """Edge layers at and below DID once this run is done: the declared ones, and those the hub holds below an
        existing gateway (counted the way iothub_device counts them: the stricter of the two)."""
        declared = self._declared_height(did)
        scope = self._edge_scope(did)
        if not scope:
            return declared
        return max(declared, edge_height(scope, self.children_of))

    def _declared_height(self, did: str) -> int:
        """Edge layers at and below DID among the declared devices (1 for an edge device without edge children)."""
        kids = [s.device_id for s in self.specs if s.state == "present" and s.parent == did and self._is_edge(s.device_id)]
        return 1 + max((self._declared_height(k) for k in kids), default=0)

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
            problem = orphans_problem(owner[scope], left)
            if problem:
                problems.append(problem)
        if problems:
            raise PlanError("; ".join(problems[:10]) + (f" (and {len(problems) - 10} more)" if len(problems) > 10 else "")
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

    def check_no_orphans(self) -> None:
        """After deleting gateways, ask the index once more for their children.  The guard before the deletes saw
        the index, which lags: a child attached within the lag is invisible to it, and nothing consistent lists a
        gateway's children.  A child found now is reported as a failure that names it (the delete has happened)."""
        gone = {scope: did for scope, did in self.deleting_scopes.items() if did in self.out.deleted}
        if not gone:
            return
        for scope, twins in self.client.children_of_scopes(sorted(gone)).items():
            kids = sorted({t["deviceId"] for t in twins if t.get("deviceId") and t["deviceId"] not in self.out.deleted})
            for child in kids:  # one failure per child, each with the same message as iothub_device's
                self.out.failed.append({"deviceId": child, "errorCode": "OrphanedChild", "operation": "orphan check",
                                        "errorStatus": orphaned_after_delete(gone[scope], kids)})
