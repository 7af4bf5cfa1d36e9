"""The shard filter: the same rule as hub_key_filter (_shard.hub_entry), on a declared list."""

from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.fleet.azure_iot.plugins.filter.shard import shard

FLEET = [{"device_id": "a", "hub": "h1", "tags": {"x": 1}}, {"device_id": "b", "hub": "h2"},
         {"device_id": "c", "hub": "h1"}]


def test_shard_keeps_one_hubs_entries_without_the_hub_key():
    assert shard(FLEET, "h1") == [{"device_id": "a", "tags": {"x": 1}}, {"device_id": "c"}]
    assert shard(FLEET, "h3") == []
    assert FLEET[0]["hub"] == "h1"


def test_shard_refuses_entries_that_name_no_hub_and_bad_arguments():
    with pytest.raises(AnsibleFilterError, match=r"entries \[1\] name no 'hub'"):
        shard([{"device_id": "a", "hub": "h1"}, {"device_id": "b"}], "h1")
    with pytest.raises(AnsibleFilterError, match="the hub's name"):
        shard(FLEET, "")
    with pytest.raises(AnsibleFilterError, match="a list"):
        shard({"device_id": "a"}, "h1")
