"""Device identities: the ``DeviceStore`` part of the registry (identities, etags, edge scopes and their rules), and
the routes ``/devices/{id}``, ``GET``/``POST /devices`` (list, and the bulk operation of ``bulk.py``) and
``POST /devices/keys/regenerate`` (iot-api.md §1-§5)."""

from __future__ import annotations

import copy
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from . import modules as _modules
from .common import (
    AUTH_TYPES,
    DEVICE_ID_RE,
    EDGE_SCOPE_PREFIX,
    MAX_EDGE_DEPTH,
    NEVER,
    STATUS_REASON_MAX,
    dotnet_ticks,
    etag_matches,
    etag_of,
    is_wildcard,
    new_key,
    now_iso,
    rotated_keys_answer,
    validate_key,
    validate_thumbprint,
    with_new_keys,
)
from .errors import ApiError, bad_request, not_found, precondition_failed

KEY_POLICIES = {"primarykey": ("primaryKey",), "secondarykey": ("secondaryKey",),
                "both": ("primaryKey", "secondaryKey")}


def _has_twin(entry) -> bool:
    return isinstance(entry, dict) and (entry.get("importMode") in ("updateTwin", "updateTwinIfMatchETag")
                                        or entry.get("tags") is not None or entry.get("properties") is not None)


def device_keys(reg) -> list:
    """The SAS keys of every device (for the test harness's leak scan)."""
    return [v for dev in reg.devices.values() for v in (dev["authentication"]["symmetricKey"] or {}).values()]


def routes(emu) -> list:
    reg = emu.registry
    emu.register_secrets("device_keys", lambda: device_keys(reg))

    @emu.hub_route("/devices", ["GET", "POST"], "bulk")
    async def devices(request: Request) -> Response:
        if request.method == "GET":
            emu.guard(request, "RegistryRead")
            top = request.query_params.get("top")
            try:
                n = int(top) if top not in (None, "") else None
            except ValueError:
                raise bad_request("top must be an integer") from None
            emu.stats.registry_reads += 1
            return emu.json(reg.list(n))
        body = await emu.read_json(request)
        # Twin entries (updateTwin, or tags / desired in an entry) also need ServiceConnect (§6.5).
        needs_twin = isinstance(body, list) and any(_has_twin(e) for e in body)
        emu.authorize(request, "RegistryWrite+ServiceConnect" if needs_twin else "RegistryWrite")
        emu.consume("registry", len(body) if isinstance(body, list) else 1)  # each device counts (§4)
        status, result, written = reg.bulk(body)
        emu.stats.bulk_calls += 1
        emu.stats.registry_writes += written
        if written:
            emu.persist()
        return emu.json(result, status=status)

    @emu.hub_route("/devices/keys/regenerate", ["POST"], "regenerate")
    async def regenerate(request: Request) -> Response:
        """What `az iot hub device-identity renew-key` calls (api-version 2024-03-31): new keys for many devices.
        Body {"policyKey": "primaryKey"|"secondaryKey"|"both", "devices": [{"id": ...}, ...]}; answer
        {"policyKey", "rotatedKeys": [{"id", "primaryKey", "secondaryKey", "etag"}], "errors": [...]}."""
        body = await emu.read_json(request)
        emu.authorize(request, "RegistryWrite")
        if not isinstance(body, dict) or not isinstance(body.get("devices"), list):
            raise bad_request('The body must be {"policyKey": "...", "devices": [{"id": "..."}]}')
        which = KEY_POLICIES.get(str(body.get("policyKey", "")).lower())
        if which is None:
            raise bad_request("policyKey must be primaryKey, secondaryKey or both")
        emu.consume("registry", max(1, len(body["devices"])))
        rotated, errors = [], []
        for entry in body["devices"]:
            entry = entry if isinstance(entry, dict) else {}
            did, mid = entry.get("id"), entry.get("moduleId")
            try:  # an entry with moduleId rotates that module's keys, never its device's (the CLI's live tests)
                rotated.append(reg.regenerate_key(did, which) if mid is None
                               else _modules.regenerate_module_key(reg, did, mid, which))
            except ApiError as exc:
                errors.append({"id": did, **({"moduleId": mid} if mid is not None else {}),
                               "errorCode": exc.code, "errorStatus": exc.message})
        emu.stats.registry_writes += len(rotated)
        if rotated:
            emu.persist()
        return emu.json({"policyKey": body["policyKey"], "rotatedKeys": rotated, "errors": errors})

    @emu.hub_route("/devices/{device_id}", ["GET", "PUT", "DELETE"], "device")
    async def device(request: Request) -> Response:
        device_id = request.path_params["device_id"]
        if request.method == "GET":
            emu.guard(request, "RegistryRead")
            emu.stats.registry_reads += 1  # a read of a missing device is an operation too
            dev = reg.get(device_id)
            emu.run_race(device_id)
            return emu.json(dev, etag=dev["etag"])
        emu.guard(request, "RegistryWrite")
        if request.method == "PUT":
            body = await emu.read_json(request)
            dev = reg.put(device_id, body, request.headers.get("if-match"))
            emu.stats.registry_writes += 1
            emu.persist()
            return emu.json(dev, etag=dev["etag"])
        reg.delete(device_id, request.headers.get("if-match"))
        emu.stats.registry_writes += 1
        emu.persist()
        return Response(status_code=204, headers={"Content-Length": "0"})

    return [devices, regenerate, device]


class DeviceStore:
    """Device identities and edge scopes (iot-api.md §1, §5): the part of the registry this area owns."""

    PERSISTED = ("devices", "counters")  # what it owns that a state file keeps
    CLEARED = ("devices", "counters", "_scope_owner", "refusals")  # what a reset empties

    def init_state(self, query_lag_s: float) -> None:
        self.devices: dict[str, dict] = {}
        self.counters: dict[str, int] = {}  # device id -> etag counter
        self._scope_owner: dict[str, str] = {}  # edge deviceScope -> device id
        self.refusals: dict[str, dict] = {}  # test knob (/_emulator/refuse): device id -> forced error
        self.changes = 0  # every identity or twin change counts (automatic device management re-evaluates on it)

    def after_load(self) -> None:
        for device_id, dev in self.devices.items():
            if dev["capabilities"]["iotEdge"] and dev.get("deviceScope"):
                self._scope_owner[dev["deviceScope"]] = device_id

    def _refused(self, device_id: str) -> None:
        r = self.refusals.get(device_id)
        if r is None:
            return
        r["remaining"] -= 1
        if r["remaining"] <= 0:
            self.refusals.pop(device_id)
        raise ApiError(r["status"], r["code"], f"Device {device_id!r} was refused (emulator refuse knob)")

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
        self.changes += 1
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
        pk = validate_key("primaryKey", sym.get("primaryKey"))
        sk = validate_key("secondaryKey", sym.get("secondaryKey"))
        ptp = validate_thumbprint("primaryThumbprint", x509.get("primaryThumbprint"))
        stp = validate_thumbprint("secondaryThumbprint", x509.get("secondaryThumbprint"))
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
