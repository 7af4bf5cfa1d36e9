# -*- coding: utf-8 -*-
# Copyright: fleet.azure_iot contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""PRIVATE to fleet.azure_iot: the twin half of an identity resource (a device or a module identity).

When a task declares ``tags`` or ``desired_properties``, the twin is read (``GET /twins/...``), planned with
``plan_twin`` (only the declared keys are managed, nested objects key by key, null removes a key), and written
with one ``PATCH`` (a documented merge, iot-api-2.md §6.1) carrying If-Match of the twin etag read: a 412 means
the twin moved, and the converge loop reads it again and re-plans."""

from __future__ import annotations

from typing import Any, Dict, Optional

from ansible_collections.fleet.azure_iot.plugins.module_utils._http import IoTApiError, error_from_response, maybe_applied
from ansible_collections.fleet.azure_iot.plugins.module_utils._models import TWIN_SECTION_LIMITS, section_size
from ansible_collections.fleet.azure_iot.plugins.module_utils._plan import PlanError, plan_twin
from ansible_collections.fleet.azure_iot.plugins.module_utils._resource import Written


def declared(spec) -> bool:
    return spec.tags is not None or spec.desired_properties is not None


def read_twin(client, spec, exists: bool, module_id: Optional[str] = None) -> Optional[Dict[str, Any]]:
    """The twin, when the task declares twin content.  It is read even for an identity that does not exist yet:
    the 404 proves the right the twin PATCH needs (ServiceConnect), so a credential without it fails before the
    identity is written instead of after (a 401 here names the right)."""
    if not (declared(spec) and spec.state == "present"):
        return None
    twin = client.get_twin(spec.device_id, module_id)
    return twin if exists else None


def plan_twin_part(plan, spec, twin: Optional[Dict[str, Any]], label: str) -> None:
    """Plan the twin and attach it to the identity plan (the full sections must stay within the limits)."""
    if plan.action == "delete" or spec.state != "present" or not declared(spec):
        return
    twin_plan = plan_twin(spec, twin)
    for part, option in (("tags", "tags"), ("desired", "desired_properties")):
        full = (twin_plan.get("full") or {}).get(part)
        if full is not None and section_size(full) > TWIN_SECTION_LIMITS[option]:
            raise PlanError(f"{option}: {label} would hold {section_size(full)} bytes with what its twin holds "
                            f"already; IoT Hub allows {TWIN_SECTION_LIMITS[option]}: remove keys (null) or shorten values")
    plan.add_twin(twin_plan, twin)


def write_twin(client, plan, device_id: str, landed: bool, module_id: Optional[str] = None) -> Optional[Written]:
    """PATCH the twin; None when applied, else the conflict (the identity part may have ``landed`` already).  A
    failure after a landed identity write says ``changed``: the task's result must not hide that write."""
    if not plan.twin:
        return None
    try:
        return _patch_twin(client, plan, device_id, landed, module_id)
    except IoTApiError as exc:
        if landed:
            exc.changed = True
        raise


def _patch_twin(client, plan, device_id: str, landed: bool, module_id: Optional[str]) -> Optional[Written]:
    patch: Dict[str, Any] = {}
    if "tags" in plan.twin:
        patch["tags"] = plan.twin["tags"]
    if "desired" in plan.twin:
        patch["properties"] = {"desired": plan.twin["desired"]}
    etag = plan.twin_etag
    if etag is None:  # the identity was created just now: read its fresh twin for the If-Match
        etag = (client.get_twin(device_id, module_id) or {}).get("etag")
    r = client.patch_twin(device_id, patch, etag, module_id)
    if r.status_code == 200:
        return None
    if r.status_code in (404, 412):
        return Written(False, None, r.status_code, maybe_applied(r), landed=landed)
    raise error_from_response(r, f"update twin of {device_id!r}" + (f" module {module_id!r}" if module_id else ""))
