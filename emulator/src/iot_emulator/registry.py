"""The IoT Hub identity registry: devices, edge scopes, twins, bulk operations and the query index.

Pure domain logic, no HTTP.  Every rule cites iot-api.md (``§n``); rules marked CHOICE are emulator
decisions where the service's behaviour is unconfirmed, and always take the strict side.  docs/emulator.md
lists them.
"""

from __future__ import annotations

import base64
import binascii
import copy
import datetime as _dt
import hashlib
import json
import random
import re
import secrets
import time
from collections import deque
from typing import Any

from . import query as _query
from . import twins as _twins
from .errors import ApiError, bad_request, not_found, precondition_failed

DEVICE_ID_RE = re.compile(r"^[A-Za-z0-9\-:.+%_#*?!(),=@;$']{1,128}$")  # §6, C# s_deviceIdRegex
THUMBPRINT_RE = re.compile(r"^(?:[0-9A-Fa-f]{40}|[0-9A-Fa-f]{64})$")  # §1.3, C# X509ThumbprintExtensions
EDGE_SCOPE_PREFIX = "ms-azure-iot-edge://"  # §5
NEVER = "0001-01-01T00:00:00Z"  # §1.3
MAX_EDGE_DEPTH = 5  # §5, IoT Edge limits (registry enforcement is a CHOICE)
MAX_BULK = 100  # §4
DEFAULT_PAGE = 100  # iot-api-2.md §7: "a page size (up to 100)" (2018 docs); --max-page-size changes it
MAX_QUERY_CHARS = 8192  # a query's maximum length
STATUS_REASON_MAX = 128  # §6 (enforcement is a CHOICE)
AUTH_TYPES = ("sas", "selfSigned", "certificateAuthority", "none")
IMPORT_MODES = (
    "create", "update", "updateIfMatchETag", "delete", "deleteIfMatchETag", "updateTwin", "updateTwinIfMatchETag",
)


def now_iso(t: float | None = None) -> str:
    """UTC time with 7 fractional digits and Z, as the service writes it (§1.3)."""
    t = time.time() if t is None else t
    dt = _dt.datetime.fromtimestamp(t, tz=_dt.timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond:06d}0Z"


def dotnet_ticks(t: float | None = None) -> str:
    """generationId: .NET DateTime ticks of the creation time (§1.3)."""
    t = time.time() if t is None else t
    return str(int((t + 62135596800) * 10_000_000))


def etag_of(counter: int) -> str:
    """Identity etag: base64 of the ASCII decimal counter (§1.3)."""
    return base64.b64encode(str(counter).encode()).decode()


def twin_etag_of(counter: int) -> str:
    """Twin etag: base64 of an 8-byte big-endian integer (§3.2)."""
    return base64.b64encode(counter.to_bytes(8, "big")).decode()


def new_key() -> str:
    return base64.b64encode(secrets.token_bytes(32)).decode()


def etag_matches(if_match: str, etag: str) -> bool:
    """If-Match compare: quoted or unquoted, weak prefix tolerated (§1.1)."""
    value = if_match.strip()
    if value.startswith("W/"):
        value = value[2:]
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = value[1:-1]
    return value == etag


def is_wildcard(if_match: str) -> bool:
    return if_match.strip() in ("*", '"*"')


def _validate_key(name: str, value: Any) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise bad_request(f"{name} must be a base64 string")
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise bad_request(f"{name} is not valid base64") from None
    if not 16 <= len(raw) <= 64:
        raise bad_request("The primary and secondary keys must be between 16 and 64 bytes in length.")
    return value


def _validate_thumbprint(name: str, value: Any) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not THUMBPRINT_RE.match(value):
        raise bad_request(f"{name} must be 40 or 64 hexadecimal characters")
    return value


def with_new_keys(existing: dict, which: tuple, what: str) -> dict:
    """A copy of a SAS identity (device or module) with new keys in WHICH ("primaryKey", "secondaryKey")."""
    if existing["authentication"]["type"] != "sas":
        raise ApiError(400, "InvalidAuthenticationType", f"{what} does not use symmetric keys")
    record = copy.deepcopy(existing)
    for k in which:
        record["authentication"]["symmetricKey"][k] = new_key()
    return record


def rotated_keys_answer(record: dict, which: tuple) -> dict:
    """The keys part of a keys/regenerate answer: only the rotated keys, the other one null."""
    keys = record["authentication"]["symmetricKey"]
    return {"primaryKey": keys["primaryKey"] if "primaryKey" in which else None,
            "secondaryKey": keys["secondaryKey"] if "secondaryKey" in which else None, "etag": record["etag"]}


class QueryIndex:
    """The query store: eventually consistent with the registry (§3.2).

    Writes are recorded with their time; a query sees the writes older than ``lag`` seconds, so a device
    created a moment ago is missing from the results and a device deleted a moment ago is a "ghost".
    ``lag_queries`` (a test knob) holds a write back until that many more queries were answered too: a lag that
    ends at a chosen request of a task instead of at a wall-clock time.
    """

    def __init__(self, lag: float = 0.0):
        self.lag = lag
        self.lag_queries = 0
        self.queries = 0  # queries answered so far
        self.visible: dict[str, dict] = {}
        self.pending: deque = deque()
        self._sorted: list[str] | None = None

    def record(self, device_id: str, doc: dict | None, at: float) -> None:
        self.pending.append((at, self.queries, device_id, doc))

    def clear(self) -> None:
        self.visible.clear()
        self.pending.clear()
        self._sorted = None

    def settle(self, now: float) -> None:
        """Called once per query request, before it is answered."""
        cutoff = now - self.lag
        while self.pending and (self.lag <= 0 or self.pending[0][0] <= cutoff) \
                and self.queries - self.pending[0][1] >= self.lag_queries:
            _, _, device_id, doc = self.pending.popleft()
            if doc is None:
                if self.visible.pop(device_id, None) is not None:
                    self._sorted = None
            else:
                if device_id not in self.visible:
                    self._sorted = None
                self.visible[device_id] = doc

    def ordered_ids(self) -> list[str]:
        if self._sorted is None:
            self._sorted = sorted(self.visible)
        return self._sorted


class Registry:
    def __init__(self, query_lag_s: float = 0.0, rng: random.Random | None = None):
        self.rng = rng or random.Random()
        self.devices: dict[str, dict] = {}
        self.twins: dict[str, dict] = {}
        self.modules: dict[str, dict[str, dict]] = {}
        self.module_twins: dict[str, dict[str, dict]] = {}  # device id -> module id -> twin record
        self.module_index = QueryIndex(query_lag_s)  # "deviceId/moduleId" -> module twin doc (devices.modules)
        self.module_missing_device_status = 404  # knob: a PEER saw 401 for module calls on a missing device
        self.edge_content: dict[str, dict] = {}  # device id -> the modulesContent last applied to it
        self.counters: dict[str, int] = {}
        self.index = QueryIndex(query_lag_s)
        self._scope_owner: dict[str, str] = {}  # edge deviceScope -> device id
        self.refusals: dict[str, dict] = {}  # test knob (/_emulator/refuse): device id -> forced error
        self.bulk_twin_mode = "replace"  # --bulk-twin-mode: how bulk updateTwin applies tags / desired (§9.1)
        self.max_page_size = DEFAULT_PAGE  # --max-page-size

    # ------------------------------------------------------------------ state
    def _refused(self, device_id: str) -> None:
        r = self.refusals.get(device_id)
        if r is None:
            return
        r["remaining"] -= 1
        if r["remaining"] <= 0:
            self.refusals.pop(device_id)
        raise ApiError(r["status"], r["code"], f"Device {device_id!r} was refused (emulator refuse knob)")

    def reset(self) -> None:
        self.refusals.clear()
        self.devices.clear()
        self.twins.clear()
        self.modules.clear()
        self.module_twins.clear()
        self.module_index.clear()
        self.edge_content.clear()
        self.counters.clear()
        self.index.clear()
        self._scope_owner.clear()

    def dump(self) -> dict:
        return {"devices": self.devices, "twins": self.twins, "modules": self.modules, "counters": self.counters,
                "module_twins": self.module_twins}

    def load(self, data: dict) -> None:
        self.reset()
        self.devices.update(data.get("devices", {}))
        self.twins.update(data.get("twins", {}))
        self.modules.update(data.get("modules", {}))
        self.module_twins.update(data.get("module_twins", {}))
        self.counters.update(data.get("counters", {}))
        now = time.time()
        for device_id, dev in self.devices.items():
            if dev["capabilities"]["iotEdge"] and dev.get("deviceScope"):
                self._scope_owner[dev["deviceScope"]] = device_id
            self.index.visible[device_id] = self._twin_doc(device_id)
            for module_id in self.modules.get(device_id, {}):
                self.module_index.visible[f"{device_id}/{module_id}"] = self.module_twin_doc(device_id, module_id)
        self.index._sorted = None
        self.module_index._sorted = None
        _ = now

    # ------------------------------------------------------------- helpers
    @staticmethod
    def check_id(device_id: str) -> None:
        if not DEVICE_ID_RE.match(device_id or ""):
            raise bad_request(
                f"Device id {device_id!r} is invalid: up to 128 characters of ASCII letters, digits and - : . + % _ # * ? ! ( ) , = @ ; $ '"
            )

    def _bump(self, device_id: str) -> str:
        self.counters[device_id] = self.counters.get(device_id, self.rng.randint(100_000_000, 999_999_999)) + 1
        return etag_of(self.counters[device_id])

    def _publish(self, device_id: str, at: float | None = None) -> None:
        at = time.time() if at is None else at
        doc = self._twin_doc(device_id) if device_id in self.devices else None
        self.index.record(device_id, doc, at)

    def owner_of_scope(self, scope: str) -> str | None:
        return self._scope_owner.get(scope)

    def _edge_depth(self, device_id: str) -> int:
        """Layer of an edge device: 1 for a top-level gateway."""
        depth, seen, cur = 1, {device_id}, self.devices[device_id]
        while cur.get("parentScopes"):
            parent = self._scope_owner.get(cur["parentScopes"][0])
            if parent is None or parent in seen:
                break
            seen.add(parent)
            depth += 1
            cur = self.devices[parent]
        return depth

    def _children_of_scope(self, scope: str) -> list[str]:
        return [
            d for d, dev in self.devices.items()
            if (dev.get("parentScopes") or [None])[0] == scope or (not dev["capabilities"]["iotEdge"] and dev.get("deviceScope") == scope)
        ]

    def _subtree_height(self, device_id: str) -> int:
        """Edge layers at and below an edge device (1 when it has no edge children)."""
        scope = self.devices[device_id].get("deviceScope")
        best = 0
        for child in self._children_of_scope(scope) if scope else []:
            if self.devices[child]["capabilities"]["iotEdge"] and child != device_id:
                best = max(best, self._subtree_height(child))
        return 1 + best

    def _ancestors(self, scope: str) -> list[str]:
        out, cur = [], self._scope_owner.get(scope)
        while cur is not None and cur not in out:
            out.append(cur)
            ps = self.devices[cur].get("parentScopes") or []
            cur = self._scope_owner.get(ps[0]) if ps else None
        return out

    # ---------------------------------------------------------- identities
    def _build_identity(self, device_id: str, body: dict, existing: dict | None, now: float) -> dict:
        """Turn a client body into the stored identity: PUT replaces the whole identity (§1.1)."""
        if not isinstance(body, dict):
            raise bad_request("The request body must be a JSON object", code="IotHubFormatError")
        body_id = body.get("deviceId", body.get("id"))
        if body_id not in (None, "") and body_id != device_id:
            # §11.3 unconfirmed; CHOICE: a body id that differs from the path id is refused.
            raise bad_request(f"deviceId {body_id!r} in the body does not match {device_id!r} in the request")

        status = body.get("status") or "enabled"
        if status not in ("enabled", "disabled"):
            raise bad_request(f"status {status!r} is invalid: use enabled or disabled")
        reason = body.get("statusReason")
        if reason is not None:
            if not isinstance(reason, str):
                raise bad_request("statusReason must be a string")
            if len(reason) > STATUS_REASON_MAX:
                raise bad_request(f"statusReason is longer than {STATUS_REASON_MAX} characters")

        auth = body.get("authentication") or {}
        if not isinstance(auth, dict):
            raise bad_request("authentication must be an object")
        auth_type = auth.get("type") or "sas"
        if auth_type not in AUTH_TYPES:
            raise bad_request(f"authentication.type {auth_type!r} is invalid: use one of {', '.join(AUTH_TYPES)}")
        sym = auth.get("symmetricKey") or {}
        x509 = auth.get("x509Thumbprint") or {}
        pk = _validate_key("primaryKey", sym.get("primaryKey"))
        sk = _validate_key("secondaryKey", sym.get("secondaryKey"))
        ptp = _validate_thumbprint("primaryThumbprint", x509.get("primaryThumbprint"))
        stp = _validate_thumbprint("secondaryThumbprint", x509.get("secondaryThumbprint"))
        if auth_type == "sas":
            if ptp or stp:
                raise bad_request("A device with authentication type sas cannot have x509 thumbprints")
            # Omitted, null or empty keys are generated, on create and on update alike (§1.3, TEST S5).
            pk = pk or new_key()
            sk = sk or new_key()
        elif auth_type == "selfSigned":
            if pk or sk:
                raise bad_request("A device with authentication type selfSigned cannot have symmetric keys")
            if not ptp:
                raise bad_request("A selfSigned device needs x509Thumbprint.primaryThumbprint")
        else:
            if pk or sk or ptp or stp:
                raise bad_request(f"A device with authentication type {auth_type} cannot have keys or thumbprints")

        caps = body.get("capabilities") or {}
        edge = caps.get("iotEdge", False)
        if not isinstance(edge, bool):
            raise bad_request("capabilities.iotEdge must be a boolean")

        generation = existing["generationId"] if existing else dotnet_ticks(now)
        was_edge = bool(existing and existing["capabilities"]["iotEdge"])
        sent_scope = body.get("deviceScope") or ""
        if not isinstance(sent_scope, str):
            raise bad_request("deviceScope must be a string")
        sent_parents = body.get("parentScopes") or []
        if not isinstance(sent_parents, list) or not all(isinstance(s, str) for s in sent_parents):
            raise bad_request("parentScopes must be an array of strings")

        if edge:
            own = existing["deviceScope"] if was_edge else f"{EDGE_SCOPE_PREFIX}{device_id}-{generation}"
            if was_edge and sent_scope != own:
                # §1.4: "Auto generated and immutable for edge devices". CHOICE: an update of an edge device
                # must echo its deviceScope; anything else is refused (the SDKs' default-argument updates
                # that drop it are the bug this catches).
                raise ApiError(400, "InvalidDeviceScope",
                               "deviceScope of an edge device is immutable: send its current value "
                               f"{own!r} with every update")
            if not was_edge and sent_scope not in ("", own):
                raise ApiError(400, "InvalidDeviceScope",
                               "deviceScope of an edge device is generated by the service; put the parent's "
                               "scope in parentScopes instead")
            if len(sent_parents) > 1:
                raise ApiError(400, "InvalidDeviceScope", "parentScopes can hold only one scope")  # §5 C# remark
            parent_scopes = sent_parents
            scope = own
        else:
            if was_edge:
                kids = [k for k in self._children_of_scope(existing["deviceScope"]) if k != device_id]
                if kids:
                    # CHOICE: refuse to drop edge capability from a device that still has children.
                    raise ApiError(400, "InvalidDeviceScope",
                                   f"Device {device_id!r} still has {len(kids)} child device(s); move or remove "
                                   "them before turning off iotEdge")
                if sent_scope == existing["deviceScope"]:
                    # Recorded: `az iot hub device-identity update --ee false` sends the device back with its own
                    # scope, and Microsoft's live test expects success.  CHOICE: the device keeps its parent, whose
                    # scope (its former parentScopes[0]) becomes its deviceScope as a leaf.
                    sent_scope = (existing.get("parentScopes") or [""])[0]
            scope = sent_scope
            # A leaf's parentScopes is derived from its deviceScope; client values are ignored (§5a).
            parent_scopes = [scope] if scope else []

        # Validate the parent reference when it changes.  An edge device's parent: CHOICE, the scope must name an
        # existing edge device, with no cycle and at most five edge layers.  A leaf's deviceScope that names no
        # edge device is accepted, as recorded (§11.4: bulk create with an arbitrary scope on a non-edge device).
        parent = parent_scopes[0] if parent_scopes else ""
        old_parent = ((existing or {}).get("parentScopes") or [""])[0] if existing else ""
        if parent and parent != old_parent:
            owner = self._scope_owner.get(parent)
            if owner == device_id:
                raise ApiError(400, "InvalidDeviceScope", "A device cannot be its own parent")
            if edge:
                if owner is None:
                    raise ApiError(400, "InvalidDeviceScope", f"Scope {parent!r} does not belong to an edge device")
                if device_id in self._ancestors(parent):
                    raise ApiError(400, "InvalidDeviceScope",
                                   f"Setting parent {owner!r} on {device_id!r} would create a cycle")
                height = self._subtree_height(device_id) if existing and was_edge else 1
                if self._edge_depth(owner) + height > MAX_EDGE_DEPTH:
                    raise ApiError(400, "InvalidDeviceScope",
                                   f"Parent {owner!r} would nest edge devices deeper than {MAX_EDGE_DEPTH} layers")

        status_time = existing["statusUpdatedTime"] if existing else NEVER
        if existing and existing["status"] != status:
            status_time = now_iso(now)
        return {
            "deviceId": device_id,
            "generationId": generation,
            "etag": existing["etag"] if existing else "",
            "connectionState": existing["connectionState"] if existing else "Disconnected",
            "status": status,
            "statusReason": reason,
            "connectionStateUpdatedTime": existing["connectionStateUpdatedTime"] if existing else NEVER,
            "statusUpdatedTime": status_time,
            "lastActivityTime": existing["lastActivityTime"] if existing else NEVER,
            "cloudToDeviceMessageCount": existing["cloudToDeviceMessageCount"] if existing else 0,
            "authentication": {
                "symmetricKey": {"primaryKey": pk, "secondaryKey": sk},
                "x509Thumbprint": {"primaryThumbprint": ptp, "secondaryThumbprint": stp},
                "type": auth_type,
            },
            "capabilities": {"iotEdge": edge},
            "deviceScope": scope or None,
            "parentScopes": parent_scopes,
        }

    def _store(self, record: dict, existing: dict | None, now: float) -> dict:
        device_id = record["deviceId"]
        if existing and existing["capabilities"]["iotEdge"] and existing.get("deviceScope"):
            self._scope_owner.pop(existing["deviceScope"], None)
        record["etag"] = self._bump(device_id)
        self.devices[device_id] = record
        if record["capabilities"]["iotEdge"]:
            self._scope_owner[record["deviceScope"]] = device_id
            mods = self.modules.setdefault(device_id, {})
            for mid in ("$edgeAgent", "$edgeHub"):  # §5: system modules of edge devices
                if mid not in mods:
                    mods[mid] = self._new_module(device_id, mid, now)
                    self._new_module_twin(device_id, mid)
        if device_id not in self.twins:
            self.twins[device_id] = {"tags": {}, "desired": {}, "reported": {}, "version": 1,
                                     "desired_version": 1, "reported_version": 1, "etag": 1,
                                     "updated": now_iso(now)}
        self._publish(device_id, now)
        return record

    def _new_module(self, device_id: str, module_id: str, now: float) -> dict:
        """A system module of an edge device: managedBy iotEdge, authentication none (iot-api-2.md §1.3)."""
        return {
            "moduleId": module_id, "managedBy": "iotEdge", "deviceId": device_id,
            "generationId": dotnet_ticks(now), "etag": etag_of(self._next_module_counter()),
            "connectionState": "Disconnected", "connectionStateUpdatedTime": NEVER,
            "lastActivityTime": NEVER, "cloudToDeviceMessageCount": 0,
            "authentication": {"symmetricKey": {"primaryKey": None, "secondaryKey": None},
                               "x509Thumbprint": {"primaryThumbprint": None, "secondaryThumbprint": None},
                               "type": "none"},
        }

    def _next_module_counter(self) -> int:
        return self.rng.randint(100_000_000, 899_999_999)

    def _new_module_twin(self, device_id: str, module_id: str) -> None:
        # A new module twin: version 2, desired and reported $version 1, $lastUpdated never (recorded §1.4).
        self.module_twins.setdefault(device_id, {})[module_id] = {
            "tags": {}, "desired": {}, "reported": {}, "version": 2, "desired_version": 1, "reported_version": 1,
            "etag": 1, "updated": NEVER}
        self._publish_module(device_id, module_id)

    def _publish_module(self, device_id: str, module_id: str, at: float | None = None) -> None:
        at = time.time() if at is None else at
        exists = module_id in self.modules.get(device_id, {})
        self.module_index.record(f"{device_id}/{module_id}",
                                 self.module_twin_doc(device_id, module_id) if exists else None, at)

    def module_twin_doc(self, device_id: str, module_id: str) -> dict:
        mod = self.modules[device_id][module_id]
        tw = self.module_twins[device_id][module_id]

        def props(kind: str) -> dict:
            out = copy.deepcopy(tw[kind])
            out["$metadata"] = {"$lastUpdated": tw["updated"]}
            out["$version"] = tw[f"{kind}_version"]
            return out
        doc = {"deviceId": device_id, "moduleId": module_id, "etag": twin_etag_of(tw["etag"]),
               "deviceEtag": mod["etag"], "status": "enabled", "statusUpdateTime": NEVER,
               "connectionState": mod["connectionState"], "lastActivityTime": mod["lastActivityTime"],
               "cloudToDeviceMessageCount": mod["cloudToDeviceMessageCount"],
               "authenticationType": mod["authentication"]["type"],
               "x509Thumbprint": copy.deepcopy(mod["authentication"]["x509Thumbprint"]),
               "version": tw["version"], "properties": {"desired": props("desired"), "reported": props("reported")}}
        if tw["tags"]:
            doc["tags"] = copy.deepcopy(tw["tags"])
        return doc

    @staticmethod
    def render(record: dict, for_get: bool) -> dict:
        """The JSON body the service returns.  GET omits empty scopes of non-edge devices (§1.3)."""
        out = copy.deepcopy(record)
        if not out["capabilities"]["iotEdge"] and not out.get("deviceScope"):
            out.pop("deviceScope", None)
            if for_get:
                out.pop("parentScopes", None)
        elif out.get("deviceScope") is None:
            out.pop("deviceScope", None)
        return out

    def get(self, device_id: str) -> dict:
        dev = self.devices.get(device_id)
        if dev is None:
            raise not_found(device_id)
        return self.render(dev, for_get=True)

    def put(self, device_id: str, body: Any, if_match: str | None) -> dict:
        self.check_id(device_id)
        self._refused(device_id)
        now = time.time()
        existing = self.devices.get(device_id)
        create_only = if_match is None or if_match.strip() in ("", '""')
        if create_only:
            if existing is not None:
                raise ApiError(409, "DeviceAlreadyExists", f"A device with ID '{device_id}' is already registered.")
        else:
            if existing is None:
                raise not_found(device_id)  # §11.1 unconfirmed; CHOICE: no upsert through If-Match
            if not is_wildcard(if_match) and not etag_matches(if_match, existing["etag"]):
                raise precondition_failed()
        record = self._build_identity(device_id, body, existing, now)
        return self.render(self._store(record, existing, now), for_get=False)

    def delete(self, device_id: str, if_match: str | None) -> None:
        existing = self.devices.get(device_id)
        if if_match is None or not if_match.strip():
            # §11.2 unconfirmed; CHOICE: every SDK sends If-Match on delete, so the emulator requires it.
            raise bad_request("Delete requires an If-Match header: the device etag, or * to force", code="ArgumentNull")
        if existing is None:
            raise not_found(device_id)
        if not is_wildcard(if_match) and not etag_matches(if_match, existing["etag"]):
            raise precondition_failed()
        self._remove(device_id)

    def _remove(self, device_id: str) -> None:
        dev = self.devices.pop(device_id)
        if dev["capabilities"]["iotEdge"] and dev.get("deviceScope"):
            self._scope_owner.pop(dev["deviceScope"], None)
        self.twins.pop(device_id, None)
        mods = self.modules.pop(device_id, None) or {}
        self.module_twins.pop(device_id, None)
        for module_id in mods:
            self._publish_module(device_id, module_id)
        self._publish(device_id)

    def list(self, top: int | None) -> list[dict]:
        if top is None or top < 1 or top > 1000:
            top = 1000  # §3.1: "Any value outside the range of 1-1000 is considered to be 1000."
        ids = sorted(self.devices)[:top]
        return [self.render(self.devices[d], for_get=True) for d in ids]

    def regenerate_key(self, did: Any, which: tuple) -> dict:
        """New symmetric keys for one SAS device (POST /devices/keys/regenerate).  The answer carries only the keys
        it rotated: the other one is null (as `az iot hub device-identity renew-key` shows)."""
        dev = self.devices.get(did) if isinstance(did, str) else None
        if dev is None:
            raise ApiError(404, "DeviceNotFound", f"Device {did!r} not found")
        stored = self._store(with_new_keys(dev, which, f"Device {did!r}"), dev, time.time())
        return {"id": did, **rotated_keys_answer(stored, which)}

    # ------------------------------------------------------------- modules
    def list_modules(self, device_id: str) -> list[dict]:
        if device_id not in self.devices:
            raise not_found(device_id)
        return [copy.deepcopy(m) for m in self.modules.get(device_id, {}).values()]

    def get_module(self, device_id: str, module_id: str) -> dict:
        if device_id not in self.devices:
            raise not_found(device_id)
        mod = self.modules.get(device_id, {}).get(module_id)
        if mod is None:
            raise ApiError(404, "ModuleNotFound", f"{device_id}/{module_id}")
        return copy.deepcopy(mod)

    # --------------------------------------------------------------- twins
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
        desired = _twins.desired_of(body.get("properties"))
        if mode == "replace":  # PUT replaces both sections: an absent one becomes empty
            tags, desired = tags if tags is not None else {}, desired if desired is not None else {}
        self._apply_twin(device_id, tags, desired, mode, notify=True)
        return self._twin_doc(device_id)

    def _apply_twin(self, device_id: str, tags: Any, desired: Any, mode: str, notify: bool = False) -> None:
        """``notify``: a twin PATCH/PUT that carries desired properties bumps desired ``$version`` (and the twin's
        version and etag) even when the values are unchanged, as the hub notifies the device (the CLI's live twin
        tests); a bulk updateTwin bumps only on a change (no source says otherwise: a choice)."""
        tw = self.twins[device_id]
        new_tags, new_desired = _twins.new_sections(tw["tags"], tw["desired"], tags, desired, mode)
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

    # ---------------------------------------------------------------- bulk
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
            from .modules import bulk_module_entry  # modules.py builds on this store
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

    # --------------------------------------------------------------- query
    def query(self, text: Any, max_items: int | None, continuation: str | None) -> tuple[list, str | None, str]:
        """POST /devices/query (§3.2).  Returns (items, next continuation or None, item type)."""
        if isinstance(text, str) and len(text) > MAX_QUERY_CHARS:
            raise bad_request(f"The query is {len(text)} characters long; the maximum is {MAX_QUERY_CHARS}")
        q = _query.parse(text)
        index = self.module_index if q.source == "devices.modules" else self.index
        index.settle(time.time())
        index.queries += 1
        # §7: clamp to 1..max page size; a missing or invalid value means the maximum, never a 4xx.
        page = self.max_page_size if not max_items or max_items < 1 else min(max_items, self.max_page_size)
        qhash = hashlib.sha256(text.encode()).hexdigest()[:12]
        after = None
        if continuation:
            try:
                state = json.loads(base64.urlsafe_b64decode(continuation.encode()))
                if state["q"] != qhash:
                    raise ValueError
                after = state["after"]
            except (ValueError, KeyError, TypeError, binascii.Error):
                raise bad_request("The continuation token is invalid for this query") from None
        ids = index.ordered_ids()
        if q.is_count:
            n = sum(1 for d in ids if q.where is None or q.where(index.visible[d]))
            return [{q.select[0][2]: n}], None, "Raw"
        start = 0
        if after is not None:
            import bisect
            start = bisect.bisect_right(ids, after)
        items, last = [], None
        i = start
        while i < len(ids) and len(items) < page:
            doc = index.visible[ids[i]]
            if q.where is None or q.where(doc):
                items.append(q.project(copy.deepcopy(doc)))
                last = ids[i]
            i += 1
        more = i < len(ids) and any(q.where is None or q.where(index.visible[d]) for d in ids[i:])
        token = None
        if more and last is not None:
            token = base64.urlsafe_b64encode(json.dumps({"q": qhash, "after": last}).encode()).decode()
        return items, token, ("Twin" if q.is_star else "Raw")
