#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: fleet.azure_iot contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: edge_host_check
short_description: Run iotedge check on a gateway host and report failed checks by name
version_added: 1.3.0
description:
  - Runs C(iotedge check --output json) on an IoT Edge host and parses its result (one entry per check id, with
    C(result) ok, warning, ignored, skipped, fatal or error and its C(details)).
  - Fails naming every check whose result is error or fatal, unless O(fail_on_error=false); warnings are returned.
author:
  - fleet.azure_iot developers (@fleet-azure-iot)
extends_documentation_fragment:
  - fleet.azure_iot._attributes
  - fleet.azure_iot._attributes.INFO_MODULE
options:
  config:
    description: The configuration file the checks read (C(-c)).
    type: path
    default: /etc/aziot/config.toml
  skip:
    description: Check ids not to run (C(--dont-run)), for example checks that need the Internet.
    type: list
    elements: str
    default: []
  fail_on_error:
    description: Fail the task when a check reports error or fatal.
    type: bool
    default: true
notes:
  - 'Rights: root on the gateway host.'
seealso:
  - module: fleet.azure_iot.edge_host_apply
"""

EXAMPLES = r"""
- name: Check the gateway, without the checks that need the Internet
  fleet.azure_iot.edge_host_check:
    skip: [aziot-edged-version]
"""

RETURN = r"""
checks:
  description: Each check id with its C(result) and C(details).
  returned: always
  type: dict
failed_checks:
  description: The ids whose result is error or fatal, with their details.
  returned: always
  type: dict
warning_checks:
  description: The ids whose result is warning, with their details.
  returned: always
  type: dict
"""

import json

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.fleet.azure_iot.plugins.module_utils._edge_config import file_secrets
from ansible_collections.fleet.azure_iot.plugins.module_utils._errors import ModuleFailure
from ansible_collections.fleet.azure_iot.plugins.module_utils._module import run_module
from ansible_collections.fleet.azure_iot.plugins.module_utils._secrets import secret_mask


def parse_check_output(text: str) -> dict:
    """The ``checks`` of ``iotedge check --output json``: the last line that is a JSON object."""
    for line in reversed([x for x in text.splitlines() if x.strip().startswith("{")]):
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        if isinstance(doc, dict) and isinstance(doc.get("checks"), dict):
            return doc["checks"]
    raise ModuleFailure("iotedge check printed no JSON result (is the installed iotedge 1.2 or later?)",
                        output=text[-2000:])


def run(module: AnsibleModule) -> dict:
    p = module.params
    mask = secret_mask(module)  # check details can quote the configuration (a connection string check)
    for value in file_secrets(p["config"]):
        mask.add(value)
    args = [module.get_bin_path("iotedge", required=True), "check", "--output", "json", "-c", p["config"]]
    if p["skip"]:
        args += ["--dont-run"] + p["skip"]
    rc, out, err = module.run_command(args)
    checks = parse_check_output(out)
    failed = {k: v.get("details", []) for k, v in checks.items() if v.get("result") in ("error", "fatal")}
    warnings = {k: v.get("details", []) for k, v in checks.items() if v.get("result") == "warning"}
    result = dict(changed=False, checks=checks, failed_checks=failed, warning_checks=warnings)
    if failed and p["fail_on_error"]:
        names = ", ".join(f"{k} ({'; '.join(v) or 'no details'})" for k, v in sorted(failed.items()))
        raise ModuleFailure(f"iotedge check failed: {names}", **{k: v for k, v in result.items() if k != "changed"})
    if rc != 0 and not failed:
        module.warn(f"iotedge check exited {rc} without a failed check: {(err or '').strip()[-500:]}")
    return result


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            config=dict(type="path", default="/etc/aziot/config.toml"),
            skip=dict(type="list", elements="str", default=[]),
            fail_on_error=dict(type="bool", default=True),
        ),
        supports_check_mode=True,
    )
    run_module(module, run, service=False)


if __name__ == "__main__":
    main()
