#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: fleet.azure_iot contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: iothub_registry_export
short_description: Export a whole IoT Hub registry to Azure Blob Storage (backup, migration)
version_added: 1.1.0
description:
  - Runs an IoT Hub export job into a blob container and waits for it. The blob holds one device per line
    (with its twin; module identities on lines of their own), the format an import job reads, so a fleet can be
    restored or moved to another hub with M(fleet.azure_iot.iothub_device_bulk) (its job_mode V(always)) or an
    import job.
  - Returns the blob name and how many devices, modules and configurations it holds (counted by streaming the
    blob, never holding it whole).
  - Only one import or export job runs per hub; a job already running is waited for (up to
    O(retry_budget_seconds)), never cancelled.
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
    details: Says what it would export; starts no job.
  diff_mode:
    support: N/A
    details: An export changes nothing in the hub; there is nothing to show as a diff.
  idempotent:
    support: none
    details: Every run starts a new export job (C(changed=true)); check mode starts none.
options:
  storage_container_uri:
    description:
      - A SAS URL of the blob container (read, write, list and delete rights, C(sp=rwdl)).
    type: str
    required: true
  blob_name:
    description:
      - The name of the blob to write.
    type: str
    default: devices.txt
  include_keys:
    description:
      - Export the devices' and modules' symmetric keys (needed to restore them with the same keys). Off, keys are
        exported as null and the blob starts with a note. Keep a blob with keys as secret as the keys.
    type: bool
    default: false
  include_configurations:
    description:
      - Also export the hub's configurations (to C(configurations.txt)).
    type: bool
    default: false
  job_timeout_seconds:
    description:
      - How long to wait for the job to end.
    type: float
    default: 3600
notes:
  - 'Rights: C(RegistryRead) and C(RegistryWrite) for jobs (C(iothubowner) or C(registryReadWrite); Entra data
    actions C(jobs/read), C(jobs/write)); ServiceConnect is not needed. The hub needs the SAS token to reach the
    container.'
seealso:
  - module: fleet.azure_iot.iothub_device_bulk
"""

EXAMPLES = r"""
- name: Nightly backup of the registry, keys included
  fleet.azure_iot.iothub_registry_export:
    storage_container_uri: "{{ vault_backup_container_sas_url }}"
    blob_name: "registry-{{ now(utc=true, fmt='%Y%m%d') }}.txt"
    include_keys: true
  register: backup
"""

RETURN = r"""
blob_name:
  description: The blob the export wrote.
  returned: always
  type: str
devices:
  description: How many devices the blob holds (V(null) in check mode).
  returned: always
  type: int
modules:
  description: How many module identities the blob holds.
  returned: always
  type: int
configurations:
  description: How many configurations C(configurations.txt) holds, with O(include_configurations=true).
  returned: always
  type: int
keys_included:
  description: Whether the blob holds keys.
  returned: always
  type: bool
job:
  description: The job (C(id), C(type), C(status), C(seconds), C(devices)); V(null) in check mode.
  returned: always
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.fleet.azure_iot.plugins.module_utils._jobs import (
    Container,
    JobRunner,
    check_container_uri,
    json_lines,
)
from ansible_collections.fleet.azure_iot.plugins.module_utils._iothub import build_hub_client
from ansible_collections.fleet.azure_iot.plugins.module_utils._module import IOTHUB_ARGS, run_module


def run(module: AnsibleModule) -> dict:
    p = module.params
    check_container_uri(p["storage_container_uri"])
    result = {"changed": True, "blob_name": p["blob_name"], "devices": None, "modules": None, "configurations": None,
              "keys_included": p["include_keys"], "job": None}
    if module.check_mode:
        return result
    client = build_hub_client(p, module.warn)
    runner = JobRunner(client, p["retry_budget_seconds"], p["job_timeout_seconds"])
    body = {"type": "export", "outputBlobContainerUri": p["storage_container_uri"], "outputBlobName": p["blob_name"],
            "excludeKeysInExport": not p["include_keys"]}
    if p["include_configurations"]:
        body.update(includeConfigurations=True, configurationsBlobName="configurations.txt")
    runner.run(body, devices=0)
    container = Container(p["storage_container_uri"])
    devices = modules = 0
    for line in json_lines(container.lines(p["blob_name"])):
        if line.get("moduleId"):
            modules += 1
        else:
            devices += 1
    configurations = None
    if p["include_configurations"]:
        configurations = sum(1 for line in json_lines(container.lines("configurations.txt")) if line)
    job = dict(runner.records[-1], devices=devices)
    result.update(devices=devices, modules=modules, configurations=configurations, job=job)
    return result


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            IOTHUB_ARGS,
            storage_container_uri=dict(type="str", required=True, no_log=True),
            blob_name=dict(type="str", default="devices.txt"),
            include_keys=dict(type="bool", default=False),
            include_configurations=dict(type="bool", default=False),
            job_timeout_seconds=dict(type="float", default=3600),
        ),
        supports_check_mode=True,
    )
    run_module(module, run)


if __name__ == "__main__":
    main()
