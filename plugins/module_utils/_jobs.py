# -*- coding: utf-8 -*-
# Copyright: fleet.azure_iot contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""PRIVATE to fleet.azure_iot: IoT Hub import and export jobs through an Azure Blob Storage container
(iot-api-2.md §3), for fleets of 100,000 devices and more.

- ``JobRunner.run(body)``: waits while another import or export job is active (one per hub; bounded by
  ``retry_budget_seconds``, never cancelling it), creates the job, polls it to its end, and returns its record;
  a ``failed`` or ``cancelled`` job raises with its ``failureReason``.
- ``Container``: the container given as a SAS URI, through ``azure-storage-blob``, imported only here (the jobs
  path): ``lines(name)`` streams a blob line by line (never held whole), ``upload_lines`` streams lines up.
"""

from __future__ import annotations

import json
import time
import urllib.parse
from typing import Any, Dict, Iterable, Iterator, List, Optional

from ansible_collections.fleet.azure_iot.plugins.module_utils._http import error_from_response
from ansible_collections.fleet.azure_iot.plugins.module_utils._errors import InputError, IoTApiError, JobFailed
from ansible_collections.fleet.azure_iot.plugins.module_utils._strings import shared_pairs

ACTIVE = ("enqueued", "running", "queued", "scheduled", "unknown")
POLL_SECONDS = (0.2, 0.5, 1.0, 2.0, 5.0)  # a job is polled quickly first, then every 5 s
LOOPBACK = ("127.0.0.1", "localhost", "[::1]")


def check_container_uri(uri: str, option: str = "storage_container_uri") -> None:
    """A container SAS URI: https (http only on loopback, for Azurite), a container path, a SAS token.  A wrong one
    is an input error, before any request (no service error to report)."""
    parts = urllib.parse.urlsplit(uri or "")
    if parts.scheme not in ("https", "http") or not parts.netloc:
        raise InputError(f"{option}: must be the https URL of a blob container with a SAS token "
                         "(https://<account>.blob.core.windows.net/<container>?sv=...&sp=rwdl&sig=...)")
    if parts.scheme == "http" and parts.hostname not in ("127.0.0.1", "localhost", "::1"):
        raise InputError(f"{option}: plain http is accepted only on loopback (Azurite); use https")
    if not parts.path.strip("/"):
        raise InputError(f"{option}: the URL names no container (…/<account>/<container> or …/<container>)")
    query = urllib.parse.parse_qs(parts.query)
    if "sig" not in query:
        raise InputError(f"{option}: the URL carries no SAS token (sig=...); IoT Hub reaches the container with it")
    perms = (query.get("sp") or [""])[0]
    missing = [name for p, name in (("r", "read"), ("w", "write"), ("l", "list"), ("d", "delete")) if p not in perms]
    if perms and missing:
        raise InputError(f"{option}: the SAS token lacks the {', '.join(missing)} right(s) (sp={perms}); import "
                         "and export jobs need read, write, list and delete on the container")


def redacted(uri: str) -> str:
    """The container URL without its SAS token, for messages."""
    parts = urllib.parse.urlsplit(uri)
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


def storage_error(exc: BaseException, what: str) -> IoTApiError:
    """A Blob Storage failure as an IoTApiError whose ``error`` is filled from the storage answer (its status, its
    error code such as AuthorizationPermissionMismatch, its request id), not left as nulls."""
    first = str(exc).splitlines()[0] if str(exc) else ""
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None) or {}
    code = getattr(exc, "error_code", None) or headers.get("x-ms-error-code") or type(exc).__name__
    return IoTApiError(f"{what}: {type(exc).__name__}: {first}", getattr(exc, "status_code", None), str(code),
                       first or None, headers.get("x-ms-request-id"))


class Container:
    def __init__(self, uri: str):
        try:
            from azure.storage.blob import ContainerClient  # the jobs path only: keeps module start-up light
        except ImportError as exc:
            raise IoTApiError("storage_container_uri needs the azure-storage-blob Python package on the host that "
                              f"runs the task: pip install azure-storage-blob ({exc})") from None
        self.uri = uri
        # Blobs are read 4 MiB at a time (the SDK's first read is 32 MiB otherwise): a 100,000-line export is
        # streamed, never held.
        self.client = ContainerClient.from_container_url(uri, max_single_get_size=4 * 1024 * 1024,
                                                         max_chunk_get_size=4 * 1024 * 1024)

    def lines(self, name: str) -> Iterator[str]:
        """A blob's lines, streamed chunk by chunk."""
        try:
            stream = self.client.download_blob(name)
        except Exception as exc:  # azure.core.exceptions.*
            raise storage_error(exc, f"storage: cannot read {name!r} from {redacted(self.uri)}") from None
        rest = b""
        for chunk in stream.chunks():
            rest += chunk
            *done, rest = rest.split(b"\n")
            for line in done:
                yield line.decode("utf-8-sig")
        if rest:
            yield rest.decode("utf-8-sig")

    def upload_lines(self, name: str, lines: Iterable[str]) -> int:
        count = [0]

        def encoded():
            for line in lines:
                count[0] += 1
                yield (line + "\n").encode("utf-8")
        try:
            self.client.upload_blob(name, encoded(), overwrite=True)
        except Exception as exc:  # azure.core.exceptions.*
            raise storage_error(exc, f"storage: cannot write {name!r} to {redacted(self.uri)} (the SAS token needs "
                                "write)") from None
        return count[0]


# Values that differ from device to device: interning them would keep a million strings alive in the
# interpreter's table (about 200 MB at a million devices: each id and etag, for the life of the task).
UNIQUE_VALUES = frozenset(("id", "deviceId", "moduleId", "eTag", "etag", "deviceEtag", "generationId", "primaryKey",
                           "secondaryKey", "primaryThumbprint", "secondaryThumbprint", "deviceScope",
                           "statusUpdatedTime", "lastActivityTime", "connectionStateUpdatedTime", "$lastUpdated"))


# Export lines: names and short repeated values ("sas", "enabled", a tag, a twin etag) shared by every line.
_shared_strings = shared_pairs(UNIQUE_VALUES, 16)


def json_lines(lines: Iterable[str]) -> Iterator[Dict[str, Any]]:
    """The JSON objects of devices.txt or importErrors.log; a first line may be a note to the user (skipped)."""
    for line in lines:
        text = line.strip()
        if text.startswith("{"):
            yield json.loads(text, object_pairs_hook=_shared_strings)


class JobRunner:
    def __init__(self, client, budget_seconds: float, timeout_seconds: float, clock=time.monotonic, sleep=time.sleep):
        self.client = client
        self.budget = budget_seconds
        self.timeout = timeout_seconds
        self.clock, self.sleep = clock, sleep
        self.records: List[Dict[str, Any]] = []  # for the result: id, type, status, seconds, devices

    def _active(self) -> Optional[Dict[str, Any]]:
        for job in self.client.list_jobs():
            if job.get("type") in ("import", "export") and job.get("status") in ACTIVE:
                return job
        return None

    def _create(self, body: Dict[str, Any]) -> Dict[str, Any]:
        """Create the job once no other import/export job is active; wait (bounded), never cancel another."""
        start = self.clock()
        waits = 0
        while True:
            active = self._active()
            if active is None:
                r = self.client.create_job(body)
                if r.status_code in (200, 201):
                    return r.json()
                if r.status_code not in (403, 409, 429):  # 403 JobQuotaExceeded: one started in between
                    err = error_from_response(r, f"create the {body['type']} job")
                    if r.status_code == 400 and "BlobContainer" in (err.code or ""):
                        raise IoTApiError(f"{err}; storage_container_uri {redacted(body.get('outputBlobContainerUri') or '')}"
                                          " must let IoT Hub read, write, list and delete", err.status, err.code,
                                          err.service_message, err.request_id) from None
                    raise err
            if self.clock() - start > self.budget:
                who = f"job {active['jobId']} ({active['type']}, {active['status']})" if active else "another job"
                raise IoTApiError(f"{who} kept the hub's single import/export slot for {self.budget:g} s "
                                  "(retry_budget_seconds); it is never cancelled by this module: run again later")
            self.sleep(POLL_SECONDS[min(waits, len(POLL_SECONDS) - 1)])
            waits += 1

    def run(self, body: Dict[str, Any], devices: int) -> Dict[str, Any]:
        started = self.clock()
        job = self._create(body)
        polls = 0
        while job.get("status") not in ("completed", "failed", "cancelled"):
            if self.clock() - started > self.timeout:
                raise IoTApiError(f"{body['type']} job {job.get('jobId')} did not end within {self.timeout:g} s "
                                  "(job_timeout_seconds); it keeps running in the hub")
            self.sleep(POLL_SECONDS[min(polls, len(POLL_SECONDS) - 1)])
            polls += 1
            polled = self.client.get_job(job["jobId"])
            if polled is None:
                raise IoTApiError(f"poll job {job['jobId']}: the job is gone (HTTP 404)", 404, "JobNotFound")
            job = polled
        self.records.append({"id": job.get("jobId"), "type": body["type"], "status": job.get("status"),
                             "seconds": round(self.clock() - started, 1), "devices": devices})
        if job["status"] != "completed":
            raise JobFailed(f"{body['type']} job {job.get('jobId')} ended {job['status']}: "
                            f"{job.get('failureReason') or 'no reason given'}; a re-run converges")
        return job


# Numeric error codes of importErrors.log: the first three digits are the HTTP status (iot-api.md §2.3).
IMPORT_ERRORS = "importErrors.log"  # written by the hub next to the input blob
IMPORT_ERROR_NAMES = {409: "DeviceAlreadyExists", 404: "DeviceNotFound", 412: "PreconditionFailed"}
IDENTITY_OPTIONS = ("status", "status_reason", "auth_type", "primary_key", "secondary_key", "primary_thumbprint",
                    "secondary_thumbprint", "edge_enabled", "parent")


class FleetJobs:
    """The import/export path of iothub_device_bulk: when to use it, and the two jobs in the reconciler's terms."""

    def __init__(self, client, uri: str, mode: str, threshold_devices: int, threshold_writes: int,
                 budget_seconds: float, timeout_seconds: float, uid: str):
        check_container_uri(uri)
        self.client, self.uri, self.mode = client, uri, mode
        self.threshold_devices, self.threshold_writes = threshold_devices, threshold_writes
        self.runner = JobRunner(client, budget_seconds, timeout_seconds)
        self.uid = uid
        self._container: Optional[Container] = None

    @property
    def container(self) -> Container:
        if self._container is None:
            self._container = Container(self.uri)
        return self._container

    def read_by_export(self, declared: int) -> bool:
        return self.mode == "always" or (self.mode == "auto" and declared >= self.threshold_devices)

    def write_by_import(self, changed: int) -> bool:
        return self.mode == "always" or (self.mode == "auto" and changed >= self.threshold_writes)

    @staticmethod
    def export_keys(specs) -> bool:
        """Export the keys only when they must be compared (declared) or kept (an identity may be rewritten: a
        rewrite without them regenerates them)."""
        return any(getattr(s, o) is not None for s in specs for o in IDENTITY_OPTIONS)

    def export(self, keys: bool, devices: int) -> Iterator[Dict[str, Any]]:
        name = f"fleet-export-{self.uid}.txt"
        self.runner.run({"type": "export", "outputBlobContainerUri": self.uri, "outputBlobName": name,
                         "excludeKeysInExport": not keys}, devices)
        record = self.runner.records[-1]
        record["devices"] = 0  # what the job exported (the whole registry), counted as it is read
        try:
            for device in json_lines(self.container.lines(name)):
                record["devices"] += 1
                yield device
        finally:
            self._delete(name)  # it may hold keys: it does not stay in the container

    def import_entries(self, entries: List[tuple]) -> Dict[str, tuple]:
        """Write bulk entries ((device id, import mode, JSON) each) as an import job's devices.txt;
        {device id: (error or None, maybe_applied)}."""
        name = f"fleet-import-{self.uid}-{len(self.runner.records)}.txt"
        self.container.upload_lines(name, (text for _did, _mode, text in entries))
        try:
            self.runner.run({"type": "import", "inputBlobContainerUri": self.uri, "outputBlobContainerUri": self.uri,
                             "inputBlobName": name}, len(entries))
        except JobFailed as exc:
            self._delete(IMPORT_ERRORS)  # the job's log does not stay in the container either
            return {did: ({"deviceId": did, "errorCode": "ImportJobFailed", "errorStatus": str(exc),
                           "operation": mode}, True) for did, mode, _text in entries}
        finally:
            self._delete(name)
        errors: Dict[str, Dict[str, Any]] = {}
        try:
            for err in json_lines(self.container.lines(IMPORT_ERRORS)):
                did = err.get("deviceId") or err.get("id")
                code = err.get("errorCode")
                name_ = IMPORT_ERROR_NAMES.get(int(str(code)[:3])) if str(code)[:3].isdigit() else None
                errors[did] = {"deviceId": did, "errorCode": name_ or str(code), "errorStatus": err.get("errorStatus"),
                               "operation": None}
        finally:
            self._delete(IMPORT_ERRORS)
        out: Dict[str, tuple] = {}
        for did, mode, _text in entries:
            err = errors.get(did)
            if err is not None:
                err["operation"] = mode
            out[did] = (err, False)
        return out

    def _delete(self, name: str) -> None:
        try:
            self.container.client.delete_blob(name)
        except Exception:  # pylint: disable=broad-except
            pass  # best effort: a blob left behind does not change the result
