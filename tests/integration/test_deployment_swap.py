"""content_update: swap (#23 item 10): new deployment content without an outage, against the emulator's automatic
device management (--adm-delay-s).  While the swap runs, every targeted device's twin is polled: it must carry a
complete deployment (the old one or the new one) at every poll."""

from __future__ import annotations

import copy
import threading

from helpers import counting, play, run_ok, task

from test_edge_deployments import MANIFEST

TARGET = "tags.site = 'plant-7'"


def manifest(image: str) -> dict:
    m = copy.deepcopy(MANIFEST)
    m["modulesContent"]["$edgeAgent"]["properties.desired"]["modules"]["sensor"]["settings"]["image"] = image
    return m


def deploy(image: str, **more):
    args = {"content_update_timeout": 60, **more}
    return task("d", "iothub_configuration", id="plant7", content=manifest(image), target_condition=TARGET,
                priority=10, content_update="swap", **args)


def wait_applied(hub, cfg_id: str, n: int) -> None:
    """Until the hub reports CFG_ID applied to N devices (the emulator applies it after its delay): a wait for a
    state, bounded, not a timing assertion."""
    for _ in range(600):
        if hub.request("GET", f"/configurations/{cfg_id}").json()["systemMetrics"]["results"]["appliedCount"] >= n:
            return
        threading.Event().wait(0.05)
    raise AssertionError(f"{cfg_id} was not applied to {n} devices")


def sensor_image(hub, did):
    desired = hub.request("GET", f"/twins/{did}/modules/$edgeAgent").json()["properties"]["desired"]
    return ((desired.get("modules") or {}).get("sensor") or {}).get("settings", {}).get("image")


def test_swap_replaces_content_without_an_outage(ansible, emulator, hub):
    emulator.configure(adm_delay_s=1.0)
    gateways = [f"gw{i}" for i in range(3)]
    for did in gateways + ["elsewhere"]:
        hub.put_device(did, {"deviceId": did, "capabilities": {"iotEdge": True}})
        site = "plant-7" if did != "elsewhere" else "plant-8"
        hub.request("PATCH", f"/twins/{did}", json={"tags": {"site": site}}, headers={"If-Match": "*"})
    other = {"id": "unrelated", "content": {"deviceContent": {"properties.desired.x": 1}}, "targetCondition": "*",
             "priority": 1, "labels": {"fleetAzureIotDeployment": "someone-else"}}
    hub.request("PUT", "/configurations/unrelated", json=other)
    run_ok(ansible, play(deploy("x/sensor:1")))
    run_ok(ansible, play(task("wait", "iothub_configuration", id="plant7", content=manifest("x/sensor:1"),
                              content_update="swap")))  # the same content: nothing to do
    seen, done = [], threading.Event()

    def watch():
        while not done.is_set():
            seen.append({did: sensor_image(hub, did) for did in gateways})
    with counting(emulator) as w:
        chk = run_ok(ansible, play(deploy("x/sensor:2")), check=True)
    assert w.writes == 0 and chk.task("d").result["action"] == "swap" and chk.task("d").changed
    wait_applied(hub, "plant7", 3)  # generation 1 runs everywhere first: the swap has a deployment to keep
    assert all(sensor_image(hub, did) == "x/sensor:1" for did in gateways)
    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        r = run_ok(ansible, play(deploy("x/sensor:2")))
    finally:
        done.set()
        watcher.join()
    res = r.task("d").result
    assert res["action"] == "swap" and res["configuration"]["id"] == "plant7-g2" and res["changed"]
    assert len(seen) > 3 and all(img in ("x/sensor:1", "x/sensor:2") for poll in seen for img in poll.values()), seen
    assert {img for poll in seen for img in poll.values()} == {"x/sensor:1", "x/sensor:2"}  # it moved under watch
    assert all(sensor_image(hub, did) == "x/sensor:2" for did in gateways)
    ids = sorted(c["id"] for c in hub.request("GET", "/configurations").json())
    assert ids == ["plant7-g2", "unrelated"]  # the old generation is gone; nothing else was touched
    g2 = hub.request("GET", "/configurations/plant7-g2").json()
    assert g2["priority"] == 10 and g2["labels"]["fleetAzureIotDeployment"] == "plant7"
    with counting(emulator) as w:
        again = run_ok(ansible, play(deploy("x/sensor:2")))
    assert w.writes == 0 and not again.task("d").changed  # a re-run with the same content does nothing
    run_ok(ansible, play(deploy("x/sensor:3")))  # generation 3
    assert sorted(c["id"] for c in hub.request("GET", "/configurations").json()) == ["plant7-g3", "unrelated"]
    gone = run_ok(ansible, play(task("d", "iothub_configuration", id="plant7", state="absent", content_update="swap")))
    assert gone.task("d").changed
    assert [c["id"] for c in hub.request("GET", "/configurations").json()] == ["unrelated"]


def test_a_swap_that_times_out_keeps_the_old_generation_and_a_rerun_finishes_it(ansible, emulator, hub):
    emulator.configure(adm_delay_s=3600)  # the hub never gets to apply the new generation in time
    hub.put_device("t1", {"deviceId": "t1", "capabilities": {"iotEdge": True}})
    hub.request("PATCH", "/twins/t1", json={"tags": {"site": "plant-7"}}, headers={"If-Match": "*"})
    run_ok(ansible, play(task("d", "iothub_configuration", id="plant7", content=manifest("x/sensor:1"),
                              target_condition=TARGET, priority=10)))
    r = ansible.run(play(deploy("x/sensor:2", content_update_timeout=0.5)))
    res = r.task("d").result
    assert r.rc != 0 and res["changed"] is True and "is kept" in res["msg"]
    assert sorted(c["id"] for c in hub.request("GET", "/configurations").json()) == ["plant7", "plant7-g2"]
    emulator.configure(adm_delay_s=0)
    hub.request("PUT", "/configurations/plant7-g2", json=dict(hub.request("GET", "/configurations/plant7-g2").json(),
                                                              priority=12), headers={"If-Match": "*"})
    again = run_ok(ansible, play(deploy("x/sensor:2")))
    assert again.task("d").changed
    assert [c["id"] for c in hub.request("GET", "/configurations").json()] == ["plant7-g2"]
    assert sensor_image(hub, "t1") == "x/sensor:2"
