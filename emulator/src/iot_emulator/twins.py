"""Twins: the rules of tags and desired properties (PATCH merge, PUT replace, bulk updateTwin under either reading
of the docs), their limits, and the ``/twins`` routes.

Facts: iot-api-2.md §6 (merge/replace, If-Match, limits by doc version, permissions) and §3.5 / §9.1 (whether a
bulk or import ``updateTwin`` merges or replaces is not documented: ``--bulk-twin-mode`` plays either reading).
"""

from __future__ import annotations

import copy
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from .common import etag_matches, is_wildcard, now_iso, twin_etag_of
from .errors import ApiError, bad_request, not_found

# §6.4, the ~2019-2021 device-twins doc and the swagger: keys up to 1 KB without '.', '$', space and control
# characters; string values up to 4 KB; objects nested at most 10 deep below the section (a scalar may sit in
# the 10th); tags 8 KB and desired 32 KB, computed as keys + values (numbers 8, booleans 4, strings by length).
MAX_KEY_BYTES = 1024
MAX_STRING_BYTES = 4096
MAX_DEPTH = 10
SECTION_LIMITS = {"tags": 8 * 1024, "properties.desired": 32 * 1024}
READ_ONLY_DESIRED = ("$metadata", "$version")  # sent back by clients that PATCH the twin they read (recorded 200)
TWIN_MODES = ("replace", "merge")


def _bad_key(key: str) -> bool:
    return (not key or any(c in key for c in ".$ ") or any(ord(c) < 32 or 0x7F <= ord(c) <= 0x9F for c in key)
            or len(key.encode("utf-8")) > MAX_KEY_BYTES)


def check_section(name: str, value: Any, allow_null: bool) -> dict:
    """Validate a tags or properties.desired document (a patch when ``allow_null``); raise 400 like the service."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise bad_request(f"{name} must be a JSON object")

    def walk(node: Any, path: str, depth: int) -> None:
        if isinstance(node, dict):
            if depth > MAX_DEPTH:
                raise bad_request(f"{name}: {path} nests objects deeper than {MAX_DEPTH} levels")
            for key, sub in node.items():
                if _bad_key(key):
                    raise bad_request(f"{name}: key {key!r} is not allowed: keys are at most {MAX_KEY_BYTES} bytes "
                                      "and exclude '.', '$', space and control characters")
                walk(sub, f"{path}.{key}" if path else key, depth + 1)
        elif node is None:
            if not allow_null:
                raise bad_request(f"Value of Property or Tag cannot be null. Error in Property/Tag {path}")
        elif isinstance(node, str) and len(node.encode("utf-8")) > MAX_STRING_BYTES:
            raise bad_request(f"{name}: the string value of {path} is longer than {MAX_STRING_BYTES} bytes")
        elif isinstance(node, list):
            for item in node:
                if item is None:
                    raise bad_request(f"{name}: {path} holds null inside an array")
                walk(item, path, depth)
    walk(value, "", 0)
    return value


def section_size(value: Any) -> int:
    if isinstance(value, dict):
        return sum(len(k) + section_size(v) for k, v in value.items())
    if isinstance(value, list):
        return sum(section_size(v) for v in value)
    if isinstance(value, bool):
        return 4
    if isinstance(value, (int, float)):
        return 8
    if isinstance(value, str):
        return sum(1 for c in value if not (ord(c) < 32 or 0x7F <= ord(c) <= 0x9F))
    return 0


def check_size(name: str, value: dict) -> None:
    limit = SECTION_LIMITS[name]
    size = section_size(value)
    if size > limit:
        raise bad_request(f"{name} would be {size} bytes; the limit is {limit} bytes", code="TwinSizeLimitExceeded")


def merge_patch(target: dict, patch: dict) -> dict:
    """RFC 7386 JSON merge patch (twin PATCH: null removes a key, objects merge key by key, the rest replaces)."""
    out = dict(target)
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        elif isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge_patch(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def desired_of(body_props: Any) -> Any:
    """properties.desired of a request body, without the read-only $metadata / $version a client echoes."""
    if not isinstance(body_props, dict):
        return None
    desired = body_props.get("desired")
    if isinstance(desired, dict):
        desired = {k: v for k, v in desired.items() if k not in READ_ONLY_DESIRED}
    return desired


def new_sections(current_tags: dict, current_desired: dict, tags: Any, desired: Any, mode: str) -> tuple:
    """(tags, desired) after a write.  mode ``patch``: merge, null removes; ``replace``: the sections given
    replace the current ones (null refused); an absent section is left untouched in both."""
    patch = mode == "patch"
    new_tags, new_desired = current_tags, current_desired
    if tags is not None:
        check_section("tags", tags, allow_null=patch)
        new_tags = merge_patch(current_tags, tags) if patch else copy.deepcopy(tags)
        check_size("tags", new_tags)
    if desired is not None:
        check_section("properties.desired", desired, allow_null=patch)
        new_desired = merge_patch(current_desired, desired) if patch else copy.deepcopy(desired)
        check_size("properties.desired", new_desired)
    return new_tags, new_desired


def routes(emu) -> list:
    """GET/PATCH/PUT /twins/{id}: twin operations need ServiceConnect (§6.5); twin responses carry no ETag
    header, the etag is in the body (§6.3)."""
    reg = emu.registry

    @emu.hub_route("/twins/{device_id}", ["GET", "PATCH", "PUT"], "twin")
    async def twin(request: Request) -> Response:
        device_id = request.path_params["device_id"]
        if request.method == "GET":
            emu.guard(request, "ServiceConnect", kind=None)
            doc = reg.get_twin(device_id)
            emu.stats.twin_reads += 1
            emu.run_race(device_id, "twin")
            return emu.json(doc)
        emu.guard(request, "ServiceConnect", kind=None)
        body = await emu.read_json(request)
        doc = reg.update_twin(device_id, body, request.headers.get("if-match"),
                              mode="replace" if request.method == "PUT" else "patch")
        emu.stats.twin_writes += 1
        emu.persist()
        return emu.json(doc)

    return [twin]


def check_mode_name(mode: str) -> str:
    if mode not in TWIN_MODES:
        raise ApiError(400, "ArgumentInvalid", f"bulk twin mode {mode!r}: use one of {', '.join(TWIN_MODES)}")
    return mode


class TwinStore:
    """Device twins (iot-api.md §3, §6): the part of the registry this area owns."""

    PERSISTED = ("twins",)  # what it owns that a state file keeps
    CLEARED = ("twins", "twin_configurations")  # what a reset empties

    def init_state(self, query_lag_s: float) -> None:
        self.twins: dict[str, dict] = {}  # device id -> twin record (tags, desired, reported, versions, etag)
        self.twin_configurations: dict[str, dict] = {}  # device id -> configuration id -> "Applied" | "Targeted"

    def _twin_doc(self, device_id: str) -> dict:
        dev = self.devices[device_id]
        tw = self.twins[device_id]

        def props(kind: str) -> dict:
            out = copy.deepcopy(tw[kind])
            out["$metadata"] = {"$lastUpdated": tw["updated"]}
            out["$version"] = tw[f"{kind}_version"]
            return out

        doc = {
            "deviceId": device_id,
            "etag": twin_etag_of(tw["etag"]),
            "deviceEtag": dev["etag"],
            "status": dev["status"],
            "statusUpdateTime": dev["statusUpdatedTime"],  # §3.2: the twin says statusUpdateTime
            "connectionState": dev["connectionState"],
            "lastActivityTime": dev["lastActivityTime"],
            "cloudToDeviceMessageCount": dev["cloudToDeviceMessageCount"],
            "authenticationType": dev["authentication"]["type"],
            "x509Thumbprint": copy.deepcopy(dev["authentication"]["x509Thumbprint"]),
            "version": tw["version"],
            "properties": {"desired": props("desired"), "reported": props("reported")},
            "capabilities": {"iotEdge": dev["capabilities"]["iotEdge"]},
        }
        if dev.get("statusReason") is not None:
            doc["statusReason"] = dev["statusReason"]
        if tw["tags"]:
            doc["tags"] = copy.deepcopy(tw["tags"])
        if self.twin_configurations.get(device_id):  # what automatic device management applied (adm.py)
            doc["configurations"] = {k: {"status": v} for k, v in sorted(self.twin_configurations[device_id].items())}
        if dev.get("deviceScope"):
            doc["deviceScope"] = dev["deviceScope"]
        if dev.get("parentScopes"):
            doc["parentScopes"] = list(dev["parentScopes"])
        return doc

    def get_twin(self, device_id: str) -> dict:
        if device_id not in self.devices:
            raise not_found(device_id)
        return self._twin_doc(device_id)

    def update_twin(self, device_id: str, body: Any, if_match: str | None, mode: str) -> dict:
        """PATCH (mode "patch", a merge) or PUT (mode "replace") of a device twin (§6.1, §6.2).  The body may be
        a whole twin as read: read-only fields are ignored (recorded)."""
        if device_id not in self.devices:
            raise not_found(device_id)
        if not isinstance(body, dict):
            raise bad_request("The twin patch must be a JSON object", code="IotHubFormatError")
        tw = self.twins[device_id]
        if if_match and not is_wildcard(if_match) and not etag_matches(if_match, twin_etag_of(tw["etag"])):
            raise ApiError(412, "PreconditionFailed", f"ETag mismatch for device ID '{device_id}'")
        tags = body.get("tags")
        desired = desired_of(body.get("properties"))
        if mode == "replace":  # PUT replaces both sections: an absent one becomes empty
            tags, desired = tags if tags is not None else {}, desired if desired is not None else {}
        self._apply_twin(device_id, tags, desired, mode, notify=True)
        return self._twin_doc(device_id)

    def _apply_twin(self, device_id: str, tags: Any, desired: Any, mode: str, notify: bool = False) -> None:
        """``notify``: a twin PATCH/PUT that carries desired properties bumps desired ``$version`` (and the twin's
        version and etag) even when the values are unchanged, as the hub notifies the device (the CLI's live twin
        tests); a bulk updateTwin bumps only on a change (no source says otherwise: a choice)."""
        tw = self.twins[device_id]
        new_tags, new_desired = new_sections(tw["tags"], tw["desired"], tags, desired, mode)
        changed = False
        if new_tags != tw["tags"]:
            tw["tags"] = new_tags
            changed = True
        if new_desired != tw["desired"] or (notify and desired is not None):
            tw["desired"] = new_desired
            tw["desired_version"] += 1
            changed = True
        if changed:
            tw["version"] += 1
            tw["etag"] += 1
            tw["updated"] = now_iso()
            self._publish(device_id)
