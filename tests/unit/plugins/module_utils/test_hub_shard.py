"""A fleet sharded by hub, on file lines (hub_key_filter): the rule of _shard.hub_entry."""

from __future__ import annotations

import pytest

from ansible_collections.fleet.azure_iot.plugins.module_utils._bulk.devices_file import for_hub
from ansible_collections.fleet.azure_iot.plugins.module_utils._errors import InputError
from ansible_collections.fleet.azure_iot.plugins.module_utils._shard import hub_entry

FLEET = [{"device_id": "a", "hub": "h1", "tags": {"x": 1}}, {"device_id": "b", "hub": "h2"},
         {"device_id": "c", "hub": "h1"}]


def test_hub_entry_keeps_one_hubs_entries_without_the_hub_key():
    assert [hub_entry(e, "h1") for e in FLEET] == [{"device_id": "a", "tags": {"x": 1}}, None, {"device_id": "c"}]
    assert FLEET[0]["hub"] == "h1"  # the input is not changed


def test_for_hub_is_the_same_rule_on_file_lines():
    pairs = [(f"f.jsonl:{i + 1}", dict(e)) for i, e in enumerate(FLEET)]
    assert [e for _w, e in for_hub(iter(pairs), "h1")] == [e for e in (hub_entry(x, "h1") for x in FLEET) if e]
    with pytest.raises(InputError, match=r"f.jsonl:1: hub: .* set hub_key_filter"):
        list(for_hub(iter(pairs), None))
    with pytest.raises(InputError, match=r"f.jsonl:2: the line names no hub"):
        list(for_hub(iter([("f.jsonl:1", {"device_id": "a", "hub": "h1"}), ("f.jsonl:2", {"device_id": "b"})]), "h1"))
    assert list(for_hub(iter([("f.jsonl:1", {"device_id": "a"})]), None)) == [("f.jsonl:1", {"device_id": "a"})]
