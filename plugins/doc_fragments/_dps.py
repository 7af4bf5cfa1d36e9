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

    # The options dps_enrollment and dps_enrollment_group share (argument spec: _resource_dps_enrollment.ENROLLMENT_ARGS).
    ENROLLMENT = r"""
options:
  primary_key:
    description:
      - The primary symmetric key (base64, 16 to 64 bytes). Compared with the enrollment's (or group's) only when given.
    type: str
  secondary_key:
    description:
      - The secondary symmetric key (base64, 16 to 64 bytes). Compared with the enrollment's (or group's) only when given.
    type: str
  rotate_keys:
    description:
      - Rotate the symmetric keys, a deliberate action that is always C(changed). V(primary) or V(secondary) puts a
        new random key in that slot; V(swap) exchanges the two. Mutually exclusive with O(primary_key) and
        O(secondary_key).
    type: str
    choices: [primary, secondary, swap]
  provisioning_status:
    description:
      - V(disabled) refuses the registrations of the device (or of the group's devices). The service's default is V(enabled).
    type: str
    choices: [enabled, disabled]
  iot_hub_host_name:
    description:
      - The one IoT hub the device is assigned to (the older form of O(iot_hubs) with O(allocation_policy=static)).
    type: str
  iot_hubs:
    description:
      - The linked IoT hubs (host names) the allocation policy chooses from. Needs O(allocation_policy).
    type: list
    elements: str
  allocation_policy:
    description:
      - How a hub is chosen, V(hashed) (evenly), V(geoLatency) (the nearest), V(static) (the one hub in O(iot_hubs)) or
        V(custom) (an Azure Function, O(custom_allocation)). Not set, the instance's default applies.
    type: str
    choices: [hashed, geoLatency, static, custom]
  custom_allocation:
    description:
      - The webhook of O(allocation_policy=custom).
    type: dict
    suboptions:
      webhook_url:
        description:
          - The function's https URL. Its query (the function key) is never shown in output.
        type: str
        required: true
      api_version:
        description:
          - The api-version the webhook speaks, for example C(2019-03-31).
        type: str
        required: true
  reprovision_policy:
    description:
      - What happens when the device registers again after its enrollment moved it to another hub.
        V(reprovision_and_migrate_data) (the service's default) moves it with its twin,
        V(reprovision_and_reset_data) moves it with the initial twin, V(never) keeps it where it is.
    type: str
    choices: [reprovision_and_migrate_data, reprovision_and_reset_data, never]
  capabilities:
    description:
      - Device capabilities.
    type: dict
    suboptions:
      iot_edge:
        description:
          - Whether the device is an IoT Edge device.
        type: bool
        required: true
  etag:
    description:
      - The etag the enrollment (or group) is expected to have. If it has a different one, the task fails with a conflict.
    type: str
  return_secrets:
    description:
      - Return the symmetric keys in RV(enrollment). Off by default, keys are shown as C(********).
      - When on, also set C(no_log) on the task if its output is logged.
    type: bool
    default: false
"""
