#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: fleet.azure_iot contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: iothub_configuration_info
short_description: Read IoT Hub configurations and IoT Edge deployments with their metrics
version_added: 1.1.0
description:
  - Reads one configuration (O(id)) or every configuration of the hub, each with its system metrics
    (C(targetedCount), C(appliedCount), and for deployments the reported counts) and custom metrics.
author:
  - fleet.azure_iot developers (@fleet-azure-iot)
extends_documentation_fragment:
  - fleet.azure_iot._iothub
  - fleet.azure_iot._retries
  - fleet.azure_iot._attributes
  - fleet.azure_iot._attributes.ACTIONGROUP_IOTHUB
  - fleet.azure_iot._attributes.INFO_MODULE
options:
  id:
    description:
      - One configuration, with the generations of a deployment that M(fleet.azure_iot.iothub_configuration)
        swapped under that id (C(content_update=swap); label C(fleetAzureIotDeployment)), oldest first; the last
        one is the current one. Without it, every configuration (the API does not page them).
    type: str
    aliases: [name]
notes:
  - 'Rights: C(RegistryRead) (Entra data action C(configurations/read)); ServiceConnect is not needed.'
seealso:
  - module: fleet.azure_iot.iothub_configuration
"""

EXAMPLES = r"""
- name: Every configuration with its metrics
  fleet.azure_iot.iothub_configuration_info:
  register: configurations

- name: One deployment
  fleet.azure_iot.iothub_configuration_info:
    id: plant7-base
"""

RETURN = r"""
configurations:
  description: The configurations (camelCase, as the hub returns them), with C(systemMetrics) and C(metrics).
  returned: always
  type: list
  elements: dict
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.fleet.azure_iot.plugins.module_utils._secrets import hide_document_secrets
from ansible_collections.fleet.azure_iot.plugins.module_utils._deployment_swap import generations
from ansible_collections.fleet.azure_iot.plugins.module_utils._iothub import build_hub_client
from ansible_collections.fleet.azure_iot.plugins.module_utils._module import IOTHUB_ARGS, run_module
from ansible_collections.fleet.azure_iot.plugins.module_utils._resource_configuration import ConfigurationSpec


def run(module: AnsibleModule) -> dict:
    p = module.params
    if p["id"] is not None:
        ConfigurationSpec(id=p["id"])  # the id rule, before any request
    client = build_hub_client(p, module.warn)
    if p["id"] is not None:  # the configuration, and the generations of a deployment swapped under that id
        configurations = generations(client, p["id"])
    else:
        configurations = client.list_configurations()
    hide_document_secrets(module, configurations)  # registry passwords, secret env values: masked in the output
    return {"changed": False, "configurations": configurations, "requests": client.counters.as_dict()}


def main() -> None:
    module = AnsibleModule(argument_spec=dict(IOTHUB_ARGS, id=dict(type="str", aliases=["name"])),
                           supports_check_mode=True)
    run_module(module, run)


if __name__ == "__main__":
    main()
