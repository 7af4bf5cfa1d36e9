"""The IoT Hub identity registry, put together from the areas that own its state: devices and edge scopes
(``devices.DeviceStore``), device twins (``twins.TwinStore``), module identities and their twins
(``modules.ModuleStore``), the bulk operation (``bulk.BulkStore``) and the eventually consistent query index
(``query.QueryStore``).

Pure domain logic, no HTTP.  Every rule cites iot-api.md (``§n``); rules marked CHOICE are emulator
decisions where the service's behaviour is unconfirmed, and always take the strict side.  docs/emulator.md
lists them.
"""

from __future__ import annotations

import random

from .bulk import BulkStore
from .devices import DeviceStore
from .modules import ModuleStore
from .query import QueryStore
from .twins import TwinStore

AREAS = (DeviceStore, TwinStore, ModuleStore, BulkStore, QueryStore)


class Registry(DeviceStore, TwinStore, ModuleStore, BulkStore, QueryStore):
    def __init__(self, query_lag_s: float = 0.0, rng: random.Random | None = None):
        self.rng = rng or random.Random()
        for area in AREAS:
            area.init_state(self, query_lag_s)

    # Each area names what it owns (PERSISTED: kept in a state file; CLEARED: emptied by a reset); one protocol for
    # every area, here.
    def reset(self) -> None:
        for area in AREAS:
            for name in area.CLEARED:
                getattr(self, name).clear()

    def dump(self) -> dict:
        return {name: getattr(self, name) for area in AREAS for name in area.PERSISTED}

    def load(self, data: dict) -> None:
        self.reset()
        for area in AREAS:
            for name in area.PERSISTED:
                getattr(self, name).update(data.get(name, {}))
        for area in AREAS:
            hook = area.__dict__.get("after_load")
            if hook is not None:
                hook(self)
