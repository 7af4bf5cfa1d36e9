#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: fleet.azure_iot contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: iothub_edge_modules
short_description: Set the modules of one IoT Edge device from a deployment manifest, idempotently
version_added: 1.1.0
description:
  - Gives one IoT Edge device its modules (what C(az iot edge set-modules) does), declaratively. An edge device
    without a deployment runs no edgeHub, so its children cannot connect through it.
  - Reads the desired properties of the twins of C($edgeAgent), C($edgeHub) and of every module the manifest
    names, compares them with the manifest, and only when they differ calls
    C(POST /devices/{id}/applyConfigurationContent) with the whole manifest. A re-run with nothing to change
    makes no write.
  - C(createOptions) is compared as JSON, whether it is given as a dictionary or as a string in any spelling;
    it is sent as a compact JSON string, split into C(createOptions01)... chunks of 512 characters when long.
  - A module the manifest runs whose twin does not exist yet (the edge agent creates module identities when it
    next runs) is pending, not a difference.
  - The manifest is validated before any request. C($edgeAgent) schema 1.0 or 1.1 with C(runtime) and both
    system modules, C($edgeHub) schema 1.0 to 1.3 with C(routes) and C(storeAndForwardConfiguration), module
    names, non-empty images, at most 50 modules, desired properties within a twin's 32 KB.
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
  device_id:
    description:
      - The IoT Edge device. It must exist and be an edge device; in check mode, an earlier task may create it.
    type: str
    required: true
  content:
    description:
      - The deployment manifest, as a dictionary. Either C(modulesContent) itself, a dictionary with the key
        C(modulesContent), or one with C(content) holding C(modulesContent) as C(az iot edge) files have it.
      - Exactly one of O(content) and O(content_file) is required.
    type: dict
  content_file:
    description:
      - A JSON or YAML file holding the manifest, in any form O(content) takes.
    type: path
notes:
  - 'Rights: C(RegistryRead) to read the device, C(ServiceConnect) to read the module twins, and the right to
    apply a configuration (C(RegistryWrite) and C(ServiceConnect) with SAS, so C(iothubowner); Entra data action
    C(configurations/applyToEdgeDevice/action)).'
seealso:
  - module: fleet.azure_iot.iothub_configuration
  - module: fleet.azure_iot.iothub_module_info
"""

EXAMPLES = r"""
- name: An edge gateway
  fleet.azure_iot.iothub_device:
    device_id: line2-gw
    edge_enabled: true

- name: Its modules, a temperature simulator routed upstream
  fleet.azure_iot.iothub_edge_modules:
    device_id: line2-gw
    content:
      modulesContent:
        $edgeAgent:
          properties.desired:
            schemaVersion: "1.1"
            runtime: {type: docker, settings: {minDockerVersion: v1.25}}
            systemModules:
              edgeAgent: {type: docker, settings: {image: "mcr.microsoft.com/azureiotedge-agent:1.5"}}
              edgeHub:
                type: docker
                status: running
                restartPolicy: always
                settings:
                  image: "mcr.microsoft.com/azureiotedge-hub:1.5"
                  createOptions:
                    HostConfig:
                      PortBindings: {"8883/tcp": [{HostPort: "8883"}], "443/tcp": [{HostPort: "443"}]}
            modules:
              tempsensor:
                type: docker
                status: running
                restartPolicy: always
                version: "1.0"
                settings: {image: "mcr.microsoft.com/azureiotedge-simulated-temperature-sensor:1.5"}
        $edgeHub:
          properties.desired:
            schemaVersion: "1.2"
            routes: {upstream: "FROM /messages/* INTO $upstream"}
            storeAndForwardConfiguration: {timeToLiveSecs: 7200}
        tempsensor:
          properties.desired: {SendInterval: 5}
"""

RETURN = r"""
changes:
  description: The modules whose desired properties differed (C($edgeAgent), C($edgeHub), module names).
  returned: always
  type: list
  elements: str
  sample: [$edgeHub]
modules:
  description: The modules the manifest runs (the keys of C($edgeAgent.modules)).
  returned: always
  type: list
  elements: str
notes:
  description: What happened on the way (a lost answer settled by reading the twins again).
  returned: always
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.fleet.azure_iot.plugins.module_utils._secrets import hide_document_secrets
from ansible_collections.fleet.azure_iot.plugins.module_utils._diff import changes_diff
from ansible_collections.fleet.azure_iot.plugins.module_utils._errors import ManifestError, ModuleFailure
from ansible_collections.fleet.azure_iot.plugins.module_utils._manifest import (
    check_manifest,
    load_manifest,
    modules_list,
)
from ansible_collections.fleet.azure_iot.plugins.module_utils._models import check_device_id
from ansible_collections.fleet.azure_iot.plugins.module_utils._iothub import build_hub_client
from ansible_collections.fleet.azure_iot.plugins.module_utils._module import IOTHUB_ARGS, run_module
from ansible_collections.fleet.azure_iot.plugins.module_utils._resource_edge_modules import ensure_edge_modules


def run(module: AnsibleModule) -> dict:
    p = module.params
    hide_document_secrets(module, p["content"])  # registry passwords, secret env values: masked in every output
    try:
        check_device_id(p["device_id"])
        manifest = load_manifest(p["content"], p["content_file"])
        hide_document_secrets(module, manifest)
        check_manifest(manifest)
    except (ValueError, ManifestError) as exc:
        raise ModuleFailure(f"Invalid input: {exc}") from None
    client = build_hub_client(p, module.warn)
    res = ensure_edge_modules(client, p["device_id"], manifest, check_mode=module.check_mode)
    hide_document_secrets(module, res.plan.changes)  # what the hub holds (the diff's before)
    for warning in res.warnings:
        module.warn(warning)
    result = {"changed": res.changed, "changes": sorted(res.plan.changes), "modules": modules_list(manifest),
              "notes": res.notes}
    if module._diff:
        result["diff"] = changes_diff(res.plan.changes, f"modules of {p['device_id']}", planned="manifest")
    return result


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            IOTHUB_ARGS,
            device_id=dict(type="str", required=True),
            content=dict(type="dict"),
            content_file=dict(type="path"),
        ),
        supports_check_mode=True,
        required_one_of=[("content", "content_file")],
        mutually_exclusive=[("content", "content_file")],
    )
    run_module(module, run)


if __name__ == "__main__":
    main()
