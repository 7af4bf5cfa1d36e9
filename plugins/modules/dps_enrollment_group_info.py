#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: fleet.azure_iot contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: dps_enrollment_group_info
short_description: Read Device Provisioning Service enrollment groups
version_added: 1.2.0
description:
  - Reads one enrollment group of a Device Provisioning Service instance, or every group (a paged query,
    following every continuation), optionally with the registration states of its devices.
  - Symmetric keys are never read (the service hides them on reads); the secret part of a custom allocation
    webhook URL is shown as C(********).
author:
  - fleet.azure_iot developers (@fleet-azure-iot)
extends_documentation_fragment:
  - fleet.azure_iot._dps
  - fleet.azure_iot._retries
  - fleet.azure_iot._attributes
  - fleet.azure_iot._attributes.ACTIONGROUP_DPS
  - fleet.azure_iot._attributes.INFO_MODULE
options:
  enrollment_group_id:
    description:
      - Read only this group. RV(enrollment_groups) is empty when it does not exist.
    type: str
    aliases: [name]
  registrations:
    description:
      - Also read the registration states of the devices that registered through the group (a paged query),
        in RV(registrations). Needs O(enrollment_group_id).
    type: bool
    default: false
notes:
  - 'Rights: a policy with C(EnrollmentRead), and C(RegistrationStatusRead) for O(registrations).'
seealso:
  - module: fleet.azure_iot.dps_enrollment_group
"""

EXAMPLES = r"""
- name: A group and the devices that registered through it
  fleet.azure_iot.dps_enrollment_group_info:
    enrollment_group_id: plant1-gateways
    registrations: true
  register: gateways

- name: Every group of the instance
  fleet.azure_iot.dps_enrollment_group_info:
  register: all_groups
"""

RETURN = r"""
enrollment_groups:
  description: The groups, as the service returns them (keys hidden).
  returned: always
  type: list
  elements: dict
  sample:
    - enrollmentGroupId: plant1-gateways
      attestation:
        type: symmetricKey
      capabilities:
        iotEdge: true
registrations:
  description: The registration states of the group's devices (status, assigned hub, device id, last update).
  returned: when O(registrations=true)
  type: list
  elements: dict
  sample:
    - registrationId: plant1-gw-1
      assignedHub: plant1-hub-a.azure-devices.net
      deviceId: plant1-gw-1
      status: assigned
      substatus: initialAssignment
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.fleet.azure_iot.plugins.module_utils._dps import DPS_ARGS
from ansible_collections.fleet.azure_iot.plugins.module_utils._dps import build_dps_client
from ansible_collections.fleet.azure_iot.plugins.module_utils._dps_enrollment import EnrollmentGroupSpec
from ansible_collections.fleet.azure_iot.plugins.module_utils._errors import InputError
from ansible_collections.fleet.azure_iot.plugins.module_utils._module import RETRY_ARGS, run_module
from ansible_collections.fleet.azure_iot.plugins.module_utils._resource_dps_enrollment import read_enrollments


def run(module: AnsibleModule) -> dict:
    p = module.params
    if p["registrations"] and p["enrollment_group_id"] is None:
        raise InputError("registrations=true needs enrollment_group_id (the group whose devices to list)")
    result = {"changed": False,
              "enrollment_groups": read_enrollments(module, EnrollmentGroupSpec, p["enrollment_group_id"])}
    if p["registrations"]:
        result["registrations"] = list(build_dps_client(p, module.warn).group_registrations(p["enrollment_group_id"]))
    return result


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(DPS_ARGS, **RETRY_ARGS, enrollment_group_id=dict(type="str", aliases=["name"]),
                           registrations=dict(type="bool", default=False)),
        supports_check_mode=True,
    )
    run_module(module, run)


if __name__ == "__main__":
    main()
