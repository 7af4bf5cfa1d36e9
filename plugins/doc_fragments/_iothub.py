# -*- coding: utf-8 -*-
# Copyright: fleet.azure_iot contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Connection options shared by the IoT Hub modules (module_defaults group fleet.azure_iot.iothub)."""

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  connection_string:
    description:
      - Connection string of an IoT Hub shared access policy, for example
        C(HostName=myhub.azure-devices.net;SharedAccessKeyName=registryReadWrite;SharedAccessKey=...).
      - The policy needs C(RegistryRead) for reads and C(RegistryWrite) for writes; twin changes also need C(ServiceConnect).
      - The host name may carry a port (C(HostName=127.0.0.1:8443;...)), which is how the local emulator is reached.
      - If not set, the environment variable E(IOTHUB_CONNECTION_STRING) is used.
    type: str
  hostname:
    description:
      - Host name of the hub, with an optional port, for example C(myhub.azure-devices.net). Used with O(auth_mode=entra).
      - If not set, the environment variable E(IOTHUB_HOSTNAME) is used.
    type: str
  auth_mode:
    description:
      - V(sas) signs SAS tokens from O(connection_string).
      - V(entra) gets Entra ID tokens for scope C(https://iothubs.azure.net/.default) from azure-identity's
        C(DefaultAzureCredential) (environment variables such as E(AZURE_CLIENT_ID), E(AZURE_TENANT_ID) and
        E(AZURE_CLIENT_SECRET), managed identity, or the Azure CLI login). The identity needs a role such as
        C(IoT Hub Registry Contributor).
      - Default is V(sas) when a connection string is given, else V(entra) when a host name is given.
    type: str
    choices: [sas, entra]
  ca_path:
    description:
      - A PEM file of certificate authorities to trust instead of the system ones, for example the emulator's C(ca.pem).
      - If not set, the environment variable E(IOTHUB_CA_PATH) is used.
    type: path
  validate_certs:
    description:
      - Whether to verify the TLS certificate of the service. Leave it on outside throw-away tests.
    type: bool
    default: true
notes:
  - The modules talk to the IoT Hub data-plane REST API (api-version 2021-04-12) over HTTPS; they do not
    use the C(azure-iot-hub) SDK or C(uamqp).
  - Run them where the Python requirements are installed, usually on C(localhost) (or with C(delegate_to) set to C(localhost)).
"""
