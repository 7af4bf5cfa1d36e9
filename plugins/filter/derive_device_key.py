# -*- coding: utf-8 -*-
# Copyright: fleet.azure_iot contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The fleet.azure_iot.derive_device_key filter (documentation: derive_device_key.yml)."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

from ansible_collections.fleet.azure_iot.plugins.module_utils._auth import derive_device_key as _derive
from ansible_collections.fleet.azure_iot.plugins.module_utils._dps_enrollment import check_registration_id
from ansible_collections.fleet.azure_iot.plugins.module_utils._errors import AuthError


def derive_device_key(group_key, registration_id):
    """The key a device of a symmetric-key enrollment group provisions with."""
    if not isinstance(group_key, str) or not group_key.strip():
        raise AnsibleFilterError("derive_device_key: give the enrollment group's primary or secondary key (base64)")
    try:
        check_registration_id(registration_id if isinstance(registration_id, str) else repr(registration_id))
        return _derive(group_key.strip(), registration_id)
    except (AuthError, ValueError) as exc:
        raise AnsibleFilterError(f"derive_device_key: {str(exc).replace('group_key: ', 'the group key: ')}") from None


class FilterModule:
    def filters(self):
        return {"derive_device_key": derive_device_key}
