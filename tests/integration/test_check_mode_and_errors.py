"""Check mode that tells the truth, errors that arrive fast and name the fix, diffs people can read.  Real
ansible-playbook runs against the emulator."""

from __future__ import annotations

import base64

import pytest
from helpers import counting, play, task

FAST = {"retry_backoff_seconds": 0.05}


def res_of(r, name="t"):
    return r.task(name).result


def chain(hub, n: int, prefix: str = "L") -> list:
    """n nested edge devices L1 (top) ... Ln."""
    scope = None
    for i in range(1, n + 1):
        body = {"deviceId": f"{prefix}{i}", "capabilities": {"iotEdge": True}}
        if scope:
            body["parentScopes"] = [scope]
        scope = hub.put_device(f"{prefix}{i}", body).json()["deviceScope"]
    return [f"{prefix}{i}" for i in range(1, n + 1)]


# ----------------------------------------------------------------- 1. rules that depend on the hub's state
@pytest.mark.parametrize("check", [True, False])
def test_hub_state_rules_fail_before_any_write_in_check_mode_too(ansible, emulator, hub, check):
    gw = hub.put_device("gw", {"deviceId": "gw", "capabilities": {"iotEdge": True}}).json()
    hub.put_device("kid", {"deviceId": "kid", "deviceScope": gw["deviceScope"]})
    a = hub.put_device("A", {"deviceId": "A", "capabilities": {"iotEdge": True}}).json()
    hub.put_device("B", {"deviceId": "B", "capabilities": {"iotEdge": True}, "parentScopes": [a["deviceScope"]]})
    chain(hub, 5)
    cases = [
        ("iothub_device", {"device_id": "gw", "edge_enabled": False}, "still has 1 child device(s) (kid)"),
        ("iothub_device_bulk", {"devices": [{"device_id": "gw", "edge_enabled": False}]}, "still has 1 child device(s) (kid)"),
        ("iothub_device", {"device_id": "A", "parent": "B"}, "A -> B -> A"),
        ("iothub_device_bulk", {"devices": [{"device_id": "A", "parent": "B"}]}, "A -> B -> A"),
        ("iothub_device", {"device_id": "L6", "edge_enabled": True, "parent": "L5"}, "L1 -> L2 -> L3 -> L4 -> L5 -> L6"),
        ("iothub_device_bulk", {"devices": [{"device_id": "L6", "edge_enabled": True, "parent": "L5"}]},
         "L1 -> L2 -> L3 -> L4 -> L5 -> L6"),
        ("iothub_device_bulk", {"tree": [{"device_id": "L4", "children": [{"device_id": "x5", "children": [
            {"device_id": "x6", "edge_enabled": True}]}]}]}, "layer 6"),
    ]
    for module, args, fragment in cases:
        with counting(emulator) as w:
            r = ansible.run(play(task("t", module, **args)), check=check)
        assert r.rc != 0 and fragment in res_of(r)["msg"], (module, args, res_of(r).get("msg"))
        assert w.writes == 0
    # A leaf (not an edge layer) may hang below the fifth layer; moving the kid first makes gw a leaf legally.
    ok = ansible.run(play(task("t", "iothub_device_bulk", devices=[
        {"device_id": "L5-sensor", "parent": "L5"}, {"device_id": "kid", "parent": "A"},
        {"device_id": "gw", "edge_enabled": False}])), check=check)
    assert ok.rc == 0, ok.output[-3000:]


# ------------------------------------------------------------- 2. an assumed parent is a visible warning
def test_check_mode_warns_about_a_parent_it_cannot_confirm(ansible, emulator, hub):
    hub.put_device("plain", {"deviceId": "plain"})
    for module, args in (("iothub_device", {"device_id": "s", "parent": "typo-gw"}),
                         ("iothub_device_bulk", {"devices": [{"device_id": "s", "parent": "typo-gw"}]}),
                         ("iothub_device", {"device_id": "s2", "parent": "plain"})):
        with counting(emulator) as w:
            r = ansible.run(play(task("t", module, **args)), check=True)
        assert r.rc == 0 and w.writes == 0, r.output[-2000:]
        warnings = " ".join(res_of(r).get("warnings", []))
        assert args.get("parent", "typo-gw") in warnings or "typo-gw" in warnings, res_of(r)
        assert "[WARNING]" in r.output


# ------------------------------------------------- 3. check mode does not trust the lagging query index
def test_bulk_check_mode_confirms_predicted_creates(ansible, emulator, hub):
    emulator.configure(query_lag_s=3600)
    hub.bulk([{"id": f"fresh{i}", "importMode": "create"} for i in range(5)])
    with counting(emulator) as w:
        r = ansible.run(play(task("t", "iothub_device_bulk", devices=[f"fresh{i}" for i in range(5)] + ["really-new"])),
                        check=True)
    assert r.rc == 0, r.output[-2000:]
    assert res_of(r)["created"] == ["really-new"] and len(res_of(r)["unchanged"]) == 5 and w.writes == 0


# -------------------------------------------------------------- 4-6. connection errors that name the fix
def test_unreachable_hosts_fail_fast_and_name_the_option(ansible, emulator):
    cs = emulator.connection_string
    key_part = cs[cs.index(";"):]
    cases = [
        (f"HostName=127.0.0.1:1{key_part}", "refused the connection 3 times", 3),
        (f"HostName=no-such-hub.invalid{key_part}", "does not resolve", 1),
        (f"HostName=https://myhub.azure-devices.net{key_part}", "not a URL", 0),
        (f"HostName=myhub.azure-devices.net/devices{key_part}", "is not a host name", 0),
    ]
    for conn, fragment, attempts in cases:
        r = ansible.run(play(task("t", "iothub_device", device_id="d", connection_string="{{ cs }}", **FAST)),
                        extra_vars={"cs": conn})
        res = res_of(r)
        assert r.rc != 0 and fragment in res["msg"] and "connection_string (or IOTHUB_CONNECTION_STRING)" in res["msg"], res
        if attempts:
            assert res["error"]["attempts"] == attempts, res["error"]


def test_bad_ca_path_names_the_option_and_the_path(ansible, emulator, tmp_path):
    not_pem = tmp_path / "ca.txt"
    not_pem.write_text("this is not a certificate\n")
    for path, fragment in ((tmp_path / "missing.pem", "does not exist"), (tmp_path, "is a folder"),
                           (not_pem, "is not a PEM certificate file")):
        with counting(emulator) as w:
            r = ansible.run(play(task("t", "iothub_device", device_id="d", ca_path=str(path))))
            r_env = ansible.run(play(task("t", "iothub_device", device_id="d")), env={"IOTHUB_CA_PATH": str(path)})
        for run in (r, r_env):
            msg = res_of(run)["msg"]
            assert run.rc != 0 and fragment in msg and str(path) in msg and "IOTHUB_CA_PATH" in msg, msg
            assert "Unexpected error" not in msg
        assert w.delta("requests") == 0


def test_validate_certs_false_wins_over_a_ca_path_and_warns(ansible, emulator, tmp_path):
    wrong_ca = "/etc/ssl/certs/ca-certificates.crt"
    r = ansible.run(play(task("t", "iothub_device", device_id="d", validate_certs=False)), env={"IOTHUB_CA_PATH": wrong_ca})
    assert r.rc == 0, r.output[-2000:]
    assert any("validate_certs=false" in w for w in res_of(r)["warnings"])


# ------------------------------------------------------------------- 7. a policy that lacks a right
def test_bulk_with_a_read_only_policy_stops_at_the_first_refused_call(ansible, emulator):
    # the service policy reads (its queries need ServiceConnect) but cannot write the registry
    ro = emulator.env["IOTHUB_SERVICE_CONNECTION_STRING"]
    with counting(emulator) as w:
        r = ansible.run(play(task("t", "iothub_device_bulk", connection_string="{{ cs }}",
                                  devices=[f"ro-{i}" for i in range(1000)])), extra_vars={"cs": ro})
    res = res_of(r)
    assert r.rc != 0 and "RegistryWrite" in res["msg"] and "registryReadWrite" in res["msg"], res["msg"]
    ro_reader = emulator.env["IOTHUB_REGISTRY_READ_CONNECTION_STRING"]  # and a registry reader cannot query
    r2 = ansible.run(play(task("t", "iothub_device_bulk", connection_string="{{ cs }}", devices=["x"])),
                     extra_vars={"cs": ro_reader})
    assert r2.rc != 0 and "ServiceConnect" in res_of(r2)["msg"], res_of(r2)["msg"]
    route = "POST /devices"
    calls = w.end["requests_by_route"].get(route, 0) - w.start["requests_by_route"].get(route, 0)
    assert calls == 1 and w.end["responses_by_status"]["401"] - w.start["responses_by_status"].get("401", 0) == 1
    assert len(res.get("failed_devices", [])) == 0


# --------------------------------------------------------------------- 8. tree errors name the node's path
def test_tree_errors_name_the_path_in_the_tree(ansible, emulator):
    tree = [{"device_id": "gw", "children": [{"device_id": "ok"}, {"device_id": "bad id"}]}]
    with counting(emulator) as w:
        r = ansible.run(play(task("t", "iothub_device_bulk", tree=tree)))
    assert r.rc != 0 and "tree[0].children[1] (bad id)" in res_of(r)["msg"] and w.delta("requests") == 0


# ----------------------------------------------------------------------------------- 9-10. readable diffs
def test_bulk_diff_says_not_read_and_shows_old_beside_new(ansible, hub):
    key = base64.b64encode(b"k" * 32).decode()
    hub.bulk([{"id": "q1", "importMode": "create", "tags": {"site": "a", "keep": 1}},
              {"id": "q2", "importMode": "create", "authentication": {"type": "sas", "symmetricKey": {
                  "primaryKey": key, "secondaryKey": key}}}])
    r = ansible.run(play(task("t", "iothub_device_bulk", devices=[
        {"device_id": "q1", "tags": {"site": "b"}}, {"device_id": "q2", "state": "absent"}])))
    assert r.rc == 0, r.output[-2000:]
    diffs = {d["before_header"].split()[2]: d for d in res_of(r)["diff"]}
    assert diffs["q2"]["before"]["primary_key"] == "(not read)" and diffs["q2"]["after"] == {}
    assert diffs["q1"]["before"]["tags"] == {"site": "a"} and diffs["q1"]["after"]["tags"] == {"site": "b"}
    assert diffs["q1"]["after"]["primary_key"] == "(not read)"
    assert "(generated by the hub)" not in r.output


def test_large_bulk_diff_is_summarised_unless_full(ansible):
    devices = [f"many-{i:03d}" for i in range(60)]
    r = ansible.run(play(task("t", "iothub_device_bulk", devices=devices)), check=True)
    d = res_of(r)["diff"]
    assert len(d) == 51 and "60 devices change (created 60, updated 0, deleted 0)" in d[0]["after"]
    r = ansible.run(play(task("t", "iothub_device_bulk", devices=devices, diff_detail="full")), check=True)
    assert len(res_of(r)["diff"]) == 60


def test_summary_diff_of_a_large_apply_shows_the_first_devices_by_id(ansible):
    """A summary keeps only the plans it can show (the 1,000 to 2,000 ids that sort first), whatever the declared
    order: the 50 shown are the first 50 ids of the 2,100 created."""
    devices = [f"big-{i:04d}" for i in reversed(range(2100))]
    r = ansible.run(play(task("t", "iothub_device_bulk", devices=devices)))
    assert r.rc == 0, r.output[-2000:]
    d = res_of(r)["diff"]
    assert "2100 devices change (created 2100, updated 0, deleted 0)" in d[0]["after"]
    assert [x["after_header"] for x in d[1:]] == [f"iothub device big-{i:04d} (planned)" for i in range(50)]
    assert all(x["before"] == {} and x["after"]["status"] == "enabled" for x in d[1:])


# ----------------------------------------------------------------- one rule, one message (iothub_device and bulk)
def test_the_same_rule_gives_the_same_message_from_iothub_device_and_iothub_device_bulk(ansible, emulator, hub):
    """Each rule lives once (_topology, _twin): iothub_device's message is exactly what iothub_device_bulk says for
    the device (bulk puts the device id in front), in check mode and in a real run, and neither writes."""
    gw = hub.put_device("gw", {"deviceId": "gw", "capabilities": {"iotEdge": True}}).json()
    hub.put_device("kid", {"deviceId": "kid", "deviceScope": gw["deviceScope"]})
    hub.put_device("plain", {"deviceId": "plain"})
    a = hub.put_device("A", {"deviceId": "A", "capabilities": {"iotEdge": True}}).json()
    hub.put_device("B", {"deviceId": "B", "capabilities": {"iotEdge": True}, "parentScopes": [a["deviceScope"]]})
    chain(hub, 5)
    hub.put_device("big", {"deviceId": "big"})
    hub.request("PATCH", "/twins/big", json={"tags": {"a1": "x" * 3000, "a2": "x" * 3000}}, headers={"If-Match": "*"})
    hub.query_all("SELECT deviceId FROM devices")  # indexed
    both = ((True, "fail"), (False, "fail"))
    parent = ((True, "warn"), (False, "fail"))  # check mode assumes an earlier task makes the parent, and warns
    rules = [
        ({"device_id": "c", "parent": "nope"}, parent),
        ({"device_id": "c", "parent": "plain"}, parent),
        ({"device_id": "gw", "edge_enabled": False}, both),
        ({"device_id": "A", "parent": "B"}, both),
        ({"device_id": "L6", "edge_enabled": True, "parent": "L5"}, both),
        ({"device_id": "gw", "state": "absent"}, both),
        ({"device_id": "big", "tags": {"b": "y" * 3000}}, both),  # 9 KB with what the twin holds,
    ]
    for args, modes in rules:
        for check, expect in modes:
            with counting(emulator) as w:
                single = ansible.run(play(task("t", "iothub_device", **FAST, **args)), check=check)
                bulk = ansible.run(play(task("t", "iothub_device_bulk", **FAST, devices=[args])), check=check)
            assert w.writes == 0, (args, check)
            if expect == "warn":
                one, many = single.task("t").result["warnings"], bulk.task("t").result["warnings"]
                assert len(one) == 1 and any(one[0] in text for text in many), (one, many)
                continue
            assert single.rc != 0 and bulk.rc != 0, (args, single.output[-2000:], bulk.output[-2000:])
            one, many = single.task("t").result["msg"], bulk.task("t").result["msg"]
            assert one in many, (args, one, many)
