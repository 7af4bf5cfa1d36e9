#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: fleet.azure_iot contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: iothub_module_info
short_description: Read Azure IoT Hub module identities and module twins
version_added: 1.1.0
description:
  - Reads one module identity (O(device_id) and O(module_id)), every module of a device (O(device_id) alone),
    or the module twins an IoT Hub query over C(devices.modules) returns (O(query), following every page).
  - Reads the IoT Edge runtime modules C($edgeAgent) and C($edgeHub) too; their twins are where a deployment
    lands (O(include_twin=true)).
author:
  - fleet.azure_iot developers (@fleet-azure-iot)
extends_documentation_fragment:
  - fleet.azure_iot._iothub
  - fleet.azure_iot._retries
  - fleet.azure_iot._attributes
  - fleet.azure_iot._attributes.ACTIONGROUP_IOTHUB
  - fleet.azure_iot._attributes.INFO_MODULE
options:
  device_id:
    description:
      - The device whose modules to read (all of them, or O(module_id) only).
    type: str
  module_id:
    description:
      - One module of O(device_id).
    type: str
  query:
    description:
      - A WHERE clause over module twins, for example C(moduleId = 'analytics' AND tags.owner = 'vision-team');
        the module runs C(SELECT * FROM devices.modules WHERE <query>). Results are module twins (no keys).
      - Mutually exclusive with O(device_id).
    type: str
  include_twin:
    description:
      - Return each module with its C(twin) (tags, desired and reported properties, version, etag). With
        O(query) the results are the twins already; otherwise one C(GET) of each module twin.
    type: bool
    default: false
  return_secrets:
    description:
      - Return the modules' keys instead of C(********). Not with O(query), whose twins carry no keys.
    type: bool
    default: false
notes:
  - 'Rights: C(RegistryRead) to read module identities; C(ServiceConnect) for twins and queries (the security doc;
    an SDK sample says C(RegistryRead)).'
seealso:
  - module: fleet.azure_iot.iothub_module
"""

EXAMPLES = r"""
- name: Every module of an edge gateway, with the deployment in $edgeAgent's twin
  fleet.azure_iot.iothub_module_info:
    device_id: plant-gw
    include_twin: true
  register: gw_modules

- name: One module
  fleet.azure_iot.iothub_module_info:
    device_id: plant-gw
    module_id: $edgeHub

- name: Modules of one kind across the hub
  fleet.azure_iot.iothub_module_info:
    query: "moduleId = '$edgeAgent'"
"""

RETURN = r"""
modules:
  description:
    - Module identities (camelCase, keys redacted unless O(return_secrets=true)), or with O(query) module twins.
    - With O(include_twin=true) each carries C(twin).
  returned: always
  type: list
  elements: dict
  sample:
    - moduleId: $edgeAgent
      deviceId: plant-gw
      managedBy: iotEdge
      authentication: {type: none}
requests:
  description: How many requests of each kind the module made.
  returned: always
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.fleet.azure_iot.plugins.module_utils._models import check_device_id
from ansible_collections.fleet.azure_iot.plugins.module_utils._secrets import hide_secrets, redact_device
from ansible_collections.fleet.azure_iot.plugins.module_utils._output import twin_of
from ansible_collections.fleet.azure_iot.plugins.module_utils._iothub import build_hub_client
from ansible_collections.fleet.azure_iot.plugins.module_utils._module import IOTHUB_ARGS, run_module
from ansible_collections.fleet.azure_iot.plugins.module_utils._errors import ModuleFailure, PlanError


def run(module: AnsibleModule) -> dict:
    p = module.params
    if p["device_id"] is not None:
        try:
            check_device_id(p["device_id"])
        except ValueError as exc:
            raise ModuleFailure(str(exc)) from None
    if p["module_id"] is not None and p["device_id"] is None:
        raise ModuleFailure("module_id needs device_id")
    if p["device_id"] is None and p["query"] is None:
        raise ModuleFailure("give device_id (and optionally module_id), or query")
    if p["return_secrets"] and p["query"] is not None:
        raise ModuleFailure("return_secrets works with device_id only: query results (twins) carry no keys")
    client = build_hub_client(p, module.warn)
    keep = p["return_secrets"]
    if p["query"] is not None:
        modules = list(client.query(f"SELECT * FROM devices.modules WHERE {p['query']}"))
        if p["include_twin"]:
            for doc in modules:
                doc["twin"] = twin_of(doc)
    else:
        if p["module_id"] is not None:
            one = client.get_module(p["device_id"], p["module_id"])
            modules = [one] if one is not None else []
        else:
            modules = client.list_modules(p["device_id"])
            if modules is None:
                raise PlanError(f"device_id: device {p['device_id']!r} does not exist")
        for mod in modules:
            hide_secrets(module, mod, keep)
        modules = [redact_device(m, keep) for m in modules]
        if p["include_twin"]:
            for mod in modules:
                mod["twin"] = twin_of(client.get_twin(mod["deviceId"], mod["moduleId"]))
    return {"changed": False, "modules": modules, "requests": client.counters.as_dict()}


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            IOTHUB_ARGS,
            device_id=dict(type="str"),
            module_id=dict(type="str"),
            query=dict(type="str"),
            include_twin=dict(type="bool", default=False),
            return_secrets=dict(type="bool", default=False),
        ),
        supports_check_mode=True,
        mutually_exclusive=[("device_id", "query")],
    )
    run_module(module, run)


if __name__ == "__main__":
    main()
