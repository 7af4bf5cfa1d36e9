#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: fleet.azure_iot contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: edge_host_config
short_description: Write an IoT Edge host's config.toml from typed options
version_added: 1.3.0
description:
  - Runs on an IoT Edge gateway host (or, for an offline bundle, on the controller). Builds C(/etc/aziot/config.toml)
    from typed options, validates it with the schema of aziotctl's and iotedge's C(super_config.rs) (what
    C(iotedge config apply) accepts), and writes it only when its text differs.
  - Unknown keys and keys of the pre-1.2 configuration are refused with an error naming them; IoT Edge itself would
    silently ignore them.
  - Does not run C(iotedge config apply); M(fleet.azure_iot.edge_host_apply) does, when this module reports a
    change. RV(edge_stop_required) says whether the change needs IoT Edge stopped and its containers removed first.
  - Secrets (the connection string, a symmetric key, a registry password) never appear in the result or the diff.
author:
  - fleet.azure_iot developers (@fleet-azure-iot)
extends_documentation_fragment:
  - fleet.azure_iot._attributes
options:
  path:
    description: Where the file is written; its directory is created when missing.
    type: path
    default: /etc/aziot/config.toml
  mode:
    description: The file's mode; it holds secrets.
    type: str
    default: '0600'
  owner:
    description: The file's owner; default the connection user (root on a gateway).
    type: str
  group:
    description: The file's group.
    type: str
  provisioning:
    description:
      - How the device gets its identity. V(manual) with a device connection string, V(manual_x509) with an
        identity certificate, V(dps_symmetric_key), V(dps_x509) or V(dps_tpm) through the Device Provisioning Service.
    type: str
    required: true
    choices: [manual, manual_x509, dps_symmetric_key, dps_x509, dps_tpm]
  connection_string:
    description: The device connection string (V(manual)).
    type: str
  iothub_hostname:
    description: The hub's host name (V(manual_x509)).
    type: str
  device_id:
    description: The device id (V(manual_x509)).
    type: str
  identity_cert:
    description: Path on the host of the device identity certificate (V(manual_x509), V(dps_x509)).
    type: path
  identity_pk:
    description: Path on the host of the device identity private key (V(manual_x509), V(dps_x509)).
    type: path
  dps_global_endpoint:
    description: The DPS global endpoint.
    type: str
  dps_id_scope:
    description: The DPS ID scope (the V(dps_*) variants).
    type: str
  dps_registration_id:
    description: The registration id (V(dps_symmetric_key), V(dps_tpm); optional for V(dps_x509)).
    type: str
  dps_symmetric_key:
    description:
      - The device's symmetric key (V(dps_symmetric_key)), for a group enrollment the key derived from the group
        key with the P(fleet.azure_iot.derive_device_key#filter) filter.
    type: str
  hostname:
    description: The name child devices and lower layers reach this gateway by.
    type: str
  parent_hostname:
    description:
      - The parent gateway's host name (nested edge). The default agent image then pulls through the parent
        (C($upstream:443/azureiotedge-agent:1.5)).
    type: str
  agent_image:
    description: The edgeAgent image; default C(mcr.microsoft.com/azureiotedge-agent:1.5), or through the parent.
    type: str
  agent_auth:
    description: Registry credentials for the agent image (C(serveraddress), C(username), C(password)).
    type: dict
  agent_env:
    description: Environment of the edgeAgent (C([agent.env])).
    type: dict
  trust_bundle_cert:
    description: Path on the host of the trust bundle (the root that signed the parent's and this edge CA).
    type: path
  edge_ca_cert:
    description: Path on the host of the edge CA's full chain (edge CA, intermediates, root).
    type: path
  edge_ca_pk:
    description: Path on the host of the edge CA's private key.
    type: path
  auto_reprovisioning_mode:
    description: When IoT Edge re-provisions.
    type: str
    choices: [Dynamic, AlwaysOnStartup, OnErrorOnly]
  settings:
    description:
      - Further config.toml keys, merged into the generated tables (for example C(moby_runtime), C(listen),
        C(agent) keys). Validated like the rest; unknown keys are refused.
    type: dict
  header:
    description: A comment written at the top of the file.
    type: str
    default: '# Managed by Ansible (fleet.azure_iot.edge_host_config): changes made here are overwritten.'
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
    details: Shows the file before and after, with secrets masked.
  idempotent:
    support: full
notes:
  - 'Rights: root on the gateway host (the file belongs to root and holds secrets); any user for an offline bundle.'
  - On a Python without C(tomllib) (before 3.11) the previous file cannot be parsed, and any change sets
    RV(edge_stop_required).
seealso:
  - module: fleet.azure_iot.edge_host_apply
  - module: fleet.azure_iot.edge_host_check
"""

EXAMPLES = r"""
- name: Gateway identity from the hub, nested under its parent
  fleet.azure_iot.edge_host_config:
    path: "{{ bundle_dir }}/config.toml"
    provisioning: manual
    connection_string: "HostName=plant1.azure-devices.net;DeviceId=gw-2;SharedAccessKey=c2VjcmV0LWtleS1mb3ItZXhhbXBsZQ=="
    hostname: gw-2.plant1.example
    parent_hostname: gw-1.plant1.example
    trust_bundle_cert: /var/aziot/certs/root.pem
    edge_ca_cert: /var/aziot/certs/gw-2.full-chain.pem
    edge_ca_pk: /var/aziot/secrets/gw-2.key.pem
  register: gw_config
"""

RETURN = r"""
path:
  description: The file written.
  returned: always
  type: str
config:
  description: The configuration document, secrets masked.
  returned: always
  type: dict
edge_stop_required:
  description:
    - Whether the change touches the host name, the parent host name or the agent, so that IoT Edge must be stopped
      and its containers removed before C(iotedge config apply) (which otherwise refuses, or keeps the old agent).
  returned: always
  type: bool
changed_keys:
  description: The top-level keys that differ from the file on the host (all of them when it did not exist).
  returned: always
  type: list
  elements: str
"""

import os
import tempfile

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.fleet.azure_iot.plugins.module_utils._edge_config import (
    PROVISIONING,
    build_config,
    config_secrets,
    edge_stop_reasons,
    mask_text,
    render_toml,
)
from ansible_collections.fleet.azure_iot.plugins.module_utils._module import run_module
from ansible_collections.fleet.azure_iot.plugins.module_utils._secrets import REDACTED, secret_mask

try:
    import tomllib
except ImportError:  # Python < 3.11 on the host
    tomllib = None

OPTIONS = ("provisioning", "connection_string", "iothub_hostname", "device_id", "identity_cert", "identity_pk",
           "dps_global_endpoint", "dps_id_scope", "dps_registration_id", "dps_symmetric_key", "hostname",
           "parent_hostname", "agent_image", "agent_auth", "agent_env", "trust_bundle_cert", "edge_ca_cert",
           "edge_ca_pk", "auto_reprovisioning_mode", "settings")


def _read(path):
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return None, None
    text = data.decode("utf-8", errors="replace")
    doc = None
    if tomllib is not None:
        try:
            doc = tomllib.loads(text)
        except tomllib.TOMLDecodeError:
            doc = None
    return text, doc


def _masked_doc(doc, secrets):
    if isinstance(doc, dict):
        return {k: _masked_doc(v, secrets) for k, v in doc.items()}
    if isinstance(doc, list):
        return [_masked_doc(v, secrets) for v in doc]
    if isinstance(doc, str) and doc in secrets:
        return REDACTED
    return mask_text(doc, secrets) if isinstance(doc, str) else doc


def run(module: AnsibleModule) -> dict:
    p = module.params
    doc = build_config({k: p.get(k) for k in OPTIONS})
    secrets = set(config_secrets(doc))
    path = p["path"]
    old_text, old_doc = _read(path)
    secrets |= set(config_secrets(old_doc or {}))
    mask = secret_mask(module)
    for value in secrets:
        mask.add(value)
    text = render_toml(doc, header=p["header"])
    content_changed = old_text != text
    if old_text is None:
        changed_keys = sorted(doc)
    elif old_doc is None:
        changed_keys = sorted(doc) if content_changed else []
    else:
        changed_keys = sorted(k for k in set(doc) | set(old_doc) if doc.get(k) != old_doc.get(k))
    stop = bool(content_changed and old_text is not None and edge_stop_reasons(old_doc, doc))
    result = dict(changed=content_changed, path=path, config=_masked_doc(doc, secrets), edge_stop_required=stop,
                  changed_keys=changed_keys)
    if module._diff:
        before = "" if old_text is None else (mask_text(old_text, secrets) if old_doc is not None or not secrets
                                              else "(the previous file could not be parsed; not shown)\n")
        result["diff"] = dict(before=before, after=mask_text(text, secrets), before_header=path, after_header=path)
    if content_changed and not module.check_mode:
        directory = os.path.dirname(path) or "."
        if not os.path.isdir(directory):
            os.makedirs(directory, mode=0o755)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".config.toml.")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, int(p["mode"], 8))
        module.atomic_move(tmp, path)
    if os.path.exists(path) or not module.check_mode:
        file_args = module.load_file_common_arguments(dict(path=path, mode=p["mode"], owner=p["owner"],
                                                           group=p["group"]))
        result["changed"] = module.set_fs_attributes_if_different(file_args, result["changed"])
    return result


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type="path", default="/etc/aziot/config.toml"),
            mode=dict(type="str", default="0600"),
            owner=dict(type="str"),
            group=dict(type="str"),
            provisioning=dict(type="str", required=True, choices=list(PROVISIONING)),
            connection_string=dict(type="str", no_log=True),
            iothub_hostname=dict(type="str"),
            device_id=dict(type="str"),
            identity_cert=dict(type="path"),
            identity_pk=dict(type="path", no_log=False),
            dps_global_endpoint=dict(type="str"),
            dps_id_scope=dict(type="str"),
            dps_registration_id=dict(type="str"),
            dps_symmetric_key=dict(type="str", no_log=True),
            hostname=dict(type="str"),
            parent_hostname=dict(type="str"),
            agent_image=dict(type="str"),
            agent_auth=dict(type="dict", no_log=False),
            agent_env=dict(type="dict"),
            trust_bundle_cert=dict(type="path"),
            edge_ca_cert=dict(type="path"),
            edge_ca_pk=dict(type="path", no_log=False),
            auto_reprovisioning_mode=dict(type="str", choices=["Dynamic", "AlwaysOnStartup", "OnErrorOnly"]),
            settings=dict(type="dict"),
            header=dict(type="str",
                        default="# Managed by Ansible (fleet.azure_iot.edge_host_config): changes made here are "
                                "overwritten."),
        ),
        supports_check_mode=True,
    )
    run_module(module, run, service=False)


if __name__ == "__main__":
    main()
