"""Import and export jobs: ``POST /jobs/create``, ``GET /jobs/{id}``, ``GET /jobs``, ``DELETE /jobs/{id}``
(iot-api-2.md §3), reading and writing the container through ``azure-storage-blob`` (so it works against Azurite
and any real blob endpoint).

Recorded: create answers 200 with ``status: enqueued``; the job goes ``running`` then ``completed`` (or
``failed`` with ``failureReason``, or ``cancelled``) with ``progress`` 0 to 100 and ``endTimeUtc`` at the end;
``devices.txt`` is one ``ExportImportDevice`` JSON object per line, modules on lines of their own; an absent
``importMode`` is ``createOrUpdate``; a ``completed`` job can still have failed lines, written to
``importErrors.log`` in the output container.  Documented: one active import or export job per hub; keys exported
as null with ``excludeKeysInExport``.  PEER (strict side taken): a second active job is 403 ``JobQuotaExceeded``;
a container the hub cannot use is a synchronous 400 ``BlobContainerValidationError`` ("Unauthorized to write to
output blob container"); the job record never echoes the container URIs; with ``excludeKeysInExport`` the blob
starts with a plain-text line.  ``updateTwin`` lines follow ``--bulk-twin-mode``.
"""

from __future__ import annotations

import asyncio
import copy
import datetime as _dt
import json
import urllib.parse
import uuid
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from .errors import ApiError, bad_request

TERMINAL = ("completed", "failed", "cancelled")
ACTIVE = ("enqueued", "running")
BATCH = 500
NUMERIC_CODES = {"DeviceAlreadyExists": 409001, "DeviceNotFound": 404001, "ModuleNotFound": 404010,
                 "ModuleAlreadyExistsOnDevice": 409301, "PreconditionFailed": 412002, "ArgumentInvalid": 400004,
                 "InvalidDeviceScope": 400027, "IotHubFormatError": 400012, "ArgumentNull": 400005}
EXCLUDED_KEYS_NOTE = "Keys were excluded from this export (excludeKeysInExport: true)."


def _now() -> str:
    dt = _dt.datetime.now(_dt.timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond:06d}0Z"


def sas_permissions(uri: str) -> str:
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(uri).query)
    return (query.get("sp") or [""])[0]


def container_client(uri: str):
    from azure.storage.blob import ContainerClient  # imported on the jobs path only
    return ContainerClient.from_container_url(uri)


def check_container(uri: Any, role: str, needs: str) -> None:
    """The synchronous validation of a container the job will use: 400 BlobContainerValidationError otherwise.
    The SAS token's permissions are read, then each needed right is tried for real (list, write and delete a
    probe blob), as a container SAS cannot read the container's properties."""
    if not isinstance(uri, str) or not uri.startswith(("https://", "http://")):
        raise ApiError(400, "BlobContainerValidationError", f"The {role} blob container URI is missing or invalid")
    perms = sas_permissions(uri)
    words = {"w": "write to", "r": "read from", "d": "delete from", "l": "list"}
    for p in needs:
        if perms and p not in perms:
            raise ApiError(400, "BlobContainerValidationError", f"Unauthorized to {words[p]} {role} blob container")
    step = "r"
    try:
        client = container_client(uri)
        next(iter(client.list_blobs(results_per_page=1)), None)
        if "w" in needs:
            step = "w"
            probe = f".iothub-probe-{uuid.uuid4().hex}"
            client.upload_blob(probe, b"", overwrite=True)
            step = "d"
            client.delete_blob(probe)
    except Exception as exc:  # azure.core errors: the hub says the container cannot be used that way
        raise ApiError(400, "BlobContainerValidationError",
                       f"Unauthorized to {words[step]} {role} blob container ({type(exc).__name__})") from None


class JobStore:
    def __init__(self, emu):
        self.emu = emu
        self.reg = emu.registry
        self.jobs: dict[str, dict] = {}
        self.tasks: dict[str, asyncio.Task] = {}

    def reset(self) -> None:
        for task in self.tasks.values():
            task.cancel()
        self.jobs.clear()
        self.tasks.clear()

    def public(self, job: dict) -> dict:
        return {k: v for k, v in job.items() if not k.startswith("_")}

    def create(self, body: Any) -> dict:
        if not isinstance(body, dict) or body.get("type") not in ("import", "export"):
            raise bad_request("type must be import or export")
        if any(j["status"] in ACTIVE and j["type"] in ("import", "export") for j in self.jobs.values()):
            # "Only one active device import or export job is allowed at a time for all IoT Hub tiers."
            raise ApiError(403, "JobQuotaExceeded", "Only one active device import or export job is allowed at a time")
        out_uri = body.get("outputBlobContainerUri")
        if body["type"] == "export":
            check_container(out_uri, "output", "wrd")
        else:
            check_container(body.get("inputBlobContainerUri"), "input", "r")
            check_container(out_uri or body.get("inputBlobContainerUri"), "output", "wrd")
        job_id = str(uuid.uuid4())
        job = {"jobId": job_id, "startTimeUtc": _now(), "type": body["type"], "status": "enqueued", "progress": 0,
               "excludeKeysInExport": bool(body.get("excludeKeysInExport", False)),
               "useSecondaryStorageAsSource": False,
               "_in": body.get("inputBlobContainerUri"), "_out": out_uri or body.get("inputBlobContainerUri"),
               "_input_blob": body.get("inputBlobName") or "devices.txt",
               "_output_blob": body.get("outputBlobName") or "devices.txt",
               "_configurations": bool(body.get("includeConfigurations")),
               "_configurations_blob": body.get("configurationsBlobName") or "configurations.txt"}
        self.jobs[job_id] = job
        self.emu.stats.jobs_created += 1
        self.tasks[job_id] = asyncio.get_running_loop().create_task(self._run(job))
        return self.public(job)

    def get(self, job_id: str) -> dict:
        job = self.jobs.get(job_id)
        if job is None:
            raise ApiError(404, "JobNotFound", f"Job {job_id!r} not found")
        return self.public(job)

    def cancel(self, job_id: str) -> dict:
        job = self.jobs.get(job_id)
        if job is None:
            raise ApiError(404, "JobNotFound", f"Job {job_id!r} not found")
        if job["status"] in ACTIVE:
            job["status"] = "cancelled"
            job["endTimeUtc"] = _now()
            task = self.tasks.get(job_id)
            if task is not None:
                task.cancel()
        return self.public(job)

    async def _run(self, job: dict) -> None:
        await asyncio.sleep(0.05)  # enqueued first, as recorded
        if job["status"] == "cancelled":
            return
        job["status"] = "running"
        try:
            if job["type"] == "export":
                await self._export(job)
            else:
                await self._import(job)
        except asyncio.CancelledError:
            return
        except ApiError as err:
            job.update(status="failed", failureReason=f"{err.code}: {err.message}", endTimeUtc=_now())
            return
        except Exception as exc:  # blob errors while running: the job fails with a reason
            job.update(status="failed", failureReason=f"{type(exc).__name__}: {exc}", endTimeUtc=_now())
            return
        if job["status"] == "running":
            job.update(status="completed", progress=100, endTimeUtc=_now(), failureReason=None)

    # ------------------------------------------------------------------ export
    def _export_lines(self, device_ids: list, exclude_keys: bool):
        reg = self.reg
        for did in device_ids:
            dev = reg.devices.get(did)
            if dev is None:
                continue
            tw = reg.twins[did]
            line = {"id": did, "eTag": dev["etag"], "status": dev["status"], "statusReason": dev.get("statusReason"),
                    "authentication": copy.deepcopy(dev["authentication"]),
                    "capabilities": copy.deepcopy(dev["capabilities"]), "twinETag": reg._twin_doc(did)["etag"],
                    "tags": copy.deepcopy(tw["tags"]),
                    "properties": {"desired": dict(copy.deepcopy(tw["desired"]), **{"$version": tw["desired_version"]}),
                                   "reported": dict(copy.deepcopy(tw["reported"]), **{"$version": tw["reported_version"]})}}
            if dev.get("deviceScope"):
                line["deviceScope"] = dev["deviceScope"]
            if dev.get("parentScopes"):
                line["parentScopes"] = list(dev["parentScopes"])
            if exclude_keys:
                line["authentication"]["symmetricKey"] = {"primaryKey": None, "secondaryKey": None}
            yield json.dumps(line, separators=(",", ":"))
            for mid, mod in reg.modules.get(did, {}).items():
                mline = {"id": did, "moduleId": mid, "eTag": mod["etag"], "status": "enabled",
                         "authentication": None if mod["authentication"]["type"] == "none" else copy.deepcopy(mod["authentication"]),
                         "capabilities": {"iotEdge": False}}
                if exclude_keys and mline["authentication"]:
                    mline["authentication"]["symmetricKey"] = {"primaryKey": None, "secondaryKey": None}
                yield json.dumps(mline, separators=(",", ":"))

    async def _export(self, job: dict) -> None:
        ids = sorted(self.reg.devices)
        lines = [EXCLUDED_KEYS_NOTE] if job["excludeKeysInExport"] else []
        for i, line in enumerate(self._export_lines(ids, job["excludeKeysInExport"])):
            lines.append(line)
            if i % BATCH == 0:
                job["progress"] = min(90, int(90 * i / max(1, len(ids))))
                await asyncio.sleep(0)
        data = ("\n".join(lines) + "\n").encode() if lines else b""
        await asyncio.to_thread(self._upload, job["_out"], job["_output_blob"], data)
        self.emu.stats.job_devices_exported += len(ids)
        if job["_configurations"]:  # one Configuration per line (iot-api-2.md §3.4)
            cfgs = [json.dumps(c, separators=(",", ":")) for _i, c in sorted(self.emu.configurations.items.items())]
            await asyncio.to_thread(self._upload, job["_out"], job["_configurations_blob"],
                                    ("\n".join(cfgs) + "\n").encode() if cfgs else b"")

    @staticmethod
    def _upload(uri: str, name: str, data: bytes) -> None:
        container_client(uri).upload_blob(name, data, overwrite=True)

    @staticmethod
    def _download(uri: str, name: str) -> bytes:
        return container_client(uri).download_blob(name).readall()

    # ------------------------------------------------------------------ import
    async def _import(self, job: dict) -> None:
        raw = await asyncio.to_thread(self._download, job["_in"], job["_input_blob"])
        lines = [ln for ln in raw.decode("utf-8-sig").splitlines() if ln.strip()]
        errors: list[str] = []
        imported = 0
        for i, text in enumerate(lines):
            if job["status"] == "cancelled":
                return
            try:
                entry = json.loads(text)
                if not isinstance(entry, dict) or not isinstance(entry.get("id"), str):
                    raise ApiError(400, "IotHubFormatError", f"Invalid device format in line: {text[:200]}")
                self._import_one(entry)
                imported += 1
            except ValueError:
                errors.append(json.dumps({"errorCode": 400012, "errorStatus":
                                          f"Invalid device format in line: {text[:200]}"}))
            except ApiError as err:
                e = entry if isinstance(entry, dict) else {}
                errors.append(json.dumps({"deviceId": e.get("id"), "moduleId": e.get("moduleId"),
                                          "errorCode": NUMERIC_CODES.get(err.code, err.status * 1000),
                                          "errorStatus": f"{err.code}: {err.message}"}))
            if i % BATCH == 0:
                job["progress"] = min(90, int(90 * i / max(1, len(lines))))
                self.emu.persist()
                await asyncio.sleep(0)
        self.emu.stats.job_devices_imported += imported
        self.emu.stats.registry_writes += imported
        self.emu.persist()
        data = ("\n".join(errors) + "\n").encode() if errors else b""
        await asyncio.to_thread(self._upload, job["_out"], "importErrors.log", data)

    def _import_one(self, entry: dict) -> None:
        """One line: the bulk entry rules (import modes), plus the import-only createOrUpdate modes."""
        mode = entry.get("importMode") or "createOrUpdate"
        did = entry["id"]
        exists = (did in self.reg.devices if not entry.get("moduleId")
                  else entry["moduleId"] in self.reg.modules.get(did, {}))
        if mode == "createOrUpdate":
            mode = "update" if exists else "create"
        elif mode == "createOrUpdateIfMatchETag":
            mode = "updateIfMatchETag" if exists else "create"
        self.reg._bulk_one(dict(entry, importMode=mode))


def routes(emu) -> list:
    store = emu.jobs

    @emu.hub_route("/jobs/create", ["POST"], "jobs_create")
    async def create(request: Request) -> Response:
        emu.guard(request, "RegistryWrite", kind=None)
        return emu.json(store.create(await emu.read_json(request)))

    @emu.hub_route("/jobs", ["GET"], "jobs_list")
    async def listing(request: Request) -> Response:
        emu.guard(request, "RegistryRead", kind=None)
        return emu.json([store.public(j) for j in store.jobs.values()])

    @emu.hub_route("/jobs/{job_id}", ["GET", "DELETE"], "job")
    async def job(request: Request) -> Response:
        job_id = request.path_params["job_id"]
        if request.method == "GET":
            emu.guard(request, "RegistryRead", kind=None)
            return emu.json(store.get(job_id))
        emu.guard(request, "RegistryWrite", kind=None)
        return emu.json(store.cancel(job_id))

    return [create, listing, job]
