# -*- coding: utf-8 -*-
# Copyright: fleet.azure_iot contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The fleet.azure_iot.shard filter (documentation: shard.yml)."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

from ansible_collections.fleet.azure_iot.plugins.module_utils._shard import HUB_KEY, hub_entry


def shard(fleet, hub, key=HUB_KEY):
    """The entries of FLEET whose KEY equals HUB, without that key."""
    if not isinstance(fleet, list):
        raise AnsibleFilterError("shard: the input must be a list of device entries (dictionaries with a hub key)")
    if not isinstance(hub, str) or not hub:
        raise AnsibleFilterError("shard: give the hub's name, for example shard(iothub_hub_name)")
    unnamed = [i for i, e in enumerate(fleet) if not isinstance(e, dict) or not e.get(key)]
    if unnamed:
        raise AnsibleFilterError(f"shard: entries {unnamed[:10]} name no {key!r}; every entry of a sharded fleet "
                                 "says which hub it goes to")
    return [kept for kept in (hub_entry(e, hub, key) for e in fleet) if kept is not None]


class FilterModule:
    def filters(self):
        return {"shard": shard}
