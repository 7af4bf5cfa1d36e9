#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: fleet.azure_iot contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: iothub_device_info
short_description: Read Azure IoT Hub device identities
version_added: 1.0.0
description:
  - Reads one device identity, the result of an IoT Hub query, the children of an IoT Edge device, or every
    edge device. Follows every page of a query.
  - Queries read the hub's query index, which lags a few seconds behind writes; reading one device with
    O(device_id) is always current.
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
      - Read this device's full identity (C(GET /devices/{id})). RV(devices) is empty when it does not exist.
    type: str
    aliases: [name]
  query:
    description:
      - An IoT Hub query, for example C(SELECT * FROM devices WHERE tags.site = 'plant-7').
      - Returns device twins (no keys).
    type: str
  parent:
    description:
      - Device id of an IoT Edge device; returns the twins of its children (leaf devices and edge devices).
    type: str
  edge_only:
    description:
      - Return the twins of every IoT Edge device.
    type: bool
    default: false
  return_secrets:
    description:
      - With O(device_id), return the device's symmetric keys instead of C(********).
    type: bool
    default: false
  include_twin:
    description:
      - Return each device with its C(twin) (tags, desired and reported properties, version, etag).
      - Read through the query the module makes anyway (query results are twins), never with one GET per
        device; with O(device_id), one C(GET /twins/{id}).
    type: bool
    default: false
    version_added: 1.1.0
notes:
  - 'Rights: O(device_id) reads need C(RegistryRead); O(query), O(parent) and O(edge_only) run queries, which need
    C(ServiceConnect) (the security doc; an SDK sample says C(RegistryRead)). Built-in policies C(service) plus
    C(registryRead), or C(iothubowner); Entra role C(IoT Hub Data Reader).'
  - With none of O(device_id), O(query), O(parent) or O(edge_only), every device twin of the hub is returned.
seealso:
  - module: fleet.azure_iot.iothub_device
"""

EXAMPLES = r"""
- name: One device
  fleet.azure_iot.iothub_device_info:
    device_id: plant-gw
  register: gw

- name: The children of a gateway
  fleet.azure_iot.iothub_device_info:
    parent: plant-gw
  register: children

- name: Devices tagged for a plant
  fleet.azure_iot.iothub_device_info:
    query: "SELECT * FROM devices WHERE tags.fleet = 'plant-7'"

- name: Every edge device
  fleet.azure_iot.iothub_device_info:
    edge_only: true
"""

RETURN = r"""
devices:
  description:
    - With O(device_id), a list of zero or one device identity (camelCase, as the hub returns it, keys redacted
      unless O(return_secrets=true)).
    - Otherwise the device twins the query returned (C(deviceId), C(status), C(capabilities), C(deviceScope),
      C(parentScopes), C(tags), C(properties), ...), which carry no keys.
  returned: always
  type: list
  elements: dict
  sample:
    - deviceId: line1-sensor-1
      status: enabled
      capabilities: {iotEdge: false}
      deviceScope: ms-azure-iot-edge://plant-gw-637121074930370650
      parentScopes: [ms-azure-iot-edge://plant-gw-637121074930370650]
exists:
  description: With O(device_id), whether the device exists.
  returned: when O(device_id) is given
  type: bool
  sample: true
connection_string:
  description: The device connection string with its primary key.
  returned: with O(device_id) and O(return_secrets=true), for a SAS device
  type: str
  sample: HostName=myhub.azure-devices.net;DeviceId=plant-gw;SharedAccessKey=...
secondary_connection_string:
  description: The device connection string with its secondary key.
  returned: with O(device_id) and O(return_secrets=true), for a SAS device
  type: str
  sample: HostName=myhub.azure-devices.net;DeviceId=plant-gw;SharedAccessKey=...
requests:
  description: How many requests of each kind the module made.
  returned: always
  type: dict
  sample: {gets: 1, writes: 0, query_pages: 1, bulk_calls: 0, registry_operations: 1}
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.fleet.azure_iot.plugins.module_utils._models import check_device_id
from ansible_collections.fleet.azure_iot.plugins.module_utils._secrets import (
    connection_strings,
    hide_secrets,
    redact_device,
)
from ansible_collections.fleet.azure_iot.plugins.module_utils._output import twin_of
from ansible_collections.fleet.azure_iot.plugins.module_utils._iothub import build_hub_client
from ansible_collections.fleet.azure_iot.plugins.module_utils._module import IOTHUB_ARGS, run_module
from ansible_collections.fleet.azure_iot.plugins.module_utils._errors import ModuleFailure, PlanError


def run(module: AnsibleModule) -> dict:
    p = module.params
    for opt in ("device_id", "parent"):
        if p[opt] is not None:
            try:
                check_device_id(p[opt], opt)
            except ValueError as exc:
                raise ModuleFailure(str(exc)) from None
    if p["return_secrets"] and not p["device_id"]:
        raise ModuleFailure("return_secrets works with device_id only: query results (twins) carry no keys")
    client = build_hub_client(p, module.warn)
    result = {"changed": False}
    if p["device_id"] is not None:
        device = client.get_device(p["device_id"])
        hide_secrets(module, device, p["return_secrets"])
        result["devices"] = [redact_device(device, p["return_secrets"])] if device else []
        result["exists"] = device is not None
        if p["include_twin"] and device is not None:
            result["devices"][0]["twin"] = twin_of(client.get_twin(p["device_id"]))
        if p["return_secrets"]:
            result.update(connection_strings(client.host, device))
    elif p["parent"] is not None:
        parent = client.get_device(p["parent"])
        if parent is None:
            raise PlanError(f"parent: device {p['parent']!r} does not exist")
        if not (parent.get("capabilities") or {}).get("iotEdge"):
            raise PlanError(f"parent: device {p['parent']!r} is not an IoT Edge device, so it has no children")
        result["devices"] = client.children_of(parent["deviceScope"])
    elif p["query"] is not None:
        result["devices"] = list(client.query(p["query"]))
    elif p["edge_only"]:
        result["devices"] = list(client.query("SELECT * FROM devices WHERE capabilities.iotEdge = true"))
    else:
        result["devices"] = list(client.query("SELECT * FROM devices"))
    if p["include_twin"] and p["device_id"] is None:
        for doc in result["devices"]:  # query results are twins already: no GET per device
            doc["twin"] = twin_of(doc)
    result["requests"] = client.counters.as_dict()
    return result


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            IOTHUB_ARGS,
            device_id=dict(type="str", aliases=["name"]),
            query=dict(type="str"),
            parent=dict(type="str"),
            edge_only=dict(type="bool", default=False),
            return_secrets=dict(type="bool", default=False),
            include_twin=dict(type="bool", default=False),
        ),
        supports_check_mode=True,
        mutually_exclusive=[("device_id", "query", "parent", "edge_only")],
    )
    run_module(module, run)


if __name__ == "__main__":
    main()
