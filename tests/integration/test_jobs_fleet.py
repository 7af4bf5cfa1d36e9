"""Fleets of 100,000 devices and more: iothub_device_bulk through import and export jobs on a real blob service
(Azurite), against the emulator."""

from __future__ import annotations

import uuid

from helpers import counting, play, task

N = 20_000


def bulk(ansible, uri, devices, check=False, expect_rc=0, **opts):
    r = ansible.run(play(task("fleet", "iothub_device_bulk", devices=devices, storage_container_uri="{{ uri }}",
                              **opts)), extra_vars={"uri": uri}, check=check, verbosity=0, diff=False)
    assert r.rc == expect_rc, r.output[-3000:]
    return r.task("fleet").result


def fleet(status_of=lambda i: None):
    out = []
    for i in range(N):
        d = {"device_id": f"s{i:06d}", "tags": {"plant": "p7"}}
        if status_of(i):
            d["status_reason"] = status_of(i)
        out.append(d)
    return out


def test_first_apply_no_op_and_drift_through_jobs(ansible, emulator, hub, azurite):
    uri = azurite.container_uri(f"fleet{uuid.uuid4().hex[:8]}")
    devices = fleet()
    with counting(emulator) as w:
        chk = bulk(ansible, uri, devices, check=True)
    assert chk["counts"]["created"] == N and len(chk["created"]) == 1000  # the lists stop at report_ids_limit
    assert w.writes == 0 and w.delta("bulk_calls") == 0
    assert [j["type"] for j in chk["jobs"]] == ["export"]
    with counting(emulator) as w:
        res = bulk(ansible, uri, devices)
    assert res["counts"]["created"] == N and not res["failed_devices"]
    assert [j["type"] for j in res["jobs"]] == ["export", "import"] and res["jobs"][1]["devices"] == N
    assert w.delta("bulk_calls") == 0 and w.delta("query_pages") == 0 and w.delta("jobs_created") == 2
    assert hub.request("GET", "/twins/s019999").json()["tags"] == {"plant": "p7"}
    hub.put_device("not-declared", {"deviceId": "not-declared"})
    with counting(emulator) as w:
        again = bulk(ansible, uri, devices)
    assert not again["changed"] and again["counts"]["unchanged"] == N
    assert [j["type"] for j in again["jobs"]] == ["export"]
    assert again["jobs"][0]["devices"] == N + 1  # what the export processed: the registry, not the declaration
    assert w.delta("query_pages") == 0 and w.writes == 0 and w.delta("registry_reads") == 0
    drifted = fleet(lambda i: "drift" if i % 100 == 0 else None)  # 1 %: 200 devices
    keys = hub.get_device("s000100").json()["authentication"]["symmetricKey"]
    with counting(emulator) as w:
        res = bulk(ansible, uri, drifted)
    assert len(res["updated"]) == 200 and [j["type"] for j in res["jobs"]] == ["export"]
    assert w.delta("bulk_calls") == 2 and w.delta("registry_reads") == 0  # keys came with the export
    assert hub.get_device("s000100").json()["authentication"]["symmetricKey"] == keys
    leftovers = [b.name for b in __import__("azure.storage.blob", fromlist=["ContainerClient"])
                 .ContainerClient.from_container_url(uri).list_blobs() if b.name.startswith("fleet-")]
    assert leftovers == []  # exports (they may hold keys) and import inputs are deleted


def test_a_failing_line_and_a_container_without_write(ansible, emulator, hub, azurite):
    uri = azurite.container_uri(f"lines{uuid.uuid4().hex[:8]}")
    emulator.refuse("bad-000", code="ArgumentInvalid")
    devices = [f"bad-{i:03d}" for i in range(20)]
    res = bulk(ansible, uri, devices, expect_rc=2, job_mode="always")
    assert [f["deviceId"] for f in res["failed_devices"]] == ["bad-000"] and len(res["created"]) == 19
    assert res["changed"] and "1 device(s) failed" in res["msg"]
    again = bulk(ansible, uri, devices, job_mode="always")
    assert again["created"] == ["bad-000"]
    read_only = azurite.container_uri(f"ro{uuid.uuid4().hex[:8]}", "rl")
    with counting(emulator) as w:
        r = ansible.run(play(task("fleet", "iothub_device_bulk", devices=["x"], job_mode="always",
                                  storage_container_uri="{{ uri }}")), extra_vars={"uri": read_only})
    msg = r.task("fleet").result["msg"]
    assert r.rc != 0 and "write" in msg and "delete" in msg and "storage_container_uri" in msg and w.writes == 0
    assert "sig=" not in r.output  # the SAS token is no_log
    assert "error" not in r.task("fleet").result  # an input error: no dictionary of nulls beside the message
    assert azurite.blobs(uri) == []  # neither devices.txt nor importErrors.log stays in the container


def test_registry_export_module(ansible, emulator, hub, azurite):
    uri = azurite.container_uri(f"backup{uuid.uuid4().hex[:8]}")
    hub.bulk([{"id": f"e{i}", "importMode": "create"} for i in range(30)])
    with counting(emulator) as w:
        chk = ansible.run(play(task("x", "iothub_registry_export", storage_container_uri="{{ uri }}")),
                          extra_vars={"uri": uri}, check=True)
    assert chk.rc == 0 and chk.task("x").changed and w.delta("jobs_created") == 0
    r = ansible.run(play(task("x", "iothub_registry_export", storage_container_uri="{{ uri }}", include_keys=True,
                              blob_name="backup.txt")), extra_vars={"uri": uri})
    assert r.rc == 0, r.output[-3000:]
    res = r.task("x").result
    assert res["blob_name"] == "backup.txt" and res["devices"] == 30 and res["keys_included"]
    assert res["job"]["status"] == "completed"


def test_the_export_keeps_keys_only_for_rewrites_and_a_new_parent_never_costs_a_key(ansible, emulator, hub, azurite):
    """The export's keys are kept only for devices whose identity the plan rewrites.  A device that moves below a
    gateway created in the same run is decided once the whole export is read (its parent is not in it): its keys
    are kept, its identity is rewritten with them, and no device loses a key or needs a GET."""
    uri = azurite.container_uri(f"keys{uuid.uuid4().hex[:8]}")
    devices = [{"device_id": f"k{i:02d}", "status_reason": "r"} for i in range(30)]
    bulk(ansible, uri, devices, job_mode="always")
    before = {d["device_id"]: hub.get_device(d["device_id"]).json()["authentication"]["symmetricKey"]
              for d in devices}
    moved = [{"device_id": "gw-new", "edge_enabled": True}] + [
        {**d, "parent": "gw-new"} if d["device_id"] in ("k03", "k17") else
        {**d, "status_reason": "changed"} if d["device_id"] == "k09" else d for d in devices]
    with counting(emulator) as w:
        res = bulk(ansible, uri, moved, job_mode="always")
    assert res["created"] == ["gw-new"] and res["updated"] == ["k03", "k09", "k17"]
    # one GET: the new gateway's scope, which only a read tells; the rewritten devices' keys came with the export
    assert w.delta("registry_reads") == 1
    gw_scope = hub.get_device("gw-new").json()["deviceScope"]
    for d in devices:
        now = hub.get_device(d["device_id"]).json()
        assert now["authentication"]["symmetricKey"] == before[d["device_id"]], d["device_id"]
    assert hub.get_device("k03").json()["deviceScope"] == gw_scope
