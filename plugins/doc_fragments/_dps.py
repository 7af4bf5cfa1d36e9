# -*- coding: utf-8 -*-
# Copyright: fleet.azure_iot contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Connection options shared by the Device Provisioning Service modules (module_defaults group fleet.azure_iot.dps)."""

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  dps_connection_string:
    description:
      - A shared access policy connection string of the Device Provisioning Service instance,
        C(HostName=<dps>.azure-devices-provisioning.net;SharedAccessKeyName=provisioningserviceowner;SharedAccessKey=<key>).
      - If not set, the environment variable E(DPS_CONNECTION_STRING) is used.
    type: str
  dps_hostname:
    description:
      - The instance's service host name, for example C(mydps.azure-devices-provisioning.net), for O(auth_mode=entra).
      - If not set, the environment variable E(DPS_HOSTNAME) is used.
    type: str
  auth_mode:
    description:
      - V(sas) signs requests with O(dps_connection_string). V(entra) gets Entra ID tokens for
        C(https://azure-devices-provisioning.net/.default) from azure-identity's C(DefaultAzureCredential).
      - Default is V(sas) when a connection string is given, else V(entra) when a host name is given.
    type: str
    choices: [sas, entra]
  ca_path:
    description:
      - A PEM file of certificate authorities to trust instead of the system ones.
      - If not set, the environment variable E(DPS_CA_PATH) is used.
    type: path
  validate_certs:
    description:
      - Whether to verify the TLS certificate of the service.
    type: bool
    default: true
notes:
  - The modules use the Device Provisioning Service's service REST API, api-version 2021-10-01.
"""
