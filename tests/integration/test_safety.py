"""Safety: never delete, re-key or write what the user did not declare, never write to another hub than the play
names, and never hide a write.  Each test is a real ansible-playbook run against the emulator and asserts what
must NOT happen as well as what must."""

from __future__ import annotations

import yaml
from helpers import counting, play, run_ok, task
from support.ansible import AnsibleRunner
from support.emulator import env_without_proxies
from support.hub import HubClient

FAST = {"retry_backoff_seconds": 0.05, "max_retries": 12}
TP = {c: c * 40 for c in "ABCD"}


def role_task(role: str, **vars) -> dict:
    return {"name": f"apply {role}", "ansible.builtin.include_role": {"name": f"fleet.azure_iot.{role}"}, "vars": vars}



def ids(hub) -> list:
    return sorted(t["deviceId"] for t in hub.query_all("SELECT deviceId FROM devices"))


HIERARCHY = [{"device_id": "plant-gw", "children": [
    {"device_id": "line1-gw", "children": [{"device_id": "line1-sensor-1"}, {"device_id": "line1-sensor-2"}]},
    {"device_id": "plant-meter"}]}]


# ----------------------------------------------------------------------------------------------- 1. prune scope
def test_gateway_prune_never_touches_grandchildren(ansible, hub):
    run_ok(ansible, play(role_task("edge_hierarchy", edge_hierarchy_tree=HIERARCHY)))
    hub.put_device("elsewhere", {"deviceId": "elsewhere"})
    r = run_ok(ansible, play(role_task("edge_gateway", edge_gateway_id="plant-gw", edge_gateway_prune_children=True,
                                       edge_gateway_children=[{"device_id": "plant-meter"},
                                                              {"device_id": "line1-gw", "edge_enabled": True}])))
    assert r.task("Publish edge_gateway_result").result["ansible_facts"]["edge_gateway_result"]["deleted"] == []
    assert ids(hub) == ["elsewhere", "line1-gw", "line1-sensor-1", "line1-sensor-2", "plant-gw", "plant-meter"]
    # prune_children of the bulk module follows the same rule: a nested gateway declared without any of its
    # children keeps them; the root's undeclared direct child goes.
    hub.put_device("stray", {"deviceId": "stray", "deviceScope": hub.get_device("plant-gw").json()["deviceScope"]})
    r = run_ok(ansible, play(task("bulk", "iothub_device_bulk", prune_children=True, devices=[
        {"device_id": "plant-gw", "edge_enabled": True}, {"device_id": "plant-meter", "parent": "plant-gw"},
        {"device_id": "line1-gw", "edge_enabled": True, "parent": "plant-gw"}])))
    assert r.task("bulk").result["deleted"] == ["stray"]
    assert "line1-sensor-1" in ids(hub) and "line1-sensor-2" in ids(hub) and "elsewhere" in ids(hub)


def test_hierarchy_prune_deletes_a_removed_subtree_children_first_and_nothing_else(ansible, emulator, hub):
    tree = [{"device_id": "plant-gw", "children": [
        {"device_id": "line1-gw", "children": [{"device_id": "line1-sensor-1"},
                                               {"device_id": "cell-gw", "children": [{"device_id": "cell-s"}]}]},
        {"device_id": "line2-gw", "children": [{"device_id": "line2-sensor-1"}]}, {"device_id": "plant-meter"}]}]
    run_ok(ansible, play(role_task("edge_hierarchy", edge_hierarchy_tree=tree)))
    hub.put_device("elsewhere-gw", {"deviceId": "elsewhere-gw", "capabilities": {"iotEdge": True}})
    hub.put_device("elsewhere-s", {"deviceId": "elsewhere-s",
                                   "deviceScope": hub.get_device("elsewhere-gw").json()["deviceScope"]})
    without_line1 = [{"device_id": "plant-gw", "children": [tree[0]["children"][1], tree[0]["children"][2]]}]
    with counting(emulator) as w:
        r = run_ok(ansible, play(role_task("edge_hierarchy", edge_hierarchy_tree=without_line1, edge_hierarchy_prune=True)))
    res = r.task("Publish edge_hierarchy_result").result["ansible_facts"]["edge_hierarchy_result"]
    assert res["deleted"] == ["cell-gw", "cell-s", "line1-gw", "line1-sensor-1"]
    assert w.delta("bulk_calls") == 3  # leaves, then cell-gw, then line1-gw: children before their parents
    assert ids(hub) == ["elsewhere-gw", "elsewhere-s", "line2-gw", "line2-sensor-1", "plant-gw", "plant-meter"]


# ------------------------------------------------------------------------------------------ 2. the right hub
def test_roles_write_to_the_hub_module_defaults_name_not_the_environment(ansible, emulator, emulator_factory, hub):
    other = emulator_factory()
    other_hub = HubClient(other.connection_string, other.ca_path)
    env = env_without_proxies()
    env.update(other.ansible_env())  # the shell points at hub B
    runner = AnsibleRunner(ansible.collections_root, ansible.work_dir / "b", env, emulator=emulator)
    defaults = {"group/fleet.azure_iot.iothub": {"connection_string": emulator.connection_string,
                                                  "ca_path": emulator.ca_path}}
    r = runner.run(play(role_task("edge_gateway", edge_gateway_id="gw-a", edge_gateway_children=[{"device_id": "s-a"}]),
                        role_task("edge_hierarchy", edge_hierarchy_tree=[{"device_id": "h-a", "children": [{"device_id": "hs-a"}]}]),
                        module_defaults=defaults))
    assert r.rc == 0, r.output[-3000:]
    assert ids(hub) == ["gw-a", "h-a", "hs-a", "s-a"]
    assert ids(other_hub) == []  # nothing written to the hub of the environment
    # A role variable that is set wins over module_defaults, exactly like a task argument.
    r = runner.run(play(role_task("edge_gateway", edge_gateway_id="gw-b", edge_gateway_connection_string=other.connection_string,
                                  edge_gateway_ca_path=other.ca_path), module_defaults=defaults))
    assert r.rc == 0, r.output[-3000:]
    assert ids(other_hub) == ["gw-b"] and "gw-b" not in ids(hub)
    other_hub.close()


# -------------------------------------------------------------------------- 3. input and output are two variables
def test_two_gateways_in_one_play_each_get_their_device_connection_string(ansible, hub):
    check = {"name": "both", "ansible.builtin.assert": {"that": [
        "first_cs is search('DeviceId=gw1;')", "edge_gateway_device_connection_string is search('DeviceId=gw2;')",
        "edge_gateway_connection_string is not defined"]}, "no_log": True}
    keep = {"name": "keep", "ansible.builtin.set_fact": {"first_cs": "{{ edge_gateway_device_connection_string }}"},
            "no_log": True}
    r = ansible.run(play(role_task("edge_gateway", edge_gateway_id="gw1", edge_gateway_return_connection_string=True),
                         keep, role_task("edge_gateway", edge_gateway_id="gw2", edge_gateway_return_connection_string=True),
                         check))
    assert r.rc == 0, r.output[-3000:]
    assert r.task("both").status == "ok"


# ----------------------------------------------------------------------------------- 4. an omitted thumbprint stays
def test_rotating_the_primary_thumbprint_keeps_the_secondary(ansible, hub):
    run_ok(ansible, play(task("cam", "iothub_device", device_id="cam", primary_thumbprint=TP["A"], secondary_thumbprint=TP["B"]),
                         task("fleet", "iothub_device_bulk", devices=[{"device_id": "cam2", "primary_thumbprint": TP["A"],
                                                                       "secondary_thumbprint": TP["B"]}])))
    r = run_ok(ansible, play(task("cam", "iothub_device", device_id="cam", primary_thumbprint=TP["C"]),
                             task("fleet", "iothub_device_bulk", devices=[{"device_id": "cam2", "primary_thumbprint": TP["C"]}])))
    assert r.task("cam").result["changes"] == ["primary_thumbprint"]
    for did in ("cam", "cam2"):
        assert hub.get_device(did).json()["authentication"]["x509Thumbprint"] == {
            "primaryThumbprint": TP["C"], "secondaryThumbprint": TP["B"]}
    r = run_ok(ansible, play(task("cam", "iothub_device", device_id="cam", secondary_thumbprint=TP["D"])))
    assert hub.get_device("cam").json()["authentication"]["x509Thumbprint"] == {
        "primaryThumbprint": TP["C"], "secondaryThumbprint": TP["D"]}


# ------------------------------------------------------------------------------ 5. a lost answer is still a write
def test_changed_is_true_when_the_write_landed_but_its_answer_was_lost(emulator_factory, collections_root, tmp_path):
    emu = emulator_factory("--fault-rate", "0.35", "--fault-kinds", "drop_after", "--fault-seed", "7")
    env = env_without_proxies()
    env.update(emu.ansible_env())
    runner = AnsibleRunner(collections_root, tmp_path, env, emulator=emu)
    ids_ = [f"lost-{i:02d}" for i in range(12)]

    def loop(name, **args):
        return {"name": name, "fleet.azure_iot.iothub_device": {"device_id": "{{ item }}", **args, **FAST},
                "loop": ids_}
    r = runner.run(play(loop("create"), loop("update", status="disabled"), loop("delete", state="absent")),
                   verbosity=0, diff=False)
    assert r.rc == 0, r.output[-3000:]
    for name in ("create", "update", "delete"):
        results = r.task(name).result["results"]
        unchanged = [x["item"] for x in results if not x["changed"]]
        assert unchanged == [], (name, unchanged)
    stats = emu.stats()["faults_injected"]
    assert stats.get("drop_after_apply", 0) >= 3, stats  # the case under test really happened
    # The bulk module and IoT Central follow the same rule.
    emu.configure(fault_rate=0)
    r = runner.run(play(task("fleet", "iothub_device_bulk", devices=[{"device_id": f"b{i}"} for i in range(60)],
                             batch_size=10, **FAST)), verbosity=0, diff=False)
    emu.configure(fault_rate=0.3, fault_seed=1)
    r = runner.run(play(task("fleet", "iothub_device_bulk", batch_size=10, **FAST,
                             devices=[{"device_id": f"b{i}", "status": "disabled"} for i in range(60)])),
                   verbosity=0, diff=False)
    emu.configure(fault_rate=0)
    assert r.rc == 0, r.output[-3000:]
    res = r.task("fleet").result
    assert len(res["updated"]) == 60 and res["unchanged"] == [], res["notes"][:5]
    assert any("answer was lost" in n for n in res["notes"])
    emu.configure(fault_rate=0.35, fault_seed=11)
    central = {"name": "central", "fleet.azure_iot.iotcentral_device": {
        "device_id": "{{ item }}", "template": "dtmi:contoso:testDeviceTemplate;1", **FAST}, "loop": [f"c{i}" for i in range(8)]}
    r = runner.run(play(central), verbosity=0, diff=False)
    emu.configure(fault_rate=0)
    assert r.rc == 0, r.output[-3000:]
    assert [x["item"] for x in r.task("central").result["results"] if not x["changed"]] == []


# ------------------------------------------------------------------------------------------- 6. no orphans
def test_deleting_a_gateway_with_children_fails_unless_orphan_children(ansible, emulator, hub):
    gw = hub.put_device("gw", {"deviceId": "gw", "capabilities": {"iotEdge": True}}).json()
    hub.put_device("kid", {"deviceId": "kid", "deviceScope": gw["deviceScope"]})
    hub.put_device("kid-gw", {"deviceId": "kid-gw", "capabilities": {"iotEdge": True}, "parentScopes": [gw["deviceScope"]]})
    for args, module in (({"device_id": "gw", "state": "absent"}, "iothub_device"),
                         ({"devices": [{"device_id": "gw", "state": "absent"}]}, "iothub_device_bulk"),
                         ({"devices": [{"device_id": "gw", "state": "absent"}, {"device_id": "kid", "state": "absent"}]},
                          "iothub_device_bulk")):
        for check in (True, False):
            with counting(emulator) as w:
                r = ansible.run(play(task("del", module, **args)), check=check)
            msg = r.task("del").result.get("msg", "")
            assert r.rc != 0 and "kid-gw" in msg and "orphan_children" in msg and w.writes == 0, msg
    assert ids(hub) == ["gw", "kid", "kid-gw"]
    # Deleting the children in the same task is fine (children first), and so is orphan_children=true.
    with counting(emulator) as w:
        run_ok(ansible, play(task("del", "iothub_device_bulk", devices=[
            {"device_id": "gw", "state": "absent"}, {"device_id": "kid", "state": "absent"},
            {"device_id": "kid-gw", "state": "absent"}])))
    assert ids(hub) == [] and w.delta("bulk_calls") == 2
    gw = hub.put_device("gw", {"deviceId": "gw", "capabilities": {"iotEdge": True}}).json()
    hub.put_device("kid", {"deviceId": "kid", "deviceScope": gw["deviceScope"]})
    run_ok(ansible, play(task("del", "iothub_device", device_id="gw", state="absent", orphan_children=True)))
    assert ids(hub) == ["kid"]


# ------------------------------------------------------------------------------------- 7. prune guard rails
def test_prune_guard_rails(ansible, emulator, hub):
    hub.bulk([{"id": f"p{i}", "importMode": "create", "tags": {"fleet": "plant-7"}} for i in range(3)])
    cases = [
        ({"devices": [], "prune": True, "prune_query": "tags.fleet = 'plant-7'"}, "declares none of them"),
        ({"devices": [{"device_id": "p0"}], "prune": True, "prune_query": "tags.fleet = 'plant-7'", "max_deletes": 1},
         "would delete 2 device(s) (p1, p2), more than max_deletes=1"),
        ({"devices": [{"device_id": "p0"}], "prune_query": "tags.fleet = 'plant-7'"}, "prune_query is set but prune is not"),
    ]
    for args, fragment in cases:
        for check in (True, False):
            with counting(emulator) as w:
                r = ansible.run(play(task("bulk", "iothub_device_bulk", **args)), check=check)
            assert r.rc != 0 and fragment in r.task("bulk").result["msg"], r.task("bulk").result["msg"]
            assert w.writes == 0
    assert ids(hub) == ["p0", "p1", "p2"]
    r = run_ok(ansible, play(task("bulk", "iothub_device_bulk", devices=[], prune=True, max_deletes=3,
                                  prune_query="tags.fleet = 'plant-7'")))
    assert r.task("bulk").result["deleted"] == ["p0", "p1", "p2"]
    # The roles' prune has the same guard: an empty children list does not empty the gateway.
    run_ok(ansible, play(role_task("edge_gateway", edge_gateway_id="gw", edge_gateway_children=[{"device_id": "s1"}])))
    with counting(emulator) as w:
        r = ansible.run(play(role_task("edge_gateway", edge_gateway_id="gw", edge_gateway_prune_children=True)))
    assert r.rc != 0 and "declares none of them" in r.output and w.writes == 0
    run_ok(ansible, play(role_task("edge_gateway", edge_gateway_id="gw", edge_gateway_prune_children=True,
                                   edge_gateway_max_deletes=1)))
    assert ids(hub) == ["gw"]


# --------------------------------------------------------------------------------- 8, 9. smaller wrong results
def test_central_etag_on_a_missing_device_fails_without_creating_it(ansible, emulator):
    with counting(emulator) as w:
        r = ansible.run(play(task("c", "iotcentral_device", device_id="nope", etag="abc")))
    assert r.rc != 0 and "does not exist" in r.task("c").result["msg"]
    assert w.delta("central_writes") == 0


def test_edge_gateway_refuses_a_child_that_names_another_parent(ansible, emulator, hub):
    with counting(emulator) as w:
        r = ansible.run(play(role_task("edge_gateway", edge_gateway_id="gw",
                                       edge_gateway_children=[{"device_id": "s", "parent": "other-gw"}])))
    assert r.rc != 0 and "contradicts" in r.output and w.writes == 0
