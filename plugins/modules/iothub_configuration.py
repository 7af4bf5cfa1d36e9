#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: fleet.azure_iot contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: iothub_configuration
short_description: Manage IoT Hub automatic device configurations and IoT Edge deployments at scale
version_added: 1.1.0
description:
  - Creates, updates or deletes one configuration (C(/configurations/{id})), an automatic device management
    configuration (O(content) with C(deviceContent) or C(moduleContent)) or an IoT Edge deployment
    (C(modulesContent); a layered deployment sets C(properties.desired.*) paths).
  - O(target_condition), O(labels), O(priority) and O(metrics) are updated in place, with a read-modify-write of the
    whole configuration and C(If-Match) of its etag. An option that is not given is not managed.
  - IoT Hub does not change a configuration's content after creation (an update would silently keep the old one).
    A declared O(content) that differs from the hub's fails with a clear message, unless O(recreate=true), which
    deletes the configuration and creates it again under the same id (in check mode, predicted, nothing written).
author:
  - fleet.azure_iot developers (@fleet-azure-iot)
extends_documentation_fragment:
  - fleet.azure_iot._iothub
  - fleet.azure_iot._retries
  - fleet.azure_iot._attributes
  - fleet.azure_iot._attributes.ACTIONGROUP_IOTHUB
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
  idempotent:
    support: full
options:
  id:
    description:
      - The configuration id, up to 128 lower-case letters, digits and C(- + % _ * ! ').
    type: str
    required: true
    aliases: [name]
  state:
    description:
      - V(present) creates or updates the configuration, V(absent) deletes it. Deleting a deployment does not
        remove the modules from the devices it targeted.
    type: str
    choices: [present, absent]
    default: present
  content:
    description:
      - The configuration's content, C(modulesContent) (an IoT Edge deployment), C(deviceContent) or
        C(moduleContent), as a dictionary (a wrapping C(content) key is accepted). Required to create.
      - A standard deployment is validated like M(fleet.azure_iot.iothub_edge_modules) validates a manifest.
    type: dict
  content_file:
    description:
      - A JSON or YAML file holding O(content).
    type: path
  target_condition:
    description:
      - Which devices the configuration targets, a condition on twin tags, reported properties or C(deviceId),
        for example C(tags.site = 'plant-7'), or V(*) for every device. V(*) when a configuration is created
        without one.
    type: str
  priority:
    description:
      - The highest number wins where configurations overlap; V(0) when created without one.
    type: int
  labels:
    description:
      - Labels (strings), the whole set.
    type: dict
  metrics:
    description:
      - Custom metrics, name to query (at most five), the whole set.
    type: dict
  recreate:
    description:
      - When the declared O(content) differs from the hub's, delete the configuration and create it again under
        the same id (devices it targets are re-evaluated). The same as O(content_update=recreate).
    type: bool
    default: false
  content_update:
    description:
      - What to do when the declared O(content) differs from the hub's (IoT Hub never changes a configuration's
        content).
      - V(refuse) fails, naming the paths that differ.
      - V(recreate) deletes the configuration and creates it again under the same id; the devices it targets run
        without its modules until the new one is applied.
      - V(swap) updates without an outage. The new content is created as a new generation of the deployment
        (id C(<id>-g<n>), labels C(fleetAzureIotDeployment) and C(fleetAzureIotGeneration)) at a priority above
        the current one. The task waits until the hub reports it applied where it targets (C(appliedCount)
        reaches C(targetedCount)), deletes the older generations, and sets the declared priority again. O(id) keeps
        naming the deployment; a re-run with the same content changes nothing, and a run that timed out is
        continued by the next one. Check mode predicts the swap without writing.
      - When not set, V(recreate) if O(recreate=true), else V(refuse).
    type: str
    choices: [refuse, recreate, swap]
    version_added: 1.2.0
  content_update_timeout:
    description:
      - With O(content_update=swap), how long to wait (seconds) for the new generation to be applied before the
        task fails (the old generation is kept, so no device loses its modules).
    type: float
    default: 900
    version_added: 1.2.0
  etag:
    description:
      - The etag the configuration is expected to have; another one fails the task.
    type: str
notes:
  - 'Rights: C(RegistryRead) to read and C(RegistryWrite) to write configurations (C(iothubowner) or
    C(registryReadWrite); Entra data actions C(configurations/read), C(configurations/write),
    C(configurations/delete)). IoT Hub allows 100 configurations per hub and 20 configuration writes per minute
    per unit; ServiceConnect is not needed.'
seealso:
  - module: fleet.azure_iot.iothub_configuration_info
  - module: fleet.azure_iot.iothub_edge_modules
"""

EXAMPLES = r"""
- name: A device configuration for every sensor of plant 7
  fleet.azure_iot.iothub_configuration:
    id: plant7-telemetry
    content:
      deviceContent:
        properties.desired.telemetryInterval: 30
    target_condition: "tags.site = 'plant-7'"
    priority: 10
    labels:
      team: ops
    metrics:
      reporting: "SELECT deviceId FROM devices WHERE is_defined(properties.reported.telemetryInterval)"

- name: Raise its priority (content stays as it is)
  fleet.azure_iot.iothub_configuration:
    id: plant7-telemetry
    priority: 20

- name: Remove it
  fleet.azure_iot.iothub_configuration:
    id: plant7-telemetry
    state: absent
"""

RETURN = r"""
configuration:
  description: The configuration as the hub returns it (after the change; the prediction in check mode).
  returned: always
  type: dict
action:
  description: V(create), V(update), V(recreate), V(swap), V(delete) or V(none).
  returned: always
  type: str
changes:
  description: The options whose values differ (C(content) when it is recreated).
  returned: always
  type: list
  elements: str
notes:
  description: What happened on the way.
  returned: always
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.fleet.azure_iot.plugins.module_utils._secrets import hide_document_secrets
from ansible_collections.fleet.azure_iot.plugins.module_utils._deployment_swap import swap_configuration
from ansible_collections.fleet.azure_iot.plugins.module_utils._diff import changes_diff
from ansible_collections.fleet.azure_iot.plugins.module_utils._errors import ManifestError, ModuleFailure
from ansible_collections.fleet.azure_iot.plugins.module_utils._manifest import load_document
from ansible_collections.fleet.azure_iot.plugins.module_utils._iothub import build_hub_client
from ansible_collections.fleet.azure_iot.plugins.module_utils._module import IOTHUB_ARGS, run_module
from ansible_collections.fleet.azure_iot.plugins.module_utils._resource_configuration import (
    ConfigurationSpec,
    ensure_configuration,
)


def run(module: AnsibleModule) -> dict:
    p = module.params
    content = p["content"]
    hide_document_secrets(module, content)  # registry passwords, secret env values: masked in every output
    if p["content_file"] is not None:
        try:
            content = load_document(p["content_file"])
        except ManifestError as exc:
            raise ModuleFailure(str(exc)) from None
        hide_document_secrets(module, content)
        if not isinstance(content, dict):
            raise ModuleFailure(f"content_file: {p['content_file']!r} holds no dictionary of content")
    mode = p["content_update"] or ("recreate" if p["recreate"] else "refuse")
    if p["recreate"] and mode != "recreate":
        raise ModuleFailure(f"recreate=true and content_update={mode} contradict each other: drop recreate")
    if mode == "swap" and p["etag"] is not None:
        raise ModuleFailure("etag cannot be used with content_update=swap (a swap writes several configurations)")
    if p["content_update_timeout"] <= 0:
        raise ModuleFailure("content_update_timeout must be more than 0 seconds")
    spec = ConfigurationSpec(id=p["id"], state=p["state"], labels=p["labels"], content=content,
                             target_condition=p["target_condition"], priority=p["priority"], metrics=p["metrics"],
                             recreate=mode == "recreate")
    client = build_hub_client(p, module.warn)

    def hide(doc) -> None:
        hide_document_secrets(module, doc)
    if mode == "swap":
        res = swap_configuration(client, spec, check_mode=module.check_mode, timeout=p["content_update_timeout"],
                                 hide=hide)
    else:
        res = ensure_configuration(client, spec, check_mode=module.check_mode, pinned_etag=p["etag"], hide=hide)
    hide_document_secrets(module, res.obj)  # what the hub holds
    for warning in res.warnings:
        module.warn(warning)
    result = {"changed": res.changed, "action": res.plan.action, "changes": sorted(res.plan.changes),
              "configuration": res.obj, "notes": res.notes}
    if module._diff:
        result["diff"] = changes_diff(res.plan.changes, f"configuration {spec.id}")
    return result


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            IOTHUB_ARGS,
            id=dict(type="str", required=True, aliases=["name"]),
            state=dict(type="str", choices=["present", "absent"], default="present"),
            content=dict(type="dict"),
            content_file=dict(type="path"),
            target_condition=dict(type="str"),
            priority=dict(type="int"),
            labels=dict(type="dict"),
            metrics=dict(type="dict"),
            recreate=dict(type="bool", default=False),
            content_update=dict(type="str", choices=["refuse", "recreate", "swap"]),
            content_update_timeout=dict(type="float", default=900),
            etag=dict(type="str"),
        ),
        supports_check_mode=True,
        mutually_exclusive=[("content", "content_file")],
    )
    run_module(module, run)


if __name__ == "__main__":
    main()
