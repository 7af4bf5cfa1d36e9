"""A fleet sharded by hub: one rule for the shard filter and hub_key_filter."""

from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.fleet.azure_iot.plugins.filter.shard import shard
from ansible_collections.fleet.azure_iot.plugins.module_utils._bulk.devices_file import for_hub
from ansible_collections.fleet.azure_iot.plugins.module_utils._errors import InputError

FLEET = [{"device_id": "a", "hub": "h1", "tags": {"x": 1}}, {"device_id": "b", "hub": "h2"},
         {"device_id": "c", "hub": "h1"}]


def test_shard_keeps_one_hubs_entries_without_the_hub_key():
    assert shard(FLEET, "h1") == [{"device_id": "a", "tags": {"x": 1}}, {"device_id": "c"}]
    assert shard(FLEET, "h3") == []
    assert FLEET[0]["hub"] == "h1"  # the input is not changed


def test_shard_refuses_entries_that_name_no_hub_and_bad_arguments():
    with pytest.raises(AnsibleFilterError, match=r"entries \[1\] name no 'hub'"):
        shard([{"device_id": "a", "hub": "h1"}, {"device_id": "b"}], "h1")
    with pytest.raises(AnsibleFilterError, match="the hub's name"):
        shard(FLEET, "")
    with pytest.raises(AnsibleFilterError, match="a list"):
        shard({"device_id": "a"}, "h1")


def test_for_hub_is_the_same_rule_on_file_lines():
    pairs = [(f"f.jsonl:{i + 1}", dict(e)) for i, e in enumerate(FLEET)]
    assert [e for _w, e in for_hub(iter(pairs), "h1")] == shard(FLEET, "h1")
    with pytest.raises(InputError, match=r"f.jsonl:1: hub: .* set hub_key_filter"):
        list(for_hub(iter(pairs), None))
    with pytest.raises(InputError, match=r"f.jsonl:2: the line names no hub"):
        list(for_hub(iter([("f.jsonl:1", {"device_id": "a", "hub": "h1"}), ("f.jsonl:2", {"device_id": "b"})]), "h1"))
    assert list(for_hub(iter([("f.jsonl:1", {"device_id": "a"})]), None)) == [("f.jsonl:1", {"device_id": "a"})]
