# -*- coding: utf-8 -*-
# Copyright: fleet.azure_iot contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""PRIVATE to fleet.azure_iot: a DPS enrollment (individual or group) on the shared converge loop.

read (GET; the keys through the attestation mechanism only when the plan needs them) -> ``plan_enrollment`` ->
PUT without If-Match to create, PUT with the etag read (sent back unquoted) to update, DELETE with it.  A 409 to a
create (another writer created it, or this task's earlier attempt did) and a 412 are conflicts: read again and
re-plan.  A key rotation is decided once per task: re-plans ask for the same keys (a rotation whose answer was
lost is found applied, not rotated again)."""

from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

from ansible_collections.fleet.azure_iot.plugins.module_utils._dps import DpsClient, build_dps_client
from ansible_collections.fleet.azure_iot.plugins.module_utils._dps_enrollment import (
    EnrollmentPlan,
    EnrollmentSpec,
    plan_enrollment,
)
from ansible_collections.fleet.azure_iot.plugins.module_utils._http import error_from_response, maybe_applied
from ansible_collections.fleet.azure_iot.plugins.module_utils._resource import (
    converge,
    Converged,
    is_conflict,
    Resource,
    Written,
)
from ansible_collections.fleet.azure_iot.plugins.module_utils._diff import views_diff
from ansible_collections.fleet.azure_iot.plugins.module_utils._secrets import REDACTED, fresh_key, secret_mask


def attestation_keys(attestation: Optional[Dict[str, Any]]) -> Tuple[Optional[str], Optional[str]]:
    """The symmetric keys of an attestation mechanism ((None, None) for another kind of attestation)."""
    keys = (attestation or {}).get("symmetricKey") or {}
    return keys.get("primaryKey"), keys.get("secondaryKey")


def plan_with_keys(client: DpsClient, spec: EnrollmentSpec, current: Optional[Dict[str, Any]], seen_keys: set,
                   intended: Optional[Tuple[str, str]] = None) -> EnrollmentPlan:
    """``plan_enrollment``, reading the keys through the attestation mechanism only when the plan needs them (GET
    hides them), and adding every key read or written to SEEN_KEYS (for the task's mask)."""
    plan = plan_enrollment(spec, current, None, intended, fresh_key)
    if plan.needs_keys:
        keys = attestation_keys(client.attestation(spec.item_id, spec.GROUP))
        seen_keys.update(k for k in keys if k)
        plan = plan_enrollment(spec, current, keys, intended, fresh_key)
    if plan.keys is not None:
        seen_keys.update(k for k in plan.keys if k)
    return plan


class EnrollmentResource(Resource):
    """An enrollment or enrollment group for ``converge``.  ``seen_keys`` collects every key the task read or
    wrote, for the caller to mask."""

    def __init__(self, client: DpsClient, spec: EnrollmentSpec):
        self.client, self.spec = client, spec
        self.label = spec.label
        self.intended: Optional[Tuple[str, str]] = None  # the keys a rotation of this task decided
        self.seen_keys: set = set()

    def read(self):
        return self.client.get(self.spec.item_id, self.spec.GROUP)

    def plan(self, current, pinned_etag) -> EnrollmentPlan:
        plan = plan_with_keys(self.client, self.spec, current, self.seen_keys, self.intended)
        if plan.keys is not None:
            if self.spec.rotate_keys and self.intended is None and plan.action == "update":
                self.intended = plan.keys
        if pinned_etag is not None and plan.action in ("update", "delete"):
            plan.etag = pinned_etag
        return plan

    def write(self, plan: EnrollmentPlan) -> Written:
        spec = self.spec
        if plan.action == "delete":
            r = self.client.delete(spec.item_id, plan.etag, spec.GROUP)
        else:
            r = self.client.put(spec.item_id, plan.body, plan.etag if plan.action == "update" else None, spec.GROUP)
        if r.status_code in (200, 204):
            obj = None if plan.action == "delete" else r.json()
            return Written(True, obj, r.status_code, maybe_applied(r))
        if is_conflict(r.status_code, plan.action):
            return Written(False, None, r.status_code, maybe_applied(r))
        raise error_from_response(r, f"{plan.action} {self.label}")

    def predict(self, current, plan: EnrollmentPlan):
        if plan.action == "delete":
            return None
        return dict(plan.body or {}, etag=(current or {}).get("etag"))


def ensure_enrollment(client: DpsClient, spec: EnrollmentSpec, *, check_mode: bool,
                      pinned_etag: Optional[str] = None) -> Tuple[Converged, EnrollmentResource]:
    res = EnrollmentResource(client, spec)
    out = converge(res, check_mode=check_mode, pinned_etag=pinned_etag, state_present=spec.state == "present")
    return out, res


def webhook_secrets(obj: Optional[Dict[str, Any]]) -> list:
    """The secret part of a custom allocation webhook URL (its query: an Azure Function's ``code=`` key)."""
    url = ((obj or {}).get("customAllocationDefinition") or {}).get("webhookUrl") or ""
    return [url.partition("?")[2]] if "?" in url and len(url.partition("?")[2]) >= 8 else []


def redact_enrollment(obj: Optional[Dict[str, Any]]) -> Optional[Dict[str, Any]]:
    """OBJ with its symmetric keys shown as ``********`` (the PUT answer echoes them)."""
    if not obj or not (obj.get("attestation") or {}).get("symmetricKey"):
        return obj
    out = dict(obj)
    att = dict(out["attestation"])
    att["symmetricKey"] = {k: (REDACTED if v else v) for k, v in att["symmetricKey"].items()}
    out["attestation"] = att
    return out


def mask_enrollment(module, obj: Optional[Dict[str, Any]], keys=(), reveal: bool = False) -> None:
    """Register the secrets of OBJ (and KEYS) with the task's mask: symmetric keys (unless REVEAL, when they were
    asked for) and a webhook URL's key (always)."""
    mask = secret_mask(module)
    for key in set(keys) | {v for v in attestation_keys((obj or {}).get("attestation")) if v}:
        (mask.reveal if reveal else mask.add)(key)
    for value in webhook_secrets(obj):
        mask.add(value)


def display(view: Optional[Dict[str, Any]], changes) -> Dict[str, Any]:
    """A view for diff output: the keys as ``********`` (``(changed)`` when the plan changes them)."""
    if view is None:
        return {}
    out = {k: v for k, v in view.items() if v is not None}
    if view.get("attestation") == "symmetric_key":
        for name in ("primary_key", "secondary_key"):
            out[name] = REDACTED + (" (changed)" if name in changes else "")
    return out


def mask_plan(module, plan) -> None:
    """The webhook keys of a plan's views (the URL an enrollment had before the change too)."""
    for view in (plan.before, plan.after):
        cad = (view or {}).get("custom_allocation") or {}
        mask_enrollment(module, {"customAllocationDefinition": {"webhookUrl": cad.get("webhook_url")}})


def enrollment_result(module, converged: Converged, res: EnrollmentResource, return_secrets: bool) -> Dict[str, Any]:
    """The result of dps_enrollment and dps_enrollment_group: keys masked everywhere unless RETURN_SECRETS."""
    spec, plan = res.spec, converged.acted
    obj = converged.obj
    att = (obj or {}).get("attestation") or {}
    if return_secrets and att.get("type") == "symmetricKey" and not att.get("symmetricKey") and obj.get("etag"):
        # GET hides the keys: read them (asked for; not in check mode's prediction of a create, which has no etag)
        keys = attestation_keys(res.client.attestation(spec.item_id, spec.GROUP))
        obj = dict(obj, attestation={"type": "symmetricKey",
                                     "symmetricKey": {"primaryKey": keys[0], "secondaryKey": keys[1]}})
    mask_enrollment(module, obj, res.seen_keys, return_secrets)
    mask_plan(module, plan)
    result = {"changed": converged.changed, "action": plan.action, "changes": sorted(plan.changes),
              "enrollment": obj if return_secrets else redact_enrollment(obj), "notes": converged.notes}
    if module._diff:
        noun = "enrollment group" if spec.GROUP else "enrollment"
        result["diff"] = views_diff(display(plan.before, plan.changes), display(plan.after, plan.changes),
                                    f"dps {noun} {spec.item_id}", hub="dps")
    return result


# The options dps_enrollment and dps_enrollment_group share (argument specs; each module adds its id and its own).
ENROLLMENT_ARGS = dict(
    state=dict(type="str", choices=["present", "absent"], default="present"),
    primary_key=dict(type="str", no_log=True),
    secondary_key=dict(type="str", no_log=True),
    rotate_keys=dict(type="str", choices=["primary", "secondary", "swap"]),
    x509_certificate=dict(type="str"),
    x509_secondary_certificate=dict(type="str"),
    provisioning_status=dict(type="str", choices=["enabled", "disabled"]),
    iot_hub_host_name=dict(type="str"),
    iot_hubs=dict(type="list", elements="str"),
    allocation_policy=dict(type="str", choices=["hashed", "geoLatency", "static", "custom"]),
    custom_allocation=dict(type="dict", options=dict(webhook_url=dict(type="str", required=True, no_log=False),
                                                     api_version=dict(type="str", required=True))),
    reprovision_policy=dict(type="str", choices=["reprovision_and_migrate_data", "reprovision_and_reset_data", "never"]),
    capabilities=dict(type="dict", options=dict(iot_edge=dict(type="bool", required=True))),
    initial_twin=dict(type="dict", options=dict(tags=dict(type="dict"), desired_properties=dict(type="dict"))),
    etag=dict(type="str"),
    return_secrets=dict(type="bool", default=False),
)


def spec_from_params(kind, params: Dict[str, Any]) -> EnrollmentSpec:
    """KIND (EnrollmentSpec or EnrollmentGroupSpec) from a module's parameters (or a bulk entry's)."""
    values = {k: params.get(k) for k in kind.OPTIONS if k != "iot_edge"}
    caps = params.get("capabilities")
    values["iot_edge"] = caps.get("iot_edge") if caps else None
    twin = values.get("initial_twin")
    if twin is not None:
        values["initial_twin"] = {k: v for k, v in twin.items() if v is not None}
    return kind(**values)


def read_enrollments(module, kind, item_id: Optional[str]) -> list:
    """The _info modules: one enrollment (or group) by id, validated before any request, or all of them; the
    webhook keys masked."""
    if item_id is not None:
        kind(**{kind.ID_OPTION: item_id})
    client = build_dps_client(module.params, module.warn)
    if item_id is not None:
        one = client.get(item_id, kind.GROUP)
        items = [one] if one else []
    else:
        items = list(client.query(kind.GROUP))
    for item in items:
        mask_enrollment(module, item)
    return items


def run_enrollment(module, kind) -> Dict[str, Any]:
    """The body of dps_enrollment (KIND EnrollmentSpec) and dps_enrollment_group (EnrollmentGroupSpec)."""
    p = module.params
    spec = spec_from_params(kind, p)
    client = build_dps_client(p, module.warn)
    converged, res = ensure_enrollment(client, spec, check_mode=module.check_mode, pinned_etag=p["etag"])
    return enrollment_result(module, converged, res, p["return_secrets"])
