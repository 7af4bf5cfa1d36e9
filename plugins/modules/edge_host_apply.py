#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: fleet.azure_iot contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: edge_host_apply
short_description: Apply an IoT Edge host's configuration, and its trust store
version_added: 1.3.0
description:
  - Runs on an IoT Edge gateway host, as the handler of the edge_host role. Each action runs only when asked.
  - O(update_trust_store) runs C(update-ca-certificates), after a root was placed in the OS trust store.
  - O(stop_edge) first runs C(iotedge system stop) and removes the containers IoT Edge created (label
    C(net.azure-devices.edge.owner=Microsoft.Azure.Devices.Edge.Agent)) - what C(iotedge config apply) asks for before
    it accepts a new host name, and what makes a new agent image or C([agent.env]) take effect (iotedge 6241, 6231).
  - O(apply) runs C(iotedge config apply -c) with the file given, never the default one (azure-docs 87117).
author:
  - fleet.azure_iot developers (@fleet-azure-iot)
extends_documentation_fragment:
  - fleet.azure_iot._attributes
options:
  config:
    description: The configuration file to apply.
    type: path
    default: /etc/aziot/config.toml
  apply:
    description: Run C(iotedge config apply -c) O(config).
    type: bool
    default: true
  stop_edge:
    description: Stop IoT Edge and remove its containers before applying.
    type: bool
    default: false
  update_trust_store:
    description: Run C(update-ca-certificates) first.
    type: bool
    default: false
attributes:
  check_mode:
    support: full
    details: In check mode nothing runs; the result lists the commands that would.
  diff_mode:
    support: none
  idempotent:
    support: none
    details: Every run applies; call it as a handler, when the configuration changed.
notes:
  - 'Rights: root on the gateway host (C(iotedge config apply) refuses to run otherwise).'
seealso:
  - module: fleet.azure_iot.edge_host_config
"""

EXAMPLES = r"""
- name: Apply the configuration (a handler)
  fleet.azure_iot.edge_host_apply:
    config: /etc/aziot/config.toml
    stop_edge: "{{ gw_config.edge_stop_required }}"
"""

RETURN = r"""
commands:
  description: The commands run (or, in check mode, that would run), in order.
  returned: always
  type: list
  elements: str
removed_containers:
  description: The ids of the IoT Edge containers removed.
  returned: always
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.fleet.azure_iot.plugins.module_utils._edge_config import file_secrets
from ansible_collections.fleet.azure_iot.plugins.module_utils._errors import ModuleFailure
from ansible_collections.fleet.azure_iot.plugins.module_utils._module import run_module
from ansible_collections.fleet.azure_iot.plugins.module_utils._secrets import secret_mask

EDGE_LABEL = "label=net.azure-devices.edge.owner=Microsoft.Azure.Devices.Edge.Agent"


def run(module: AnsibleModule) -> dict:
    p = module.params
    commands, removed = [], []
    mask = secret_mask(module)  # what iotedge prints about the file (a parse error can quote a key) is masked
    for value in file_secrets(p["config"]):
        mask.add(value)

    def call(args, what):
        commands.append(" ".join(args))
        if module.check_mode:
            return ""
        rc, out, err = module.run_command(args)
        if rc != 0:
            # changed: this command (or one before it) may have done part of its work.
            raise ModuleFailure(f"{what} failed (rc {rc}): {(err or out).strip()[-2000:]}", commands=commands,
                                removed_containers=removed, changed=True)
        return out

    if p["update_trust_store"]:
        call([module.get_bin_path("update-ca-certificates", required=True), "--fresh"], "update-ca-certificates")
    if p["stop_edge"]:
        iotedge = module.get_bin_path("iotedge", required=True)
        docker = module.get_bin_path("docker", required=True)
        call([iotedge, "system", "stop"], "iotedge system stop")
        out = call([docker, "ps", "-aq", "-f", EDGE_LABEL], "docker ps")
        removed = [line.strip() for line in out.splitlines() if line.strip()]
        if removed:
            call([docker, "rm", "-f"] + removed, "docker rm")
    if p["apply"]:
        call([module.get_bin_path("iotedge", required=True), "config", "apply", "-c", p["config"]],
             "iotedge config apply")
    return dict(changed=bool(commands), commands=commands, removed_containers=removed)


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            config=dict(type="path", default="/etc/aziot/config.toml"),
            apply=dict(type="bool", default=True),
            stop_edge=dict(type="bool", default=False),
            update_trust_store=dict(type="bool", default=False),
        ),
        supports_check_mode=True,
    )
    run_module(module, run, service=False)


if __name__ == "__main__":
    main()
