"""Twins on single devices, module identities and key rotation: real playbooks against the emulator."""

from __future__ import annotations

import base64

from helpers import counting, play, task

K1, K2, K3 = (base64.b64encode(c * 32).decode() for c in (b"1", b"2", b"3"))
TP = "AB" * 20


def run(ansible, *tasks, check=False, expect_rc=0, **kw):
    r = ansible.run(play(*tasks), check=check, **kw)
    assert r.rc == expect_rc, r.output[-3000:]
    return r


def twin(hub, path):
    doc = hub.request("GET", f"/twins/{path}").json()
    return doc.get("tags", {}), {k: v for k, v in doc["properties"]["desired"].items() if not k.startswith("$")}


# ------------------------------------------------------------------------------------ a single device's twin
def test_device_tags_and_desired(ansible, emulator, hub):
    hub.put_device("t1", {"deviceId": "t1"})
    hub.request("PATCH", "/twins/t1", json={"tags": {"owner": "ops", "old": 1}})
    args = {"device_id": "t1", "tags": {"site": "p7", "old": None, "loc": {"line": 1}},
            "desired_properties": {"interval": 30}}
    with counting(emulator) as w:
        r = run(ansible, task("t", "iothub_device", **args), check=True)
    assert r.task("t").changed and w.writes == 0
    diff = r.task("t").result["diff"]
    assert diff["before"]["tags"] == {"old": 1} and diff["after"]["tags"] == {"site": "p7", "loc": {"line": 1}}
    with counting(emulator) as w:
        r = run(ansible, task("t", "iothub_device", **args))
    res = r.task("t").result
    assert res["changed"] and res["changes"] == ["desired_properties", "tags"]
    assert w.delta("twin_reads") == 1 and w.delta("twin_writes") == 1 and w.registry_writes == 0  # no identity write
    assert twin(hub, "t1") == ({"owner": "ops", "site": "p7", "loc": {"line": 1}}, {"interval": 30})
    with counting(emulator) as w:
        again = run(ansible, task("t", "iothub_device", **args))
    assert not again.task("t").changed and w.writes == 0
    # another writer changes the twin right after the module reads it: 412, re-read, re-plan, nothing lost
    emulator.race("t1", {"tags": {"owner": "someone else"}}, target="twin")
    r = run(ansible, task("t", "iothub_device", device_id="t1", tags={"site": "p8"}))
    assert any("412" in n for n in r.task("t").result["notes"])
    assert twin(hub, "t1")[0] == {"owner": "someone else", "site": "p8", "loc": {"line": 1}}


def test_identity_and_twin_in_one_task_and_a_new_device(ansible, hub):
    r = run(ansible, task("t", "iothub_device", device_id="t2", status="disabled", tags={"a": 1},
                          desired_properties={"b": {"c": 2}}))
    assert r.task("t").result["action"] == "create"
    assert hub.get_device("t2").json()["status"] == "disabled" and twin(hub, "t2") == ({"a": 1}, {"b": {"c": 2}})
    r = run(ansible, task("t", "iothub_device", device_id="t2", status="enabled", tags={"a": 2}))
    assert r.task("t").result["changes"] == ["status", "tags"]
    assert hub.get_device("t2").json()["status"] == "enabled" and twin(hub, "t2")[0] == {"a": 2}


# ------------------------------------------------------------------------------------------- module identities
def test_module_keys_survive_updates_and_module_twin(ansible, emulator, hub):
    hub.put_device("cam", {"deviceId": "cam"})
    base = {"device_id": "cam", "module_id": "vision"}
    run(ansible, task("m", "iothub_module", **base, primary_key=K1, secondary_key=K2))
    for extra in ({"tags": {"owner": "a"}}, {"desired_properties": {"threshold": 0.8}}, {"tags": {"owner": "b"}}):
        r = run(ansible, task("m", "iothub_module", **base, **extra))
        assert r.task("m").changed
    mod = hub.request("GET", "/devices/cam/modules/vision").json()
    assert mod["authentication"]["symmetricKey"] == {"primaryKey": K1, "secondaryKey": K2}
    assert twin(hub, "cam/modules/vision") == ({"owner": "b"}, {"threshold": 0.8})
    r = run(ansible, task("m", "iothub_module", **base, primary_key=K3))
    assert r.task("m").result["changes"] == ["primary_key"]
    mod = hub.request("GET", "/devices/cam/modules/vision").json()
    assert mod["authentication"]["symmetricKey"] == {"primaryKey": K3, "secondaryKey": K2}
    with counting(emulator) as w:
        again = run(ansible, task("m", "iothub_module", **base, primary_key=K3, tags={"owner": "b"}))
    assert not again.task("m").changed and w.writes == 0
    with counting(emulator) as w:
        chk = run(ansible, task("m", "iothub_module", **base, state="absent"), check=True)
    assert chk.task("m").changed and w.writes == 0
    info = run(ansible, task("i", "iothub_module_info", device_id="cam", include_twin=True))
    mods = info.task("i").result["modules"]
    assert [m["moduleId"] for m in mods] == ["vision"] and mods[0]["twin"]["tags"] == {"owner": "b"}
    assert mods[0]["authentication"]["symmetricKey"]["primaryKey"] == "********"
    run(ansible, task("m", "iothub_module", **base, state="absent"))
    assert hub.request("GET", "/devices/cam/modules/vision").status_code == 404


def test_runtime_and_edge_managed_modules(ansible, emulator, hub):
    hub.put_device("gw", {"deviceId": "gw", "capabilities": {"iotEdge": True}})
    hub.request("PUT", "/devices/gw/modules/simtemp", json={"moduleId": "simtemp", "managedBy": "IotEdge"})
    with counting(emulator) as w:
        r = ansible.run(play(task("m", "iothub_module", device_id="gw", module_id="$edgeAgent")))
    assert r.rc != 0 and "belong to the IoT Edge runtime" in r.task("m").result["msg"] and w.delta("requests") == 0
    with counting(emulator) as w:
        r = ansible.run(play(task("m", "iothub_module", device_id="gw", module_id="simtemp", state="absent")))
    assert r.rc != 0 and "force=true" in r.task("m").result["msg"] and w.writes == 0
    run(ansible, task("m", "iothub_module", device_id="gw", module_id="simtemp", state="absent", force=True))
    info = run(ansible, task("i", "iothub_module_info", device_id="gw", module_id="$edgeAgent", include_twin=True))
    agent = info.task("i").result["modules"][0]
    assert agent["moduleId"] == "$edgeAgent" and "properties" in agent["twin"]
    q = run(ansible, task("i", "iothub_module_info", query="moduleId = '$edgeHub'"))
    assert [m["deviceId"] for m in q.task("i").result["modules"]] == ["gw"]


# -------------------------------------------------------------------------------------------- key rotation
def test_rotate_secondary_then_swap(ansible, emulator, hub):
    run(ansible, task("d", "iothub_device", device_id="rot", primary_key=K1, secondary_key=K2, tags={"x": 1}))
    with counting(emulator) as w:
        chk = run(ansible, task("d", "iothub_device", device_id="rot", rotate_keys="secondary"), check=True)
    assert chk.task("d").changed and chk.task("d").result["changes"] == ["secondary_key"] and w.writes == 0
    r = run(ansible, {**task("d", "iothub_device", device_id="rot", rotate_keys="secondary", return_secrets=True),
                      "no_log": True}, allow_secrets=True)
    keys = hub.get_device("rot").json()["authentication"]["symmetricKey"]
    assert keys["primaryKey"] == K1 and keys["secondaryKey"] not in (K1, K2)
    assert len(base64.b64decode(keys["secondaryKey"])) == 32
    new_secondary = keys["secondaryKey"]
    r = run(ansible, {**task("d", "iothub_device", device_id="rot", rotate_keys="swap", return_secrets=True),
                      "register": "out"}, {"name": "cs", "ansible.builtin.copy": {
        "content": "{{ out.connection_string }}", "dest": str(ansible.work_dir / "cs.txt"), "mode": "0600"},
        "no_log": True}, allow_secrets=True)
    keys = hub.get_device("rot").json()["authentication"]["symmetricKey"]
    assert keys == {"primaryKey": new_secondary, "secondaryKey": K1}
    assert (ansible.work_dir / "cs.txt").read_text().endswith(f"DeviceId=rot;SharedAccessKey={new_secondary}")
    assert twin(hub, "rot")[0] == {"x": 1}  # everything else kept
    # modules rotate the same way
    run(ansible, task("m", "iothub_module", device_id="rot", module_id="agent", primary_key=K1, secondary_key=K2))
    run(ansible, task("m", "iothub_module", device_id="rot", module_id="agent", rotate_keys="primary"))
    mk = hub.request("GET", "/devices/rot/modules/agent").json()["authentication"]["symmetricKey"]
    assert mk["secondaryKey"] == K2 and mk["primaryKey"] not in (K1, K2)


# ------------------------------------------------------------------------------------- include_twin at scale
def test_include_twin_on_2000_devices_without_a_get_per_device(ansible, emulator, hub):
    for start in range(0, 2000, 100):
        assert hub.bulk([{"id": f"it{i:04d}", "importMode": "create", "tags": {"n": i}}
                         for i in range(start, start + 100)]).status_code == 200
    with counting(emulator) as w:
        r = run(ansible, {**task("i", "iothub_device_info", query="SELECT * FROM devices WHERE is_defined(tags.n)",
                                 include_twin=True), "register": "fleet"},
                {"name": "check", "ansible.builtin.assert": {"that": [
                    "fleet.devices | length == 2000",
                    "fleet.devices | map(attribute='twin') | map(attribute='tags') | map(attribute='n') | sum == 1999000"]}},
                verbosity=0, diff=False)
    assert r.task("check").status == "ok"
    assert w.delta("registry_reads") == 0 and w.delta("twin_reads") == 0 and w.delta("query_pages") == 20


# ----------------------------------------------------------------------------------------------- bad input
def test_bad_input_for_the_new_options(ansible, emulator, hub):
    hub.put_device("x509", {"deviceId": "x509", "authentication": {"type": "selfSigned",
                                                                  "x509Thumbprint": {"primaryThumbprint": TP}}})
    before_any = [
        ("iothub_device", {"device_id": "d", "tags": {"bad.key": 1}}, "tags"),
        ("iothub_device", {"device_id": "d", "desired_properties": "not a dict"}, "desired_properties"),
        ("iothub_device", {"device_id": "d", "rotate_keys": "primary", "primary_key": K1}, "rotate_keys"),
        ("iothub_device", {"device_id": "d", "rotate_keys": "sideways"}, "rotate_keys"),
        ("iothub_device", {"device_id": "d", "rotate_keys": "swap", "state": "absent"}, "rotate_keys"),
        ("iothub_module", {"device_id": "d", "module_id": "$x"}, "module_id"),
        ("iothub_module", {"device_id": "d", "module_id": "bad id"}, "module_id"),
        ("iothub_module", {"device_id": "d", "module_id": "m", "auth_type": "none"}, "auth_type"),
        ("iothub_module", {"device_id": "d", "module_id": "m", "tags": {"$t": 1}}, "tags"),
        ("iothub_module_info", {"module_id": "m"}, "module_id needs device_id"),
        ("iothub_module_info", {"query": "moduleId = 'm'", "return_secrets": True}, "return_secrets"),
        ("iothub_device_bulk", {"devices": [{"device_id": "d", "rotate_keys": "primary", "primary_key": K1}]},
         "rotate_keys"),
        ("iothub_device_bulk", {"devices": ["d"], "defaults": {"rotate_keys": "swap", "state": "absent"}},
         "rotate_keys"),
    ]
    no_write = [
        ("iothub_device", {"device_id": "x509", "rotate_keys": "primary"}, "does not authenticate with SAS keys"),
        ("iothub_device_bulk", {"devices": [{"device_id": "x509", "rotate_keys": "primary"}]},
         "does not authenticate with SAS keys"),
        ("iothub_module", {"device_id": "nobody", "module_id": "m"}, "device 'nobody' does not exist"),
    ]
    for cases, zero in ((before_any, "requests"), (no_write, "write_requests")):
        for module, args, fragment in cases:
            with counting(emulator) as w:
                r = ansible.run(play(task("t", module, **args)))
            msg = r.task("t").result.get("msg", "")
            assert r.rc != 0 and fragment in msg, (module, args, msg)
            assert "Traceback" not in r.output and w.delta(zero) == 0, (module, args)
