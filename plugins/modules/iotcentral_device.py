#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: fleet.azure_iot contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: iotcentral_device
short_description: Manage an Azure IoT Central device idempotently
version_added: 1.0.0
description:
  - Creates, updates or deletes one device of an IoT Central application.
  - A true ensure. The module reads the device first and creates it with C(PUT) only when it does not exist.
    An update is a JSON merge C(PATCH) of only the changed fields, carrying the etag that was read. It is never
    a blind C(PUT), which would re-enable or rename the device.
  - Options that are not given are not managed. If the device changes between the read and the write (HTTP 412),
    the module reads it again and re-plans, unless O(etag) pins the expected version.
  - Before writing, the module checks that the template and organization it sets exist in the application,
    so a typo fails without a write.
author:
  - fleet.azure_iot developers (@fleet-azure-iot)
extends_documentation_fragment:
  - fleet.azure_iot._iotcentral
  - fleet.azure_iot._retries
  - fleet.azure_iot._attributes
  - fleet.azure_iot._attributes.ACTIONGROUP_IOTCENTRAL
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
  idempotent:
    support: full
options:
  device_id:
    description:
      - The device id, up to 128 lowercase letters, digits, C(-), C(.), C(_) or C(:).
    type: str
    required: true
    aliases: [name]
  state:
    description:
      - V(present) creates or updates the device, V(absent) deletes it.
    type: str
    choices: [present, absent]
    default: present
  display_name:
    description:
      - The device's display name. On create it defaults to the device id.
    type: str
  template:
    description:
      - The device template id, for example C(dtmi:contoso:testDeviceTemplate;1). It must exist in the application.
    type: str
  simulated:
    description:
      - Whether IoT Central simulates the device. Default on create is V(false).
    type: bool
  enabled:
    description:
      - Whether the device may connect. Default on create is V(true).
    type: bool
  organizations:
    description:
      - The organization the device belongs to (IoT Central supports one).
    type: list
    elements: str
  etag:
    description:
      - The etag the device is expected to have. If the device has a different one, the task fails with a conflict.
    type: str
  return_credentials:
    description:
      - Return the device's provisioning credentials (C(idScope) and symmetric keys) in RV(credentials).
      - When on, set C(no_log) on the task if its output is logged.
    type: bool
    default: false
notes:
  - 'Rights: an API token or Entra identity with a role that may manage devices in the application (for example C(Operator) or C(Administrator)).'
seealso:
  - module: fleet.azure_iot.iotcentral_device_info
"""

EXAMPLES = r"""
- name: A thermostat from a template, in an organization (the application from IOTCENTRAL_APP_URL)
  fleet.azure_iot.iotcentral_device:
    device_id: checkout-thermostat-1
    display_name: Checkout thermostat 1
    template: "dtmi:contoso:testDeviceTemplate;1"
    organizations: [seattle]

- name: Block a device without touching anything else
  fleet.azure_iot.iotcentral_device:
    device_id: checkout-thermostat-1
    enabled: false

- name: Provisioning credentials for the device's firmware
  fleet.azure_iot.iotcentral_device:
    device_id: checkout-thermostat-1
    return_credentials: true
  no_log: true
  register: thermostat

- name: Remove it
  fleet.azure_iot.iotcentral_device:
    device_id: checkout-thermostat-1
    state: absent

- name: Name the application once for every IoT Central task of a play
  module_defaults:
    group/fleet.azure_iot.iotcentral:
      app_subdomain: contoso-store
      api_token: "{{ vault_central_api_token }}"
  block:
    - name: Read a device of contoso-store.azureiotcentral.com
      fleet.azure_iot.iotcentral_device_info:
        device_id: checkout-thermostat-2
"""

RETURN = r"""
device:
  description: The device as IoT Central returns it, after the change. It is the prediction in check mode, and V(null) after a delete.
  returned: always
  type: dict
  sample:
    id: checkout-thermostat-1
    etag: eyJoZWFkZXIiOiJcIjE1MDE2ZDFiLTAwMDAtMGQwMC0wMDAwLTVkYWNkNDIxMDAwMFwiIn0
    displayName: Checkout thermostat 1
    template: "dtmi:contoso:testDeviceTemplate;1"
    simulated: false
    provisioned: false
    enabled: true
    organizations: [seattle]
action:
  description: What the plan decided, V(create), V(update), V(delete) or V(none).
  returned: always
  type: str
changes:
  description: The options whose values differed from the application's.
  returned: always
  type: list
  elements: str
credentials:
  description: The device's C(idScope) and C(symmetricKey) for provisioning.
  returned: when O(return_credentials=true) and the device exists
  type: dict
notes:
  description: What happened on the way, for example a conflicting change that made the module re-plan.
  returned: always
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.fleet.azure_iot.plugins.module_utils._diff import views_diff
from ansible_collections.fleet.azure_iot.plugins.module_utils._central import CENTRAL_ARGS, build_central_client
from ansible_collections.fleet.azure_iot.plugins.module_utils._module import RETRY_ARGS, run_module
from ansible_collections.fleet.azure_iot.plugins.module_utils._resource_central_device import (
    CentralSpec,
    ensure_central_device,
)

SPEC_OPTIONS = ("device_id", "state", "display_name", "template", "simulated", "enabled", "organizations")


def run(module: AnsibleModule) -> dict:
    p = module.params
    spec = CentralSpec(**{k: p[k] for k in SPEC_OPTIONS})
    client = build_central_client(p, module.warn)
    res = ensure_central_device(client, spec, check_mode=module.check_mode, pinned_etag=p["etag"])
    result = {"changed": res.changed, "action": res.plan.action, "changes": sorted(res.plan.changes),
              "device": res.obj, "notes": res.notes}
    if p["return_credentials"] and res.obj is not None and not (module.check_mode and res.plan.action == "create"):
        result["credentials"] = client.credentials(spec.device_id)
    if module._diff:
        result["diff"] = views_diff(res.plan.before, res.plan.after, f"iotcentral device {spec.device_id}", hub="app")
    return result


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            CENTRAL_ARGS, **RETRY_ARGS,
            device_id=dict(type="str", required=True, aliases=["name"]),
            state=dict(type="str", choices=["present", "absent"], default="present"),
            display_name=dict(type="str"),
            template=dict(type="str"),
            simulated=dict(type="bool"),
            enabled=dict(type="bool"),
            organizations=dict(type="list", elements="str"),
            etag=dict(type="str"),
            return_credentials=dict(type="bool", default=False),
        ),
        supports_check_mode=True,
    )
    run_module(module, run)


if __name__ == "__main__":
    main()
