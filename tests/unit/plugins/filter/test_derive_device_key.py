"""derive_device_key: the test vectors of iot-api-2.md §4.7 (the DPS docs' examples, recomputed)."""

from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.fleet.azure_iot.plugins.filter.derive_device_key import derive_device_key

VECTORS = [
    ("8isrFI1sGsIlvvFSSFRiMfCNzv21fjbE/+ah/lSh3lF8e2YG1Te7w1KpZhJFFXJrqYKi9yegxkqIChbqOS9Egw==",
     "sn-007-888-abc-mac-a1-b2-c3-d4-e5-f6", "Jsm0lyGpjaVYVP2g3FnmnmG9dI/9qU24wNoykUmermc="),
    ("rLuyBPpIJ+hOre2SFIP9Ajvdty3j0EwSP/WvTVH9eZAw5HpDuEmf13nziHy5RRXmuTy84FCLpOnhhBPASSbHYg==",
     "contoso-simdevice-east", "p3w2DQr9WqEGBLUSlFi1jPQ7UWQL4siAGy75HFTFbf8="),
]


@pytest.mark.parametrize("group_key,registration_id,expected", VECTORS)
def test_documented_vectors(group_key, registration_id, expected):
    assert derive_device_key(group_key, registration_id) == expected


def test_bad_input_names_what_is_wrong():
    with pytest.raises(AnsibleFilterError, match="group key"):
        derive_device_key("not base64!", "dev-1")
    with pytest.raises(AnsibleFilterError, match="registration_id"):
        derive_device_key(VECTORS[0][0], "-bad-")
    with pytest.raises(AnsibleFilterError, match="enrollment group's primary"):
        derive_device_key("", "dev-1")
