# -*- coding: utf-8 -*-
# Copyright: fleet.azure_iot contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""PRIVATE to fleet.azure_iot: the module identity resource (with its module twin), on the shared converge loop.

Fields and rules: ``_models.ModuleSpec`` and ``_plan.plan_module``; API: GET / PUT / DELETE
``/devices/{id}/modules/{moduleId}`` with If-Match (iot-api-2.md §1).  Module responses carry no ETag header: the
etag is in the body.  Under SAS auth a module call on a missing device was seen answering 401 instead of 404
(a PEER observation): the device is then read to tell the two apart."""

from __future__ import annotations

from typing import List, Optional

from ansible_collections.fleet.azure_iot.plugins.module_utils._errors import AuthorizationError, PlanError
from ansible_collections.fleet.azure_iot.plugins.module_utils._http import error_from_response, maybe_applied
from ansible_collections.fleet.azure_iot.plugins.module_utils._iothub import IoTHubClient
from ansible_collections.fleet.azure_iot.plugins.module_utils._models import ModuleSpec
from ansible_collections.fleet.azure_iot.plugins.module_utils._plan import plan_module
from ansible_collections.fleet.azure_iot.plugins.module_utils._resource import (
    converge,
    Converged,
    is_conflict,
    KeyIntent,
    Resource,
    Written,
)
from ansible_collections.fleet.azure_iot.plugins.module_utils._secrets import fresh_key
from ansible_collections.fleet.azure_iot.plugins.module_utils._twin import (
    declared,
    plan_twin_part,
    read_twin,
    twin_after,
    write_twin,
)


class ModuleResource(Resource):
    def __init__(self, client: IoTHubClient, spec: ModuleSpec, *, force: bool = False):
        self.client, self.spec, self.force = client, spec, force
        self.label = f"module {spec.module_id!r} of device {spec.device_id!r}"
        self.keys = KeyIntent()

    def _missing_device(self) -> PlanError:
        return PlanError(f"device_id: device {self.spec.device_id!r} does not exist; create it first "
                         "(fleet.azure_iot.iothub_device)")

    def read(self):
        spec = self.spec
        try:
            self.current = self.client.get_module(spec.device_id, spec.module_id)
        except AuthorizationError:
            if self.client.get_device(spec.device_id) is None:  # 401 for a module of a missing device
                raise self._missing_device() from None
            raise
        if self.current is None and spec.state == "present" and self.client.get_device(spec.device_id) is None:
            raise self._missing_device()
        self.twin = read_twin(self.client, spec, self.current is not None, spec.module_id)
        return self.current

    def plan(self, current, pinned_etag):
        plan = plan_module(self.keys.spec_for(self.spec, current), current, fresh_key(), self.force)
        self.keys.record(self.spec, plan)
        plan_twin_part(plan, self.spec, self.twin, self.label)
        if pinned_etag is not None and plan.etag is not None:
            plan.etag = pinned_etag.strip('"')
        return plan

    def write(self, plan) -> Written:
        spec = self.spec
        module, maybe = self.current, False
        if plan.writes_identity:
            if plan.action == "delete":
                r = self.client.delete_module(spec.device_id, spec.module_id, plan.etag)
                if r.status_code in (200, 204):
                    return Written(True, None, r.status_code, maybe_applied(r))
            else:
                r = self.client.put_module(spec.device_id, spec.module_id, plan.body,
                                           plan.etag if plan.action == "update" else None)
                if r.status_code in (200, 201):
                    module = r.json()
            if r.status_code not in (200, 201, 204):
                if is_conflict(r.status_code, plan.action):
                    return Written(False, None, r.status_code, maybe_applied(r))
                raise error_from_response(r, f"{plan.action} {self.label}")
            maybe = maybe_applied(r)
        twin_conflict = write_twin(self.client, plan, spec.device_id, plan.writes_identity, spec.module_id)
        if twin_conflict is not None:
            return twin_conflict
        return Written(True, module, 200, maybe)

    def predict(self, current, plan):
        if plan.action == "delete":
            return None
        return plan.body if plan.body is not None else current


def ensure_module(client: IoTHubClient, spec: ModuleSpec, *, check_mode: bool, pinned_etag: Optional[str] = None,
                  force: bool = False) -> Converged:
    notes: List[str] = []
    res = ModuleResource(client, spec, force=force)
    out = converge(res, check_mode=check_mode, pinned_etag=pinned_etag, state_present=spec.state == "present",
                   notes=notes)
    if declared(spec) and spec.state == "present":
        out.twin = twin_after(out, res.twin)
    return out
