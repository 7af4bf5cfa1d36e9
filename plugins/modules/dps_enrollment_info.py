#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: fleet.azure_iot contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: dps_enrollment_info
short_description: Read Device Provisioning Service individual enrollments
version_added: 1.2.0
description:
  - Reads one individual enrollment of a Device Provisioning Service instance, or every enrollment (a paged
    query, following every continuation).
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
  registration_id:
    description:
      - Read only this enrollment (with its registration state). RV(enrollments) is empty when it does not exist.
    type: str
    aliases: [name]
notes:
  - 'Rights: a policy with C(EnrollmentRead).'
seealso:
  - module: fleet.azure_iot.dps_enrollment
"""

EXAMPLES = r"""
- name: One enrollment and whether its device registered
  fleet.azure_iot.dps_enrollment_info:
    registration_id: plant1-gw-1
  register: gw

- name: Every enrollment of the instance
  fleet.azure_iot.dps_enrollment_info:
  register: all_enrollments
"""

RETURN = r"""
enrollments:
  description: The enrollments, as the service returns them (keys hidden).
  returned: always
  type: list
  elements: dict
  sample:
    - registrationId: plant1-gw-1
      attestation:
        type: symmetricKey
      capabilities:
        iotEdge: true
      provisioningStatus: null
      registrationState:
        registrationId: plant1-gw-1
        status: unassigned
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.fleet.azure_iot.plugins.module_utils._dps import DPS_ARGS
from ansible_collections.fleet.azure_iot.plugins.module_utils._dps_enrollment import EnrollmentSpec
from ansible_collections.fleet.azure_iot.plugins.module_utils._module import RETRY_ARGS, run_module
from ansible_collections.fleet.azure_iot.plugins.module_utils._resource_dps_enrollment import read_enrollments


def run(module: AnsibleModule) -> dict:
    return {"changed": False,
            "enrollments": read_enrollments(module, EnrollmentSpec, module.params["registration_id"])}


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(DPS_ARGS, **RETRY_ARGS, registration_id=dict(type="str", aliases=["name"])),
        supports_check_mode=True,
    )
    run_module(module, run)


if __name__ == "__main__":
    main()
