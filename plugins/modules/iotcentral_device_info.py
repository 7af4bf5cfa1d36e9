#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: fleet.azure_iot contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: iotcentral_device_info
short_description: Read Azure IoT Central devices
version_added: 1.0.0
description:
  - Reads one device of an IoT Central application, or every device (following every C(nextLink) page),
    optionally filtered by template or organization on the client side.
author:
  - fleet.azure_iot developers (@fleet-azure-iot)
extends_documentation_fragment:
  - fleet.azure_iot._iotcentral
  - fleet.azure_iot._retries
  - fleet.azure_iot._attributes
  - fleet.azure_iot._attributes.ACTIONGROUP_IOTCENTRAL
  - fleet.azure_iot._attributes.INFO_MODULE
options:
  device_id:
    description:
      - Read only this device. RV(devices) is empty when it does not exist.
    type: str
    aliases: [name]
  template:
    description:
      - Keep only devices of this device template.
    type: str
  organization:
    description:
      - Keep only devices of this organization.
    type: str
notes:
  - 'Rights: an API token or Entra identity with a role that may read devices in the application.'
seealso:
  - module: fleet.azure_iot.iotcentral_device
"""

EXAMPLES = r"""
- name: Every thermostat of the Seattle organization
  fleet.azure_iot.iotcentral_device_info:
    template: "dtmi:contoso:testDeviceTemplate;1"
    organization: seattle
  register: thermostats
"""

RETURN = r"""
devices:
  description: The devices, as IoT Central returns them.
  returned: always
  type: list
  elements: dict
  sample:
    - id: checkout-thermostat-1
      displayName: Checkout thermostat 1
      template: "dtmi:contoso:testDeviceTemplate;1"
      enabled: true
      simulated: false
      provisioned: false
      organizations: [seattle]
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.fleet.azure_iot.plugins.module_utils._central import CENTRAL_ARGS, build_central_client
from ansible_collections.fleet.azure_iot.plugins.module_utils._module import RETRY_ARGS, run_module
from ansible_collections.fleet.azure_iot.plugins.module_utils._resource_central_device import CentralSpec


def run(module: AnsibleModule) -> dict:
    p = module.params
    if p["device_id"] is not None:
        CentralSpec(device_id=p["device_id"])  # validated before any request
    client = build_central_client(p, module.warn)
    if p["device_id"] is not None:
        device = client.get(p["device_id"])
        devices = [device] if device else []
    else:
        devices = client.list()
    if p["template"] is not None:
        devices = [d for d in devices if d.get("template") == p["template"]]
    if p["organization"] is not None:
        devices = [d for d in devices if p["organization"] in (d.get("organizations") or [])]
    return {"changed": False, "devices": devices}


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            CENTRAL_ARGS, **RETRY_ARGS,
            device_id=dict(type="str", aliases=["name"]),
            template=dict(type="str"),
            organization=dict(type="str"),
        ),
        supports_check_mode=True,
    )
    run_module(module, run)


if __name__ == "__main__":
    main()
