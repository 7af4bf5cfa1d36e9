# -*- coding: utf-8 -*-
# Copyright: fleet.azure_iot contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""PRIVATE to fleet.azure_iot: the device identity resource (with its twin), on the shared converge loop.

Its fields and rules are in ``_models.DeviceSpec`` and ``_plan.plan_device``; this file maps them to the API
(GET / PUT / DELETE ``/devices/{id}`` with If-Match) and adds the rules that depend on the hub's state (children,
cycles, depth)."""

from __future__ import annotations

from typing import List, Optional

from ansible_collections.fleet.azure_iot.plugins.module_utils._errors import IoTApiError, PlanError
from ansible_collections.fleet.azure_iot.plugins.module_utils._http import error_from_response, maybe_applied
from ansible_collections.fleet.azure_iot.plugins.module_utils._iothub import IoTHubClient
from ansible_collections.fleet.azure_iot.plugins.module_utils._models import DeviceSpec
from ansible_collections.fleet.azure_iot.plugins.module_utils._plan import plan_device
from ansible_collections.fleet.azure_iot.plugins.module_utils._resource import (
    converge,
    Converged,
    is_conflict,
    KeyIntent,
    Resource,
    Written,
)
from ansible_collections.fleet.azure_iot.plugins.module_utils._secrets import fresh_key
from ansible_collections.fleet.azure_iot.plugins.module_utils._topology import (
    chain_above,
    edge_height,
    edge_scope,
    hub_parent,
    leaving_edge_problem,
    orphaned_after_delete,
    orphans_problem,
    place_problem,
    resolve_parent,
)
from ansible_collections.fleet.azure_iot.plugins.module_utils._twin import (
    declared,
    plan_twin_part,
    read_twin,
    twin_after,
    write_twin,
)


class DeviceResource(Resource):
    """A device identity for ``converge``: GET with its ETag, ``plan_device``, PUT/DELETE with If-Match."""

    def __init__(self, client: IoTHubClient, spec: DeviceSpec, *, check_mode: bool, orphan_children: bool = False,
                 notes: Optional[List[str]] = None):
        self.client, self.spec, self.check_mode, self.orphan_children = client, spec, check_mode, orphan_children
        self.notes = notes if notes is not None else []
        self.warnings: List[str] = []
        self.label = f"device {spec.device_id!r}"
        self.keys = KeyIntent()
        self._seen: dict = {}

    deleted_scope: Optional[str] = None  # the own scope of an edge device this task deletes

    def read(self):
        self._seen = {}  # devices read for this plan (parents, ancestors)
        self.current = self.client.get_device(self.spec.device_id)
        if self.current is not None and (self.current.get("capabilities") or {}).get("iotEdge"):
            self.deleted_scope = self.current.get("deviceScope") or self.deleted_scope
        self.twin = read_twin(self.client, self.spec, self.current is not None)
        return self.current

    def plan(self, current, pinned_etag):
        spec = self.spec
        parent_scope, parent_device = spec.parent, None  # None: unmanaged; "": detach
        if spec.state == "present" and spec.parent:
            parent_scope, parent_device, warning = resolve_parent(spec.parent, self._lookup(spec.parent),
                                                                  self.check_mode)
            if warning:
                self.warnings.append(warning)
        plan = plan_device(self.keys.spec_for(spec, current), current, parent_scope if spec.state == "present" else None,
                           fresh_key())
        self.keys.record(spec, plan)
        if plan.action == "delete" and not self.orphan_children:
            self._refuse_orphans(current)
        if plan.action in ("create", "update"):
            self._check_topology(plan, current, parent_device)
        plan_twin_part(plan, spec, self.twin, self.label)
        if pinned_etag is not None and plan.etag is not None:
            plan.etag = pinned_etag.strip('"')
        return plan

    def _lookup(self, device_id: str):
        """A device as the hub holds it (one GET per device per plan; None: absent)."""
        if device_id not in self._seen:
            self._seen[device_id] = self.client.get_device(device_id)
        return self._seen[device_id]

    def _kids(self, scope: str) -> List[str]:
        return sorted(t["deviceId"] for t in self.client.children_of(scope) if t.get("deviceId") != self.spec.device_id)

    def _check_topology(self, plan, current, parent_device) -> None:
        """The rules the hub enforces against its current state (``_topology``), checked before any write (check
        mode too): a device with children stays an edge device, no parent cycle, at most MAX_EDGE_DEPTH layers."""
        did = self.spec.device_id
        after_edge = plan.after["edge_enabled"]
        own_scope = edge_scope(current)
        if own_scope and not after_edge:
            problem = leaving_edge_problem(did, self._kids(own_scope))
            if problem:
                raise PlanError(problem)
        moved = plan.action == "create" or "parent_scope" in plan.changes or "edge_enabled" in plan.changes
        if not (after_edge and moved and parent_device is not None):
            return

        def parent_of(x: str):
            return self.spec.parent if x == did else hub_parent(self._lookup(x), self._lookup)
        chain, cycle = chain_above(did, parent_of)
        height = edge_height(own_scope, self.client.children_of_scopes) if own_scope else 1
        problem = place_problem(did, self.spec.parent, chain, cycle, height)
        if problem:
            raise PlanError(problem)

    def _refuse_orphans(self, current) -> None:
        """Deleting an edge device leaves its children pointing at a scope that no longer exists: refuse it."""
        scope = edge_scope(current)
        problem = orphans_problem(self.spec.device_id, self._kids(scope)) if scope else None
        if problem:
            raise PlanError(problem)

    def write(self, plan) -> Written:
        """The identity (PUT or DELETE with If-Match) when it changes, then the twin (PATCH with If-Match)."""
        did = self.spec.device_id
        device, maybe = self.current, False
        if plan.writes_identity:
            if plan.action == "delete":
                r = self.client.delete_device(did, plan.etag)
                if r.status_code in (200, 204):
                    return Written(True, None, r.status_code, maybe_applied(r))
            else:
                r = self.client.put_device(did, plan.body, plan.etag if plan.action == "update" else None)
                if r.status_code == 200:
                    device = r.json()
                    etag = (r.headers.get("etag") or "").strip('"')
                    if etag:
                        device["etag"] = etag
            if r.status_code not in (200, 204):
                if is_conflict(r.status_code, plan.action):  # the device changed between our read and our write (or a retried write landed)
                    return Written(False, None, r.status_code, maybe_applied(r))
                raise error_from_response(r, f"{plan.action} device {did!r}")
            maybe = maybe_applied(r)
        twin_conflict = write_twin(self.client, plan, did, landed=plan.writes_identity)
        if twin_conflict is not None:
            return twin_conflict
        return Written(True, device, 200, maybe)

    def predict(self, current, plan):
        if plan.action == "delete":
            return None
        return plan.body if plan.body is not None else current


def ensure_device(client: IoTHubClient, spec: DeviceSpec, *, check_mode: bool, pinned_etag: Optional[str] = None,
                  orphan_children: bool = False) -> Converged:
    """GET, plan, write the difference with If-Match; on a conflict re-read and re-plan (bounded)."""
    notes: List[str] = []
    res = DeviceResource(client, spec, check_mode=check_mode, orphan_children=orphan_children, notes=notes)
    out = converge(res, check_mode=check_mode, pinned_etag=pinned_etag, state_present=spec.state == "present",
                   notes=notes)
    out.warnings = sorted(set(res.warnings))
    if declared(spec) and spec.state == "present":
        out.twin = twin_after(out, res.twin)
    if out.acted.action == "delete" and out.changed and not check_mode and not orphan_children:
        _check_no_orphans(client, spec.device_id, out.acted.before, res.deleted_scope)
    return out


def _check_no_orphans(client: IoTHubClient, device_id: str, before, scope: Optional[str]) -> None:
    """After deleting an edge device, ask the index once more for its children.  The guard before the delete saw
    the index, which lags, and nothing consistent lists a device's children: a child attached within the lag is
    found only now (or not at all, if the index still lags): reported as a failure that names it."""
    if not scope or not (before or {}).get("edge_enabled"):
        return
    kids = sorted(t["deviceId"] for t in client.children_of(scope) if t.get("deviceId") != device_id)
    if kids:
        exc = IoTApiError(orphaned_after_delete(device_id, kids))
        exc.changed = True
        raise exc
