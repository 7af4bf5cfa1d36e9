# -*- coding: utf-8 -*-
# Copyright: fleet.azure_iot contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""PRIVATE to fleet.azure_iot: iothub_device_bulk, its writes: one conditional bulk entry per device (create,
updateIfMatchETag, deleteIfMatchETag, updateTwinIfMatchETag), sent in calls of at most 100 or through an import job,
and the twin PATCHes that remove keys."""

from __future__ import annotations

import threading
from collections import deque
from typing import Any, Dict, List, Optional

from ansible_collections.fleet.azure_iot.plugins.module_utils._bulk.state import EXPORT_FIELDS, Known
from ansible_collections.fleet.azure_iot.plugins.module_utils._errors import (
    AmbiguousWriteError,
    AuthorizationError,
    IoTApiError,
)
from ansible_collections.fleet.azure_iot.plugins.module_utils._http import error_from_response, maybe_applied
from ansible_collections.fleet.azure_iot.plugins.module_utils._models import DeviceSpec
from ansible_collections.fleet.azure_iot.plugins.module_utils._plan import DevicePlan
from ansible_collections.fleet.azure_iot.plugins.module_utils._resource import is_conflict
from ansible_collections.fleet.azure_iot.plugins.module_utils._twin import patch_body


class FleetWriter:
    """The writes of ``BulkReconciler`` (a mixin over the reconciler's ``client``, ``batch_size`` and pool)."""

    # --------------------------------------------------------------- writes
    def entry(self, s: DeviceSpec, plan: DevicePlan, twin: Dict[str, Any], known: Known) -> Optional[Dict[str, Any]]:
        """The bulk entry for a device, or None (nothing to write in a bulk call).  It shares the plan's values: it is
        serialized at once, never changed.

        Twin data travels in a create entry (the import docs define it for the create modes), or in its own
        updateTwinIfMatchETag entry carrying the complete intended sections, so that a hub that merges and a
        hub that replaces the supplied sections end with the same twin.  An identity update carries no twin
        data: the twin follows in a later call.  A removal of a twin key goes through a twin PATCH (``patch``)."""
        e: Dict[str, Any] = {"id": s.device_id}
        if plan.action in ("create", "update"):
            e["importMode"] = "create" if plan.action == "create" else "updateIfMatchETag"
            if plan.action == "update":
                e["eTag"] = plan.etag
            for k in EXPORT_FIELDS:
                if k in plan.body and not (k == "deviceScope" and plan.body[k] is None):
                    e[k] = plan.body[k]
            if plan.action == "create":
                self._twin_fields(e, twin)
            return e
        if plan.action == "delete":
            e.update(importMode="deleteIfMatchETag", eTag=plan.etag)
            return e
        if twin and not twin.get("removes") and (known.twin or {}).get("etag"):
            e.update(importMode="updateTwinIfMatchETag", twinETag=known.twin["etag"])
            self._twin_fields(e, twin)
            return e
        return None

    @staticmethod
    def _twin_fields(e: Dict[str, Any], twin: Dict[str, Any]) -> None:
        full = twin.get("full") or {}
        if "tags" in full:
            e["tags"] = full["tags"]
        if "desired" in full:
            e["properties"] = {"desired": full["desired"]}

    def patch_twins(self, todo: List[tuple]) -> Dict[str, Optional[str]]:
        """Twin PATCHes (with If-Match of the twin etag read) for the twins that lose keys: {id: None when applied,
        else "PreconditionFailed" / "DeviceNotFound" (re-read and re-plan) or the error}."""
        def one(item):
            s, twin, known = item
            try:
                r = self.client.patch_twin(s.device_id, patch_body(twin), (known.twin or {}).get("etag"))
            except AuthorizationError:
                raise
            except IoTApiError as exc:
                return s.device_id, (str(exc), isinstance(exc, AmbiguousWriteError))
            maybe = maybe_applied(r)
            if r.status_code == 200:
                return s.device_id, (None, maybe)
            if is_conflict(r.status_code, "update"):
                return s.device_id, ("DeviceNotFound" if r.status_code == 404 else "PreconditionFailed", maybe)
            return s.device_id, (str(error_from_response(r, f"update twin of {s.device_id!r}")), maybe)
        return dict(self._pool(one, todo))

    def send(self, entries: List[tuple]) -> Dict[str, tuple]:
        """Write the entries ((device id, import mode, JSON) each): through an import job when there are many
        (storage_container_uri), else bulk calls.  {device id: (error or None when applied, maybe_applied)}."""
        if self.jobs is not None and entries and self.jobs.write_by_import(len(entries)):
            return self.jobs.import_entries(entries)
        return self.send_bulk(entries)

    def send_bulk(self, entries: List[tuple]) -> Dict[str, tuple]:
        """POST /devices in calls of at most ``batch_size``: {device id: (error or None when applied,
        maybe_applied)}.  Each call is cut to what the minute's quota has left (``Budget.take``): under S1 x 2 a
        call of 90 follows a call of 100 at once, rather than waiting a minute for room for another 100.

        ``maybe_applied``: an earlier attempt of the call reached the hub unanswered, so an entry refused now
        (409/412/404) may have been applied by that attempt."""
        rest = deque(entries)
        budget = self.client.pacer.registry
        lock, counted = threading.Lock(), threading.Lock()

        def next_chunk() -> List[tuple]:
            with lock:  # one caller at a time takes room and entries, so calls leave in the entries' order
                if not rest:
                    return []
                count = budget.take(min(self.batch_size, len(rest)))
                return [rest.popleft() for _n in range(count)]

        def post(chunk):
            try:
                r = self.client.bulk([text for _did, _mode, text in chunk], prepaid=True)  # serialized once
            except AuthorizationError:
                raise  # the whole call was refused for a missing right: every other call would be too; stop
            except IoTApiError as exc:  # retries exhausted: this chunk is not confirmed, the others stand
                lost = isinstance(exc, AmbiguousWriteError)
                return {did: ({"deviceId": did, "errorCode": exc.code or "RequestFailed",
                               "errorStatus": f"{exc} (not confirmed; a re-run converges)", "operation": mode}, lost)
                        for did, mode, _text in chunk}
            maybe = maybe_applied(r)
            with counted:  # not LOCK: a caller waiting for the quota holds that one
                self.answered += len(chunk)  # the progress file's done moves as calls are answered
            if r.status_code == 200:
                return {did: (None, maybe) for did, _mode, _text in chunk}
            try:
                body = r.json()
            except ValueError:
                body = None
            if r.status_code == 400 and isinstance(body, dict) and "isSuccessful" in body:
                errors = {err.get("deviceId"): err for err in body.get("errors") or []}
                return {did: (errors.get(did), maybe) for did, _mode, _text in chunk}
            err = error_from_response(r, f"bulk call of {len(chunk)} devices")
            return {did: ({"deviceId": did, "errorCode": err.code or f"HTTP{r.status_code}",
                           "errorStatus": str(err), "operation": mode}, maybe) for did, mode, _text in chunk}

        def worker(_index):
            done: Dict[str, tuple] = {}
            chunk = next_chunk()
            while chunk:
                done.update(post(chunk))
                chunk = next_chunk()
            return done

        results: Dict[str, tuple] = {}
        if len(rest) > self.batch_size and not self._write_proven:
            # The first call goes alone: a credential without the right is refused once, not once per call.
            results.update(post(next_chunk()))
        self._write_proven = True
        calls = -(-len(rest) // self.batch_size)
        for part in self._pool(worker, list(range(min(calls, self.max_concurrency)))):
            results.update(part)
        return results
