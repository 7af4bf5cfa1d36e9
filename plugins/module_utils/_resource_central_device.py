# -*- coding: utf-8 -*-
# Copyright: fleet.azure_iot contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""PRIVATE to fleet.azure_iot: the IoT Central device resource on the shared converge loop.

Its fields (``CentralSpec``), its pure plan (``plan_central``: create = full PUT body, update = merge patch of the
changed fields with the etag read, delete, none) and its API mapping (``CentralDeviceResource``).  Central has no
If-Match: concurrency rides on the ``etag`` field of the body, so an update is never a blind PUT (which would
replace the whole device: re-enable it, rename it)."""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Literal, Optional

from ansible_collections.fleet.azure_iot.plugins.module_utils._central import CentralClient
from ansible_collections.fleet.azure_iot.plugins.module_utils._http import error_from_response, maybe_applied
from ansible_collections.fleet.azure_iot.plugins.module_utils._pydantic import BaseModel, ConfigDict, field_validator
from ansible_collections.fleet.azure_iot.plugins.module_utils._resource import (
    converge,
    Converged,
    is_conflict,
    Resource,
    Written,
)

DEVICE_ID_RE = re.compile(r"^[a-z0-9._:-]{1,128}$")
FIELDS = {"display_name": "displayName", "template": "template", "simulated": "simulated", "enabled": "enabled",
          "organizations": "organizations"}


class CentralSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    device_id: str
    state: Literal["present", "absent"] = "present"
    display_name: Optional[str] = None
    template: Optional[str] = None
    simulated: Optional[bool] = None
    enabled: Optional[bool] = None
    organizations: Optional[List[str]] = None

    @field_validator("device_id")
    @classmethod
    def _id(cls, v):
        if not DEVICE_ID_RE.match(v or ""):
            raise ValueError(f"{v!r} is not a valid IoT Central device id: up to 128 lowercase letters, digits, "
                             "'-', '.', '_' or ':'")
        return v

    @field_validator("organizations")
    @classmethod
    def _orgs(cls, v):
        if v is not None and len(v) > 1:
            raise ValueError("IoT Central supports one organization per device")
        return v


@dataclass
class CentralPlan:
    device_id: str
    action: str  # create | update | delete | none
    changes: Dict[str, tuple] = field(default_factory=dict)
    body: Optional[Dict[str, Any]] = None
    before: Optional[Dict[str, Any]] = None
    after: Optional[Dict[str, Any]] = None


def central_view(device: Optional[Dict[str, Any]]) -> Optional[Dict[str, Any]]:
    if device is None:
        return None
    return {"display_name": device.get("displayName"), "template": device.get("template"),
            "simulated": bool(device.get("simulated", False)), "enabled": bool(device.get("enabled", True)),
            "organizations": sorted(device.get("organizations") or [])}


def plan_central(spec: CentralSpec, current: Optional[Dict[str, Any]]) -> CentralPlan:
    """The pure plan: desired + current -> create (full PUT body) / update (merge patch of the changed fields
    with the etag read) / delete / none."""
    before = central_view(current)
    if spec.state == "absent":
        if current is None:
            return CentralPlan(spec.device_id, "none")
        return CentralPlan(spec.device_id, "delete", {f: (before[f], None) for f in FIELDS}, None, before, None)
    wanted = {"display_name": spec.display_name, "template": spec.template, "simulated": spec.simulated,
              "enabled": spec.enabled, "organizations": sorted(spec.organizations) if spec.organizations is not None else None}
    if current is None:
        after = {"display_name": spec.display_name or spec.device_id, "template": spec.template,
                 "simulated": bool(spec.simulated), "enabled": True if spec.enabled is None else spec.enabled,
                 "organizations": sorted(spec.organizations or [])}
        body = {FIELDS[k]: v for k, v in after.items() if v is not None and not (k == "organizations" and not v)}
        changes = {k: (None, v) for k, v in after.items() if v not in (None, [])}
        return CentralPlan(spec.device_id, "create", changes, body, None, after)
    after = dict(before)
    changes = {}
    for key, value in wanted.items():
        if value is not None and value != before[key]:
            changes[key] = (before[key], value)
            after[key] = value
    if not changes:
        return CentralPlan(spec.device_id, "none", {}, None, before, before)
    body = {FIELDS[k]: copy.deepcopy(v[1]) for k, v in changes.items()}
    body["etag"] = current.get("etag")
    return CentralPlan(spec.device_id, "update", changes, body, before, after)


class CentralDeviceResource(Resource):
    """A Central device for ``converge``: GET, ``plan_central``, PUT / PATCH with the body etag / DELETE."""

    def __init__(self, client: CentralClient, spec: CentralSpec):
        self.client, self.spec = client, spec
        self.label = f"Central device {spec.device_id!r}"

    def read(self):
        return self.client.get(self.spec.device_id)

    def plan(self, current, pinned_etag):
        plan = plan_central(self.spec, current)
        if pinned_etag is not None and plan.body is not None and plan.action == "update":
            plan.body["etag"] = pinned_etag
        self.client.check_references(plan)
        return plan

    def write(self, plan) -> Written:
        r = self.client.write(plan)
        if r.status_code in (200, 201, 204):
            return Written(True, None if plan.action == "delete" else r.json(), r.status_code, maybe_applied(r))
        if is_conflict(r.status_code, plan.action):
            return Written(False, None, r.status_code, maybe_applied(r))
        raise error_from_response(r, f"{plan.action} Central device {self.spec.device_id!r}")

    def predict(self, current, plan):
        return None if plan.action == "delete" else _predict(current, plan)


def ensure_central_device(client: CentralClient, spec: CentralSpec, *, check_mode: bool,
                          pinned_etag: Optional[str] = None) -> Converged:
    return converge(CentralDeviceResource(client, spec), check_mode=check_mode, pinned_etag=pinned_etag,
                    state_present=spec.state == "present")


def _predict(current: Optional[Dict[str, Any]], plan: CentralPlan) -> Dict[str, Any]:
    out = dict(current or {"id": plan.device_id, "provisioned": False})
    for key, value in (plan.body or {}).items():
        if key != "etag":
            out[key] = value
    return out
