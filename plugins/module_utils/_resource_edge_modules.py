# -*- coding: utf-8 -*-
# Copyright: fleet.azure_iot contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""PRIVATE to fleet.azure_iot: the modules of one IoT Edge device (its deployment manifest), on the shared
converge loop.

Read: the device (it must be an edge device) and the desired properties of the twins of ``$edgeAgent``,
``$edgeHub`` and every module the manifest names.  Plan: ``_manifest.plan_manifest`` (createOptions compared as
JSON).  Write: ``POST /devices/{id}/applyConfigurationContent`` with the whole manifest, only when something
differs (iot-api-2.md §2.6).  The call is not conditional, so it is never retried blindly: a lost answer is
settled by reading the twins again."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from ansible_collections.fleet.azure_iot.plugins.module_utils._http import error_from_response, maybe_applied
from ansible_collections.fleet.azure_iot.plugins.module_utils._iothub import IoTHubClient
from ansible_collections.fleet.azure_iot.plugins.module_utils._manifest import plan_manifest, send_form
from ansible_collections.fleet.azure_iot.plugins.module_utils._errors import PlanError
from ansible_collections.fleet.azure_iot.plugins.module_utils._resource import Converged, Resource, Written, converge


@dataclass
class ManifestPlan:
    device_id: str
    action: str  # "update" (apply) | "none"
    changes: Dict[str, tuple] = field(default_factory=dict)  # module -> (current desired, declared desired)
    body: Optional[Dict[str, Any]] = None


class EdgeModulesResource(Resource):
    def __init__(self, client: IoTHubClient, device_id: str, manifest: Dict[str, Any], check_mode: bool):
        self.client, self.device_id, self.manifest, self.check_mode = client, device_id, manifest, check_mode
        self.label = f"the modules of IoT Edge device {device_id!r}"
        self.warnings: List[str] = []

    def read(self):
        device = self.client.get_device(self.device_id)
        if device is None or not (device.get("capabilities") or {}).get("iotEdge"):
            why = "does not exist" if device is None else "is not an IoT Edge device"
            if self.check_mode:
                self.warnings.append(f"device {self.device_id!r} {why} (yet); check mode assumes an earlier task makes "
                                     "it an edge device and predicts the whole manifest as a change")
                return {name: None for name in self.manifest}
            raise PlanError(f"device_id: {self.device_id!r} {why}; only an IoT Edge device runs modules "
                            "(create it with edge_enabled=true first)")
        twins = {}
        for name in self.manifest:
            twin = self.client.get_twin(self.device_id, name)
            twins[name] = ((twin or {}).get("properties") or {}).get("desired") if twin else None
        return twins

    def plan(self, current, pinned_etag):
        changes = plan_manifest(self.manifest, current)
        if not changes:
            return ManifestPlan(self.device_id, "none")
        return ManifestPlan(self.device_id, "update", changes, {"modulesContent": send_form(self.manifest)})

    def write(self, plan) -> Written:
        r = self.client.apply_configuration_content(self.device_id, plan.body)
        if r.status_code in (200, 204):  # 204 in the spec; older versions answered 200
            return Written(True, None, r.status_code, maybe_applied(r))
        raise error_from_response(r, f"apply the manifest of {self.device_id!r}")

    def etag(self, current):
        return None


def ensure_edge_modules(client: IoTHubClient, device_id: str, manifest: Dict[str, Any], *,
                        check_mode: bool) -> Converged:
    res = EdgeModulesResource(client, device_id, manifest, check_mode)
    out = converge(res, check_mode=check_mode)
    out.warnings = res.warnings
    return out
