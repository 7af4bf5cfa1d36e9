# -*- coding: utf-8 -*-
# Copyright: fleet.azure_iot contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Connection options shared by the IoT Central modules (module_defaults group fleet.azure_iot.iotcentral)."""

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  app_subdomain:
    description:
      - The application's subdomain; the app is reached at C(https://<app_subdomain>.<base_domain>).
      - Takes precedence over O(app_url).
    type: str
  base_domain:
    description:
      - The IoT Central domain, for other clouds.
    type: str
    default: azureiotcentral.com
  app_url:
    description:
      - The application's full URL, for example C(https://myapp.azureiotcentral.com) or the emulator's
        C(https://127.0.0.1:PORT).
      - If not set, the environment variable E(IOTCENTRAL_APP_URL) is used.
    type: str
  api_token:
    description:
      - An IoT Central API token, C(SharedAccessSignature sr=...&sig=...&skn=...&se=...), created in the app under
        Permissions > API tokens with a role that can manage devices.
      - If not set, the environment variable E(IOTCENTRAL_API_TOKEN) is used.
    type: str
  auth_mode:
    description:
      - V(token) sends O(api_token). V(entra) gets Entra ID tokens for C(https://apps.azureiotcentral.com/.default)
        from azure-identity's C(DefaultAzureCredential).
      - Default is V(token) when an API token is given, else V(entra).
    type: str
    choices: [token, entra]
  ca_path:
    description:
      - A PEM file of certificate authorities to trust instead of the system ones.
      - If not set, the environment variable E(IOTCENTRAL_CA_PATH) is used.
    type: path
  validate_certs:
    description:
      - Whether to verify the TLS certificate of the service.
    type: bool
    default: true
notes:
  - The modules use the IoT Central REST API, api-version 2022-07-31.
"""
