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
  timeout:
    description:
      - Seconds to wait for each HTTP request.
    type: float
    default: 30
  max_retries:
    description:
      - How many times a throttled (429) or failed (5xx, connection error) request is retried at most.
    type: int
    default: 8
  retry_budget_seconds:
    description:
      - The most seconds one request may spend waiting between retries, in total.
    type: float
    default: 300
  retry_backoff_seconds:
    description:
      - The first wait before a retry; each later wait doubles (at most 60 seconds), with random jitter.
      - By default it follows the service's C(Retry-After), else 10 seconds for 429 and 2 seconds otherwise.
    type: float
requirements:
  - python >= 3.11
  - httpx >= 0.27
  - pydantic >= 2.5
  - azure-identity >= 1.15 (only for O(auth_mode=entra))
notes:
  - The modules use the IoT Central REST API, api-version 2022-07-31.
"""
