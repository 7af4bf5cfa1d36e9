"""The bulk registry operation ``POST /devices`` (iot-api.md §4): up to 100 conditional entries of devices, module
identities and twins, applied one by one, with per-entry errors."""

from __future__ import annotations

import time
from typing import Any

from . import twins as _twins
from .common import etag_matches, twin_etag_of
from .errors import ApiError, bad_request, not_found
from .modules import bulk_module_entry

MAX_BULK = 100  # §4

IMPORT_MODES = (
    "create", "update", "updateIfMatchETag", "delete", "deleteIfMatchETag", "updateTwin", "updateTwinIfMatchETag",
)


class BulkStore:
    """The bulk operation over the other areas' state; it owns only its knob."""

    PERSISTED = ()  # what it owns that a state file keeps
    CLEARED = ()  # what a reset empties

    def init_state(self, query_lag_s: float) -> None:
        self.bulk_twin_mode = "replace"  # --bulk-twin-mode: how bulk updateTwin applies tags / desired (§9.1)

    def bulk(self, entries: Any) -> tuple[int, dict, int]:
        """POST /devices (§4).  Returns (http status, BulkRegistryOperationResult, devices written)."""
        if not isinstance(entries, list):
            raise bad_request("The bulk request body must be a JSON array of ExportImportDevice", code="IotHubFormatError")
        if not entries:
            raise bad_request("The bulk request contains no devices", code="ArgumentNull")
        if len(entries) > MAX_BULK:
            # TooManyDevices = 413002: first three digits are the HTTP status (§2.3; status unconfirmed §11.7)
            raise ApiError(413, "TooManyDevices",
                           f"Too many devices were included in the bulk operation: {len(entries)}, the maximum is {MAX_BULK}")
        seen: set = set()
        repeated: list[str] = []
        for e in entries:
            did = e.get("id") if isinstance(e, dict) else None
            if not isinstance(did, str) or not did:
                raise bad_request("Every bulk entry needs an id", code="ArgumentNull")
            key = (did, e.get("moduleId") or None)  # module entries name their device in id (recorded)
            if key in seen and did not in repeated:
                repeated.append(did)
            seen.add(key)
        if repeated:
            # The swagger types a bulk 400 as BulkRegistryOperationResult and lists DeviceDefinedMultipleTimes
            # among its per-device codes.  CHOICE: the whole request is refused and nothing is applied.
            errors = [{"deviceId": did, "errorCode": "DeviceDefinedMultipleTimes",
                       "errorStatus": f"Device {did!r} was defined multiple times in the request",
                       "moduleId": None, "operation": None} for did in repeated]
            return 400, {"isSuccessful": False, "errors": errors, "warnings": []}, 0
        errors, written = [], 0
        for e in entries:
            try:
                self._bulk_one(e)
                written += 1
            except ApiError as err:
                errors.append({"deviceId": e["id"], "errorCode": err.code, "errorStatus": err.message,
                               "moduleId": e.get("moduleId"), "operation": e.get("importMode")})
        result = {"isSuccessful": not errors, "errors": errors, "warnings": []}
        return (200 if not errors else 400), result, written

    def _bulk_one(self, e: dict) -> None:
        did = e["id"]
        mode = e.get("importMode")
        if mode not in IMPORT_MODES:
            # §4: the 2021-04-12 swagger's seven modes; createOrUpdate is documented for import jobs only.
            raise bad_request(f"importMode {mode!r} is not supported: use one of {', '.join(IMPORT_MODES)}")
        self.check_id(did)
        if e.get("moduleId"):
            bulk_module_entry(self, e)
            return
        self._refused(did)
        existing = self.devices.get(did)
        now = time.time()
        props = e.get("properties") or {}
        if not isinstance(props, dict):
            raise bad_request("properties must be an object")
        if mode in ("delete", "deleteIfMatchETag"):
            if existing is None:
                raise not_found(did)
            # Recorded (§1.5, §9.14): deleteIfMatchETag without an eTag deleted the device.
            if mode == "deleteIfMatchETag" and e.get("eTag") not in (None, "") \
                    and not etag_matches(e["eTag"], existing["etag"]):
                raise ApiError(412, "PreconditionFailed", f"ETag mismatch for device {did}")
            self._remove(did)
            return
        twin_mode = "patch" if self.bulk_twin_mode == "merge" else "replace"
        tags = e.get("tags")
        desired = _twins.desired_of(props)
        if mode in ("updateTwin", "updateTwinIfMatchETag"):
            if existing is None:
                raise not_found(did)
            if mode == "updateTwinIfMatchETag" and not etag_matches(e.get("twinETag") or "",
                                                                      twin_etag_of(self.twins[did]["etag"])):
                raise ApiError(412, "PreconditionFailed", f"Twin ETag mismatch for device {did}")
            # Whether updateTwin merges or replaces is not documented (§3.5, §9.1): --bulk-twin-mode plays either.
            self._apply_twin(did, tags, desired, twin_mode)
            return
        if mode == "create" and existing is not None:
            raise ApiError(409, "DeviceAlreadyExists", f"A device with ID '{did}' is already registered.")
        if mode in ("update", "updateIfMatchETag") and existing is None:
            raise not_found(did)
        if mode == "updateIfMatchETag" and not etag_matches(e.get("eTag") or "", existing["etag"]):
            raise ApiError(412, "PreconditionFailed", f"ETag mismatch for device {did}")
        body = {k: v for k, v in e.items() if k not in ("id", "eTag", "importMode", "twinETag", "tags", "properties")}
        body["deviceId"] = did
        current = self.twins.get(did) or {"tags": {}, "desired": {}}
        _twins.new_sections(current["tags"], current["desired"], tags, desired, twin_mode)  # validate before writing
        record = self._build_identity(did, body, existing, now)
        self._store(record, existing, now)
        # Twin data in an identity entry: documented for the create modes only; CHOICE: applied like updateTwin.
        if tags is not None or desired is not None:
            self._apply_twin(did, tags, desired, twin_mode)
