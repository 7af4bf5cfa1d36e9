# -*- coding: utf-8 -*-
# Copyright: fleet.azure_iot contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""PRIVATE to fleet.azure_iot: a fleet sharded by hub.  One rule for the ``shard`` filter (a declared list) and
iothub_device_bulk's ``hub_key_filter`` (a devices_file): an entry belongs to the hub its ``hub`` key names, and
reaches the module without that key (it is not a device option)."""

from __future__ import annotations

from typing import Any, Dict, Optional

HUB_KEY = "hub"


def hub_entry(entry: Any, hub: str, key: str = HUB_KEY) -> Optional[Dict[str, Any]]:
    """ENTRY without KEY when it belongs to HUB; None when it belongs to another hub.  An entry that names no hub
    belongs to none (a fleet that is sharded says where every device goes)."""
    if not isinstance(entry, dict) or entry.get(key) != hub:
        return None
    return {k: v for k, v in entry.items() if k != key}
