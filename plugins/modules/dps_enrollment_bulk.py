#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: fleet.azure_iot contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: dps_enrollment_bulk
short_description: Converge many Device Provisioning Service individual enrollments at once
version_added: 1.2.0
description:
  - Creates, updates and deletes many individual enrollments with the service's bulk operation (at most 10 per
    call), with the plan of M(fleet.azure_iot.dps_enrollment) for each entry.
  - Every entry is checked before any request; one invalid entry fails the task without a write, naming it.
  - Up to 20 enrollments are read one by one; more are listed with a paged query of the instance, and each one the
    plan would change is read again before it is written (a query is not trusted for a write). Creates use the bulk mode C(create); updates use
    C(updateIfMatchETag) with the etag read, so a change by someone else in between is re-read and re-planned;
    deletes are single C(DELETE) requests with C(If-Match).
  - An error the service returns for one item is reported in RV(failed_enrollments) and fails the task; the other
    items are applied. A bulk answer with C(isSuccessful=false) is a failure, never a success.
  - Only the declared enrollments are touched; enrollments that are not listed are left alone.
author:
  - fleet.azure_iot developers (@fleet-azure-iot)
extends_documentation_fragment:
  - fleet.azure_iot._dps
  - fleet.azure_iot._retries
  - fleet.azure_iot._attributes
  - fleet.azure_iot._attributes.ACTIONGROUP_DPS
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
  idempotent:
    support: full
options:
  enrollments:
    description:
      - The enrollments, each a dictionary with the options of M(fleet.azure_iot.dps_enrollment) (C(registration_id),
        C(state), C(attestation) and its options, C(device_id), C(provisioning_status), C(iot_hubs),
        C(allocation_policy), C(custom_allocation), C(reprovision_policy), C(capabilities), C(initial_twin),
        C(optional_device_information)), except C(rotate_keys), C(etag) and C(return_secrets).
      - Keys given as C(primary_key)/C(secondary_key) are masked in every output.
    type: list
    elements: dict
    required: true
notes:
  - 'Rights: a policy with C(EnrollmentWrite) and C(EnrollmentRead).'
  - The service documents at most 10 enrollments per bulk call; the module never sends more.
seealso:
  - module: fleet.azure_iot.dps_enrollment
"""

EXAMPLES = r"""
- name: A line of sensors that provision themselves, and one retired
  fleet.azure_iot.dps_enrollment_bulk:
    enrollments:
      - registration_id: line1-sensor-1
        attestation: symmetric_key
        initial_twin:
          tags: {line: "1"}
      - registration_id: line1-sensor-2
        attestation: symmetric_key
        initial_twin:
          tags: {line: "1"}
      - registration_id: line1-sensor-0
        state: absent
  register: line1
"""

RETURN = r"""
created:
  description: Registration ids of the enrollments created.
  returned: always
  type: list
  elements: str
updated:
  description: Registration ids of the enrollments updated.
  returned: always
  type: list
  elements: str
deleted:
  description: Registration ids of the enrollments deleted.
  returned: always
  type: list
  elements: str
unchanged:
  description: Registration ids of the declared enrollments that already matched.
  returned: always
  type: list
  elements: str
counts:
  description: How many ids each list holds.
  returned: always
  type: dict
  sample: {created: 2, updated: 0, deleted: 1, unchanged: 0, failed_enrollments: 0}
failed_enrollments:
  description: The items the service refused, with its error. The task fails when there is one.
  returned: always
  type: list
  elements: dict
  contains:
    registrationId:
      description: The registration id.
      type: str
    errorCode:
      description: The service's error code, for example C(400004).
      type: int
    errorStatus:
      description: The service's explanation.
      type: str
    operation:
      description: The bulk mode (or C(delete)) that failed.
      type: str
bulk_calls:
  description: How many bulk operations were sent.
  returned: always
  type: int
notes:
  description: What happened on the way, for example enrollments re-read after a conflicting change.
  returned: always
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.fleet.azure_iot.plugins.module_utils._diff import views_diff
from ansible_collections.fleet.azure_iot.plugins.module_utils._dps import DPS_ARGS, build_dps_client
from ansible_collections.fleet.azure_iot.plugins.module_utils._dps_bulk import BulkEnrollments, parse_entries
from ansible_collections.fleet.azure_iot.plugins.module_utils._errors import ModuleFailure
from ansible_collections.fleet.azure_iot.plugins.module_utils._module import RETRY_ARGS, run_module
from ansible_collections.fleet.azure_iot.plugins.module_utils._resource_dps_enrollment import display, mask_enrollment, mask_plan
from ansible_collections.fleet.azure_iot.plugins.module_utils._secrets import secret_mask


def run(module: AnsibleModule) -> dict:
    p = module.params
    mask = secret_mask(module)
    for entry in p["enrollments"] or []:  # declared keys are masked even in a failure about another entry
        if isinstance(entry, dict):
            for name in ("primary_key", "secondary_key"):
                mask.add(entry.get(name))
            cad = entry.get("custom_allocation")
            hook = cad.get("webhook_url") if isinstance(cad, dict) else None
            mask_enrollment(module, {"customAllocationDefinition": {"webhookUrl": hook if isinstance(hook, str) else None}})
    specs = parse_entries(p["enrollments"])
    client = build_dps_client(p, module.warn)
    out = BulkEnrollments(client, specs, module.check_mode).run()
    for key in out.seen_keys:
        mask.add(key)
    for plan in out.plans.values():  # a webhook key the service holds, declared or not
        mask_plan(module, plan)
    result = {"changed": out.changed, "created": sorted(out.created), "updated": sorted(out.updated),
              "deleted": sorted(out.deleted), "unchanged": sorted(out.unchanged),
              "failed_enrollments": sorted(out.failed, key=lambda f: f["registrationId"]),
              "counts": {"created": len(out.created), "updated": len(out.updated), "deleted": len(out.deleted),
                         "unchanged": len(out.unchanged), "failed_enrollments": len(out.failed)},
              "bulk_calls": out.bulk_calls, "notes": out.notes}
    if module._diff:
        result["diff"] = [views_diff(display(pl.before, pl.changes), display(pl.after, pl.changes),
                                     f"dps enrollment {rid}", hub="dps")
                          for rid, pl in sorted(out.plans.items()) if pl.action != "none"]
    if out.failed:
        raise ModuleFailure(f"{len(out.failed)} of {len(specs)} enrollments were refused by the service (see "
                            "failed_enrollments); the others were applied", **result)
    return result


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(DPS_ARGS, **RETRY_ARGS, enrollments=dict(type="list", elements="dict", required=True)),
        supports_check_mode=True,
    )
    run_module(module, run)


if __name__ == "__main__":
    main()
