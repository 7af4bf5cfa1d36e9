"""iothub_device and iothub_device_info: real ansible-playbook runs against the emulator over HTTPS."""

from __future__ import annotations

import base64

import pytest
from helpers import counting, device_task, play, task

K1 = base64.b64encode(b"1" * 32).decode()
K2 = base64.b64encode(b"2" * 32).decode()
K3 = base64.b64encode(b"3" * 32).decode()
TP = "9A3C2E8B1D4F6A7B8C9D0E1F2A3B4C5D6E7F8091"


def run_ok(ansible, *tasks, **kw):
    r = ansible.run(play(*tasks), **kw)
    assert r.rc == 0, r.output[-4000:]
    return r


def test_create_then_idempotent(ansible, emulator, hub):
    t = device_task("sensor", device_id="sensor-1", status_reason="installed")
    with counting(emulator) as w:
        r1 = run_ok(ansible, t)
    assert r1.task("sensor").changed and r1.task("sensor").result["action"] == "create"
    assert w.registry_writes == 1
    dev = hub.get_device("sensor-1").json()
    assert dev["statusReason"] == "installed"
    with counting(emulator) as w:
        r2 = run_ok(ansible, t)
    assert not r2.task("sensor").changed and r2.task("sensor").result["action"] == "none"
    assert w.writes == 0
    assert hub.get_device("sensor-1").json()["etag"] == dev["etag"]


@pytest.mark.parametrize("option, value, check", [
    ("status", "disabled", lambda d: d["status"] == "disabled"),
    ("status_reason", "moved to line 2", lambda d: d["statusReason"] == "moved to line 2"),
    ("primary_key", K3, lambda d: d["authentication"]["symmetricKey"]["primaryKey"] == K3),
    ("secondary_key", K3, lambda d: d["authentication"]["symmetricKey"]["secondaryKey"] == K3),
    ("edge_enabled", True, lambda d: d["capabilities"]["iotEdge"] and d["deviceScope"].startswith("ms-azure-iot-edge://dev-")),
    ("auth_type", "certificate_authority", lambda d: d["authentication"]["type"] == "certificateAuthority"),
    ("primary_thumbprint", TP, lambda d: d["authentication"]["x509Thumbprint"]["primaryThumbprint"] == TP),
])
def test_each_option_updates_and_keeps_the_rest(ansible, emulator, hub, option, value, check):
    run_ok(ansible, device_task("create", device_id="dev", primary_key=K1, secondary_key=K2, status_reason="keep me"))
    before = hub.get_device("dev").json()
    with counting(emulator) as w:
        r = run_ok(ansible, device_task("update", device_id="dev", **{option: value}), diff=True)
    res = r.task("update").result
    assert r.task("update").changed and res["action"] == "update" and w.registry_writes == 1
    after = hub.get_device("dev").json()
    assert check(after)
    if option != "status_reason":
        assert after["statusReason"] == "keep me"
    if option not in ("primary_key", "secondary_key", "auth_type", "primary_thumbprint"):
        assert after["authentication"]["symmetricKey"] == before["authentication"]["symmetricKey"]  # keys kept
    assert after["generationId"] == before["generationId"]
    again = run_ok(ansible, device_task("update", device_id="dev", **{option: value}))
    assert not again.task("update").changed


def test_check_mode_writes_nothing_and_predicts(ansible, emulator, hub):
    create = device_task("create", device_id="c1", status="disabled")
    with counting(emulator) as w:
        r = run_ok(ansible, create, check=True)
    assert r.task("create").changed and w.writes == 0
    assert r.task("create").result["device"]["status"] == "disabled"
    assert hub.get_device("c1").status_code == 404
    run_ok(ansible, create)
    with counting(emulator) as w:
        unchanged = run_ok(ansible, create, check=True)
        update = run_ok(ansible, device_task("upd", device_id="c1", status="enabled"), check=True)
        delete = run_ok(ansible, device_task("del", device_id="c1", state="absent"), check=True)
    assert w.writes == 0
    assert not unchanged.task("create").changed
    assert update.task("upd").changed and update.task("upd").result["changes"] == ["status"]
    assert delete.task("del").changed and delete.task("del").result["action"] == "delete"
    assert hub.get_device("c1").json()["status"] == "disabled"


def test_diff_shows_before_after_with_keys_redacted(ansible, hub):
    run_ok(ansible, device_task("create", device_id="d1", primary_key=K1, secondary_key=K2))
    r = run_ok(ansible, device_task("rotate", device_id="d1", primary_key=K3, status="disabled"), diff=True)
    diff = r.task("rotate").result["diff"]
    assert diff["before"]["status"] == "enabled" and diff["after"]["status"] == "disabled"
    assert diff["before"]["primary_key"] == "********" and diff["after"]["primary_key"] == "******** (changed)"
    assert diff["after"]["secondary_key"] == "********"
    for secret in (K1, K2, K3):
        assert secret not in r.output and secret not in str(r.tasks)
    assert "-    \"status\": \"enabled\"" in r.stdout or '"status": "enabled"' in r.stdout
    created = run_ok(ansible, device_task("new", device_id="d2", edge_enabled=True), diff=True)
    d = created.task("new").result["diff"]
    assert d["before"] == {} and d["after"]["edge_enabled"] is True
    assert d["after"]["primary_key"] == "(generated by the hub)"


def test_delete_and_delete_again(ansible, emulator, hub):
    run_ok(ansible, device_task("create", device_id="gone"))
    with counting(emulator) as w:
        r = run_ok(ansible, device_task("delete", device_id="gone", state="absent"), diff=True)
    assert r.task("delete").changed and w.registry_writes == 1 and r.task("delete").result["device"] is None
    assert r.task("delete").result["diff"]["after"] == {}
    assert hub.get_device("gone").status_code == 404
    with counting(emulator) as w:
        again = run_ok(ansible, device_task("delete", device_id="gone", state="absent"))
    assert not again.task("delete").changed and w.writes == 0


def test_leaf_and_nested_edge_parents_detach_and_move(ansible, hub):
    run_ok(ansible,
           device_task("gw1", device_id="gw1", edge_enabled=True),
           device_task("gw2", device_id="gw2", edge_enabled=True),
           device_task("child-gw", device_id="child-gw", edge_enabled=True, parent="gw1"),
           device_task("leaf", device_id="leaf", parent="gw1", primary_key=K1, secondary_key=K2))
    gw1, gw2 = hub.get_device("gw1").json(), hub.get_device("gw2").json()
    leaf, child = hub.get_device("leaf").json(), hub.get_device("child-gw").json()
    assert leaf["deviceScope"] == gw1["deviceScope"] and leaf["parentScopes"] == [gw1["deviceScope"]]
    assert child["parentScopes"] == [gw1["deviceScope"]] and child["deviceScope"] != gw1["deviceScope"]

    r = run_ok(ansible, device_task("move leaf", device_id="leaf", parent="gw2"),
               device_task("move child", device_id="child-gw", parent="gw2"))
    assert r.task("move leaf").result["changes"] == ["parent"]
    leaf2, child2 = hub.get_device("leaf").json(), hub.get_device("child-gw").json()
    assert leaf2["deviceScope"] == gw2["deviceScope"] and child2["parentScopes"] == [gw2["deviceScope"]]
    assert child2["deviceScope"] == child["deviceScope"]  # its own scope never changes
    assert leaf2["authentication"]["symmetricKey"] == {"primaryKey": K1, "secondaryKey": K2}

    info = run_ok(ansible, task("children", "iothub_device_info", parent="gw2"))
    assert sorted(d["deviceId"] for d in info.task("children").result["devices"]) == ["child-gw", "leaf"]

    r = run_ok(ansible, device_task("detach leaf", device_id="leaf", parent=""),
               device_task("detach child", device_id="child-gw", parent=""))
    assert r.task("detach leaf").changed and r.task("detach child").changed
    assert hub.get_device("leaf").json().get("deviceScope") is None
    assert hub.get_device("child-gw").json()["parentScopes"] == []
    again = run_ok(ansible, device_task("detach leaf", device_id="leaf", parent=""))
    assert not again.task("detach leaf").changed


def test_parent_must_exist_and_be_edge(ansible, emulator):
    run_ok(ansible, device_task("plain", device_id="plain"))
    with counting(emulator) as w:
        r = ansible.run(play(device_task("missing parent", device_id="leaf", parent="nope")))
        r2 = ansible.run(play(device_task("plain parent", device_id="leaf", parent="plain")))
    assert r.rc != 0 and "parent: device 'nope' does not exist" in r.task("missing parent").result["msg"]
    assert r2.rc != 0 and "is not an IoT Edge device" in r2.task("plain parent").result["msg"]
    assert w.writes == 0


def test_check_mode_with_parent_created_earlier_in_the_play(ansible, emulator):
    with counting(emulator) as w:
        r = run_ok(ansible, device_task("gw", device_id="new-gw", edge_enabled=True),
                   device_task("leaf", device_id="new-leaf", parent="new-gw"), check=True)
    assert w.writes == 0 and r.task("leaf").changed
    assert "check mode assumes an earlier task makes it an edge device" in r.task("leaf").result["warnings"][0]


def test_pinned_etag_conflict(ansible, hub):
    run_ok(ansible, device_task("create", device_id="pin"))
    etag = hub.get_device("pin").json()["etag"]
    ok = run_ok(ansible, device_task("update", device_id="pin", status="disabled", etag=etag))
    assert ok.task("update").changed
    r = ansible.run(play(device_task("stale", device_id="pin", status="enabled", etag=etag)))
    assert r.rc != 0
    msg = r.task("stale").result["msg"]
    assert "etag" in msg and "changed by someone else" in msg
    assert hub.get_device("pin").json()["status"] == "disabled"


def test_concurrent_change_between_read_and_write_is_replanned(ansible, emulator, hub):
    run_ok(ansible, device_task("create", device_id="race", primary_key=K1, secondary_key=K2))
    # Another writer sets statusReason right after the module reads the device.
    emulator.race("race", {"statusReason": "set by another writer"})
    r = run_ok(ansible, device_task("update", device_id="race", status="disabled"))
    res = r.task("update").result
    assert res["changed"] and any("412" in n for n in res["notes"])
    dev = hub.get_device("race").json()
    assert dev["status"] == "disabled" and dev["statusReason"] == "set by another writer"  # no lost update
    assert dev["authentication"]["symmetricKey"] == {"primaryKey": K1, "secondaryKey": K2}
    assert emulator.stats()["races_applied"] == 1


def test_x509_and_ca_devices(ansible, hub):
    run_ok(ansible, device_task("x509", device_id="cam", primary_thumbprint=TP.lower(), secondary_thumbprint="B" * 64),
           device_task("ca", device_id="ca-dev", auth_type="certificate_authority"))
    cam = hub.get_device("cam").json()["authentication"]
    assert cam["type"] == "selfSigned" and cam["x509Thumbprint"]["primaryThumbprint"] == TP
    assert hub.get_device("ca-dev").json()["authentication"]["type"] == "certificateAuthority"
    again = run_ok(ansible, device_task("x509", device_id="cam", primary_thumbprint=TP, secondary_thumbprint="b" * 64),
                   device_task("ca", device_id="ca-dev", auth_type="certificate_authority"))
    assert again.changed_tasks() == []


@pytest.mark.parametrize("args, fragment", [
    ({"device_id": "bad id"}, "device_id"),
    ({"device_id": "d", "status_reason": "r" * 129}, "status_reason"),
    ({"device_id": "d", "primary_key": "c2hvcnQ="}, "primary_key"),
    ({"device_id": "d", "primary_key": "***"}, "primary_key"),
    ({"device_id": "d", "primary_thumbprint": "XYZ"}, "primary_thumbprint"),
    ({"device_id": "d", "primary_key": K1, "primary_thumbprint": TP}, "mutually exclusive"),
    ({"device_id": "d", "auth_type": "self_signed"}, "primary_thumbprint"),
    ({"device_id": "d", "parent": "d"}, "own parent"),
    ({"device_id": "d", "connection_string": "HostName=h;SharedAccessKeyName=p"}, "connection_string"),
    ({"device_id": "d", "connection_string": "garbage"}, "connection_string"),
    ({"device_id": "d", "status": "on"}, "status"),
    ({"device_id": "d", "retry_budget_seconds": -1}, "retry_budget_seconds"),
])
def test_bad_input_fails_clearly_without_writes(ansible, emulator, args, fragment):
    with counting(emulator) as w:
        r = ansible.run(play(device_task("bad", **args)))
    assert r.rc != 0
    res = r.task("bad").result
    assert fragment in res["msg"], res["msg"]
    assert "Traceback" not in r.output
    # ansible-core >= 2.21 puts a placeholder "exception" in every failed result; it must not be a real one.
    assert "Traceback (most recent call last)" not in str(res.get("exception", ""))
    assert w.writes == 0


def test_return_secrets_and_connection_string(ansible, emulator, hub):
    run_ok(ansible, device_task("gw", device_id="gw", edge_enabled=True))
    hidden = run_ok(ansible, device_task("gw", device_id="gw", edge_enabled=True), verbosity=3)
    assert "connection_string" not in hidden.task("gw").result
    assert hidden.task("gw").result["device"]["authentication"]["symmetricKey"]["primaryKey"] == "********"
    shown = run_ok(ansible, device_task("gw", device_id="gw", edge_enabled=True, return_secrets=True), verbosity=3,
                   allow_secrets=True)
    res = shown.task("gw").result
    key = hub.get_device("gw").json()["authentication"]["symmetricKey"]["primaryKey"]
    assert res["connection_string"] == f"HostName={emulator.hostname};DeviceId=gw;SharedAccessKey={key}"
    assert res["device"]["authentication"]["symmetricKey"]["primaryKey"] == key
    assert key not in str(res.get("invocation", {}))  # never in the logged module arguments
    assert key not in hidden.output
    # A key the user supplied is a no_log option: Ansible masks it everywhere, return_secrets or not.
    run_ok(ansible, device_task("own", device_id="own", primary_key=K1, secondary_key=K2))
    own = run_ok(ansible, device_task("own", device_id="own", primary_key=K1, return_secrets=True), verbosity=3,
                 allow_secrets=True)  # the secondary key (not an option of this run) is returned, as asked
    assert own.task("own").result["connection_string"].endswith("SharedAccessKey=********")
    assert K1 not in own.output
    # The hub's own connection string never appears.
    hub_key = emulator.connection_string.split("SharedAccessKey=")[1]
    assert hub_key not in hidden.output and hub_key not in shown.output


def test_generated_keys_never_appear_in_output(ansible, hub):
    r = run_ok(ansible, device_task("gen", device_id="gen"), verbosity=3, diff=True)
    keys = hub.get_device("gen").json()["authentication"]["symmetricKey"]
    for k in keys.values():
        assert k not in r.output and k not in str(r.tasks)


def test_module_defaults_group_and_explicit_connection(ansible, emulator, hub):
    defaults = {"group/fleet.azure_iot.iothub": {"connection_string": emulator.connection_string,
                                                "ca_path": emulator.ca_path}}
    r = ansible.run(play(device_task("create", device_id="md"),
                         task("info", "iothub_device_info", device_id="md"), module_defaults=defaults),
                    env={"IOTHUB_CONNECTION_STRING": "", "IOTHUB_CA_PATH": "", "IOTHUB_HOSTNAME": ""})
    assert r.rc == 0, r.output[-3000:]
    assert r.task("info").result["exists"] and r.task("info").result["devices"][0]["deviceId"] == "md"


def test_tls_is_verified(ansible, emulator):
    r = ansible.run(play(device_task("no ca", device_id="x")), env={"IOTHUB_CA_PATH": ""})
    msg = r.task("no ca").result["msg"]
    assert r.rc != 0 and "TLS certificate verification failed" in msg and "ca_path" in msg
    assert r.task("no ca").result["error"]["attempts"] == 1  # not retried: waiting does not fix a certificate


def test_wrong_key_is_a_clear_401(ansible, emulator):
    bad = emulator.connection_string.split("SharedAccessKey=")[0] + "SharedAccessKey=" + base64.b64encode(b"w" * 32).decode()
    r = ansible.run(play(device_task("denied", device_id="x", connection_string=bad)))
    msg = r.task("denied").result["msg"]
    assert r.rc != 0 and "HTTP 401 IotHubUnauthorizedAccess" in msg and "x-ms-request-id" in msg


def test_info_modes(ansible, hub):
    run_ok(ansible, device_task("gw", device_id="gw", edge_enabled=True),
           device_task("leaf", device_id="leaf", parent="gw"),
           device_task("other", device_id="other"))
    r = run_ok(ansible,
               task("one", "iothub_device_info", device_id="leaf"),
               task("missing", "iothub_device_info", device_id="nope"),
               task("edge", "iothub_device_info", edge_only=True),
               task("all", "iothub_device_info"),
               task("query", "iothub_device_info", query="SELECT * FROM devices WHERE deviceId IN ['leaf', 'other']"),
               task("secret", "iothub_device_info", device_id="leaf", return_secrets=True), allow_secrets=True)
    assert r.task("one").result["devices"][0]["authentication"]["symmetricKey"]["primaryKey"] == "********"
    assert r.task("missing").result == {**r.task("missing").result, "exists": False, "devices": []}
    assert [d["deviceId"] for d in r.task("edge").result["devices"]] == ["gw"]
    assert sorted(d["deviceId"] for d in r.task("all").result["devices"]) == ["gw", "leaf", "other"]
    assert sorted(d["deviceId"] for d in r.task("query").result["devices"]) == ["leaf", "other"]
    assert r.task("secret").result["devices"][0]["authentication"]["symmetricKey"]["primaryKey"] != "********"
    assert not any(t.changed for t in r.tasks)
