"""Import and export jobs against a real blob service (Azurite), as recorded (iot-api-2.md §3)."""

from __future__ import annotations

import json
import time
import uuid

import pytest


def wait(hub, job_id, timeout=60):
    deadline = time.monotonic() + timeout
    seen = []
    while True:
        job = hub.request("GET", f"/jobs/{job_id}").json()
        seen.append(job["status"])
        if job["status"] in ("completed", "failed", "cancelled"):
            return job, seen
        assert time.monotonic() < deadline, seen
        time.sleep(0.05)


def blob_lines(azurite, uri, name):
    from azure.storage.blob import ContainerClient
    data = ContainerClient.from_container_url(uri).download_blob(name).readall().decode()
    return [ln for ln in data.splitlines() if ln.strip()]


@pytest.fixture
def container(azurite):
    return azurite.container_uri(f"c{uuid.uuid4().hex[:10]}")


def test_export_lifecycle_and_lines(hub, emulator, container, azurite):
    gw = hub.put_device("gw", {"deviceId": "gw", "capabilities": {"iotEdge": True}}).json()
    hub.put_device("leaf", {"deviceId": "leaf", "deviceScope": gw["deviceScope"]})
    hub.request("PATCH", "/twins/leaf", json={"tags": {"a": 1}})
    r = hub.request("POST", "/jobs/create", json={"type": "export", "outputBlobContainerUri": container,
                                                  "excludeKeysInExport": False})
    assert r.status_code == 200 and r.json()["status"] == "enqueued" and r.json()["progress"] == 0
    assert "outputBlobContainerUri" not in r.json()
    job, seen = wait(hub, r.json()["jobId"])
    assert job["status"] == "completed" and job["progress"] == 100 and job["endTimeUtc"]
    lines = [json.loads(ln) for ln in blob_lines(azurite, container, "devices.txt")]
    devices = {ln["id"]: ln for ln in lines if "moduleId" not in ln}
    assert set(devices) == {"gw", "leaf"} and devices["leaf"]["tags"] == {"a": 1}
    assert devices["leaf"]["deviceScope"] == gw["deviceScope"] and devices["gw"]["deviceScope"] == gw["deviceScope"]
    assert devices["leaf"]["authentication"]["symmetricKey"]["primaryKey"]
    assert {(ln["id"], ln["moduleId"]) for ln in lines if "moduleId" in ln} == {("gw", "$edgeAgent"), ("gw", "$edgeHub")}
    r = hub.request("POST", "/jobs/create", json={"type": "export", "outputBlobContainerUri": container,
                                                  "excludeKeysInExport": True, "outputBlobName": "nokeys.txt"})
    wait(hub, r.json()["jobId"])
    nokeys = blob_lines(azurite, container, "nokeys.txt")
    assert not nokeys[0].startswith("{")  # a plain-text note first (PEER)
    assert all(json.loads(ln)["authentication"] is None or json.loads(ln)["authentication"]["symmetricKey"]["primaryKey"] is None
               for ln in nokeys[1:])
    stats = emulator.stats()
    assert stats["jobs_created"] == 2 and stats["job_devices_exported"] == 4
    assert [j["type"] for j in hub.request("GET", "/jobs").json()] == ["export", "export"]


def test_import_modes_and_errors_log(hub, emulator, container, azurite):
    from azure.storage.blob import ContainerClient
    hub.put_device("old", {"deviceId": "old"})
    lines = [{"id": "n1"}, {"id": "n2", "importMode": "create", "tags": {"t": 1}},
             {"id": "old", "importMode": "create"},  # exists: a line error, the job still completes
             {"id": "old", "importMode": "updateTwin", "tags": {"x": 1}}]
    ContainerClient.from_container_url(container).upload_blob(
        "devices.txt", "\n".join(json.dumps(x) for x in lines) + "\nnot json\n", overwrite=True)
    r = hub.request("POST", "/jobs/create", json={"type": "import", "inputBlobContainerUri": container,
                                                  "outputBlobContainerUri": container})
    job, _ = wait(hub, r.json()["jobId"])
    assert job["status"] == "completed" and job.get("failureReason") is None
    assert hub.get_device("n1").status_code == 200  # no importMode: createOrUpdate
    assert hub.request("GET", "/twins/n2").json()["tags"] == {"t": 1}
    assert hub.request("GET", "/twins/old").json()["tags"] == {"x": 1}
    errors = [json.loads(ln) for ln in blob_lines(azurite, container, "importErrors.log")]
    assert {e.get("deviceId") for e in errors} == {"old", None}
    assert any(e.get("errorCode") == 409001 for e in errors) and any(e["errorCode"] == 400012 for e in errors)
    assert emulator.stats()["job_devices_imported"] == 3


def test_one_active_job_and_container_validation(hub, emulator, container, azurite):
    for start in range(0, 3000, 100):
        hub.bulk([{"id": f"d{i:05d}", "importMode": "create"} for i in range(start, start + 100)])
    first = hub.request("POST", "/jobs/create", json={"type": "export", "outputBlobContainerUri": container})
    second = hub.request("POST", "/jobs/create", json={"type": "export", "outputBlobContainerUri": container})
    assert second.status_code == 403 and second.headers["iothub-errorcode"] == "JobQuotaExceeded"
    wait(hub, first.json()["jobId"])
    no_delete = azurite.container_uri("nodelete", "rwl")
    r = hub.request("POST", "/jobs/create", json={"type": "export", "outputBlobContainerUri": no_delete})
    assert r.status_code == 400 and r.headers["iothub-errorcode"] == "BlobContainerValidationError"
    assert "Unauthorized to delete from output blob container" in r.json()["Message"]
    missing = container.replace("/c", "/nosuchcontainer", 1)
    r = hub.request("POST", "/jobs/create", json={"type": "export", "outputBlobContainerUri": missing})
    assert r.status_code == 400 and r.headers["iothub-errorcode"] == "BlobContainerValidationError"
    assert hub.request("GET", "/jobs/no-such-job").status_code == 404


@pytest.mark.parametrize("mode", ["replace", "merge"])
def test_import_update_twin_follows_the_bulk_twin_mode(hub, emulator, container, mode):
    from azure.storage.blob import ContainerClient
    emulator.configure(bulk_twin_mode=mode)
    try:
        hub.bulk([{"id": "tw", "importMode": "create", "tags": {"a": 1, "b": 2}}])
        ContainerClient.from_container_url(container).upload_blob(
            "devices.txt", json.dumps({"id": "tw", "importMode": "updateTwin", "tags": {"b": 3}}) + "\n", overwrite=True)
        r = hub.request("POST", "/jobs/create", json={"type": "import", "inputBlobContainerUri": container,
                                                      "outputBlobContainerUri": container})
        wait(hub, r.json()["jobId"])
        assert hub.request("GET", "/twins/tw").json()["tags"] == ({"b": 3} if mode == "replace" else {"a": 1, "b": 3})
    finally:
        emulator.configure(bulk_twin_mode="replace")
