#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: fleet.azure_iot contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: dps_registration_info
short_description: Read Device Provisioning Service registration states
version_added: 1.2.0
description:
  - Reads the registration state of one device (O(registration_id)), or of every device that registered through
    an enrollment group (O(enrollment_group_id), a paged query). A state says whether the device was assigned, to
    which hub, under which device id, and when.
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
      - The device's registration id. RV(registrations) is empty when the device never registered.
    type: str
  enrollment_group_id:
    description:
      - An enrollment group, for the registration states of every device that registered through it.
    type: str
notes:
  - 'Rights: a policy with C(RegistrationStatusRead).'
  - Exactly one of O(registration_id) and O(enrollment_group_id) is required.
seealso:
  - module: fleet.azure_iot.dps_enrollment
  - module: fleet.azure_iot.dps_enrollment_group_info
"""

EXAMPLES = r"""
- name: Has the gateway registered yet, and where?
  fleet.azure_iot.dps_registration_info:
    registration_id: plant1-gw-1
  register: gw_registration

- name: Every device of a group
  fleet.azure_iot.dps_registration_info:
    enrollment_group_id: plant1-gateways
  register: members
"""

RETURN = r"""
registrations:
  description: The registration states, as the service returns them.
  returned: always
  type: list
  elements: dict
  sample:
    - registrationId: plant1-gw-1
      assignedHub: plant1-hub-a.azure-devices.net
      deviceId: plant1-gw-1
      status: assigned
      substatus: initialAssignment
      createdDateTimeUtc: "2026-12-05T10:12:01.1234567Z"
      lastUpdatedDateTimeUtc: "2026-12-05T10:12:01.5234567Z"
      etag: IjAwMDAwNGVkLTAwMDAtMDgwMC0wMDAwLTY0NjgwMWU1MDAwMCI=
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.fleet.azure_iot.plugins.module_utils._dps import DPS_ARGS, build_dps_client
from ansible_collections.fleet.azure_iot.plugins.module_utils._dps_enrollment import check_registration_id
from ansible_collections.fleet.azure_iot.plugins.module_utils._errors import InputError
from ansible_collections.fleet.azure_iot.plugins.module_utils._module import RETRY_ARGS, run_module


def run(module: AnsibleModule) -> dict:
    p = module.params
    option = "registration_id" if p["registration_id"] is not None else "enrollment_group_id"
    try:
        check_registration_id(p[option], option)
    except ValueError as exc:
        raise InputError(f"{option}: {exc}") from None
    client = build_dps_client(p, module.warn)
    if option == "registration_id":
        one = client.registration(p["registration_id"])
        return {"changed": False, "registrations": [one] if one else []}
    return {"changed": False, "registrations": list(client.group_registrations(p["enrollment_group_id"]))}


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(DPS_ARGS, **RETRY_ARGS, registration_id=dict(type="str"),
                           enrollment_group_id=dict(type="str")),
        required_one_of=[("registration_id", "enrollment_group_id")],
        mutually_exclusive=[("registration_id", "enrollment_group_id")],
        supports_check_mode=True,
    )
    run_module(module, run)


if __name__ == "__main__":
    main()
