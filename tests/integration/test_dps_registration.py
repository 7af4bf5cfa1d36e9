"""Devices register through the emulator's DPS with Microsoft's Node device SDK (npm, unmodified), with keys the
collection's derive_device_key filter computed, and land in the allocated one of two linked hubs (two emulator
processes) with the enrollment's IoT Edge capability and initial twin; a re-provision moves one with its twin."""

from __future__ import annotations


import pytest
from helpers import play, run_ok, task
from support.node_sdk import register
from support.emulator import env_without_proxies
from support.hub import HubClient
from support.ansible import AnsibleRunner
from test_dps_enrollment import Dps

DEVICES = [f"plant1-dev-{i}" for i in range(6)]


@pytest.fixture
def two_hubs(emulator_factory, collections_root, tmp_path):
    hub_b = emulator_factory(name="hub-b")
    hub_a = emulator_factory("--dps-linked-hub", hub_b.connection_string, "--dps-linked-hub-ca", hub_b.ca_path,
                             name="hub-a")
    env = env_without_proxies()
    env.update(hub_a.ansible_env())
    runner = AnsibleRunner(collections_root, tmp_path, env, emulator=hub_a)
    a, b = HubClient(hub_a.connection_string, hub_a.ca_path), HubClient(hub_b.connection_string, hub_b.ca_path)
    yield hub_a, hub_b, runner, a, b
    a.close()
    b.close()


def test_group_members_register_into_the_allocated_hub(two_hubs, tmp_path):
    hub_a, hub_b, ansible, a, b = two_hubs
    keys_dir = tmp_path / "keys"
    keys_dir.mkdir()
    enroll = task("group", "dps_enrollment_group", register="grp", enrollment_group_id="plant1-edge",
                  attestation="symmetric_key", capabilities={"iot_edge": True}, allocation_policy="hashed",
                  iot_hubs=[hub_a.hostname, hub_b.hostname], reprovision_policy="reprovision_and_migrate_data",
                  initial_twin={"tags": {"site": "plant1"}, "desired_properties": {"interval": 30}},
                  return_secrets=True)
    enroll["no_log"] = True
    derive = {"name": "derived keys", "no_log": True, "loop": DEVICES, "ansible.builtin.copy": {
        "dest": f"{keys_dir}/{{{{ item }}}}", "mode": "0600",
        "content": "{{ grp.enrollment.attestation.symmetricKey.primaryKey | fleet.azure_iot.derive_device_key(item) }}"}}
    run_ok(ansible, enroll, derive)
    env = hub_a.env
    hubs = {hub_a.hostname: a, hub_b.hostname: b}
    results = {}
    for dev in DEVICES:
        key = (keys_dir / dev).read_text()
        res = register(env["DPS_DEVICE_ENDPOINT"], env["DPS_ID_SCOPE"], dev, key, env["DPS_CA_PATH"])
        assert res.get("status") == "assigned", res
        results[dev] = res
        hub = hubs[res["assignedHub"]]
        device = hub.get_device(dev).json()
        assert device["capabilities"]["iotEdge"] is True
        assert device["authentication"]["symmetricKey"]["primaryKey"] == key  # the key it registered with
        twin = hub.request("GET", f"/twins/{dev}").json()
        assert twin["tags"] == {"site": "plant1"} and twin["properties"]["desired"]["interval"] == 30
        other = b if hub is a else a
        assert other.get_device(dev).status_code == 404
    assert {r["assignedHub"] for r in results.values()} == {hub_a.hostname, hub_b.hostname}  # allocation is real

    info = run_ok(ansible, task("one", "dps_registration_info", registration_id=DEVICES[0]),
                  task("all", "dps_registration_info", enrollment_group_id="plant1-edge"))
    one = info.task("one").result["registrations"][0]
    assert one["assignedHub"] == results[DEVICES[0]]["assignedHub"] and one["status"] == "assigned"
    assert sorted(r["registrationId"] for r in info.task("all").result["registrations"]) == DEVICES

    # re-provision: the group now allocates to the other hub only; the device moves with its twin (migrate)
    moved = DEVICES[0]
    old, new = results[moved]["assignedHub"], next(h for h in hubs if h != results[moved]["assignedHub"])
    hubs[old].request("PATCH", f"/twins/{moved}", json={"tags": {"rack": "r7"}})
    run_ok(ansible, task("narrow", "dps_enrollment_group", enrollment_group_id="plant1-edge", iot_hubs=[new]))
    again = register(env["DPS_DEVICE_ENDPOINT"], env["DPS_ID_SCOPE"], moved, (keys_dir / moved).read_text(),
                     env["DPS_CA_PATH"])
    assert again["assignedHub"] == new and again["substatus"] == "deviceDataMigrated"
    assert hubs[new].request("GET", f"/twins/{moved}").json()["tags"] == {"site": "plant1", "rack": "r7"}
    assert hubs[old].get_device(moved).status_code == 404
    assert hubs[old].get_device(DEVICES[1]).status_code in (200, 404)  # the others are not touched


def test_individual_enrollment_and_wrong_key(two_hubs):
    hub_a, _hub_b, ansible, a, _b = two_hubs
    key = "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUE="
    run_ok(ansible, task("e", "dps_enrollment", registration_id="solo-1", attestation="symmetric_key",
                         primary_key=key, secondary_key=key, device_id="solo-device", allocation_policy="static",
                         iot_hubs=[hub_a.hostname]))
    env = hub_a.env
    wrong = register(env["DPS_DEVICE_ENDPOINT"], env["DPS_ID_SCOPE"], "solo-1",
                     "QkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkI=", env["DPS_CA_PATH"])
    assert "error" in wrong and a.get_device("solo-device").status_code == 404
    ok = register(env["DPS_DEVICE_ENDPOINT"], env["DPS_ID_SCOPE"], "solo-1", key, env["DPS_CA_PATH"])
    assert ok["assignedHub"] == hub_a.hostname and ok["deviceId"] == "solo-device"
    assert a.get_device("solo-device").json()["capabilities"]["iotEdge"] is False
    run_ok(ansible, task("off", "dps_enrollment", registration_id="solo-1", provisioning_status="disabled"))
    refused = register(env["DPS_DEVICE_ENDPOINT"], env["DPS_ID_SCOPE"], "solo-1", key, env["DPS_CA_PATH"])
    assert "error" in refused  # a disabled enrollment does not provision


def test_edge_hierarchy_enrolls_a_dps_gateway_then_adopts_it(ansible, emulator, hub):
    tree = [{"device_id": "plant-gw", "children": [
        {"device_id": "line1-gw", "provisioning": "dps", "tags": {"line": "1"},
         "children": [{"device_id": "line1-sensor-1"}, {"device_id": "line1-sensor-2"}]}]}]
    role = {"name": "hierarchy", "ansible.builtin.include_role": {"name": "fleet.azure_iot.edge_hierarchy"},
            "vars": {"edge_hierarchy_tree": tree, "edge_hierarchy_prune": True}}
    show = {"name": "result", "ansible.builtin.debug": {"var": "edge_hierarchy_result"}}
    first = run_ok(ansible, role, show)
    result = first.task("result").result["edge_hierarchy_result"]
    assert result["pending"] == ["line1-gw"] and sorted(result["waiting"]) == ["line1-sensor-1", "line1-sensor-2"]
    assert result["enrolled"] == ["line1-gw"]
    assert hub.get_device("plant-gw").status_code == 200
    for held in ("line1-gw", "line1-sensor-1"):
        assert hub.get_device(held).status_code == 404  # enrolled or waiting, not created
    again = run_ok(ansible, role, show)
    assert again.task("result").result["edge_hierarchy_result"]["changed"] is False  # pending is not a change

    # the gateway registers (Microsoft's Node SDK, with its enrollment's key)
    env = emulator.env
    dps = Dps(emulator)
    key = dps.keys("line1-gw")[0]
    res = register(env["DPS_DEVICE_ENDPOINT"], env["DPS_ID_SCOPE"], "line1-gw", key, env["DPS_CA_PATH"])
    assert res["status"] == "assigned" and res["assignedHub"] == emulator.hostname
    adopted = run_ok(ansible, role, show)
    result = adopted.task("result").result["edge_hierarchy_result"]
    assert result["pending"] == [] and result["changed"] is True
    gw = hub.get_device("line1-gw").json()
    plant = hub.get_device("plant-gw").json()
    assert gw["parentScopes"] == [plant["deviceScope"]] and gw["capabilities"]["iotEdge"] is True
    assert gw["authentication"]["symmetricKey"]["primaryKey"] == key  # adopted without touching its keys
    assert hub.get_device("line1-sensor-1").json()["deviceScope"] == gw["deviceScope"]
    assert hub.request("GET", "/twins/line1-gw").json()["tags"]["line"] == "1"
    final = run_ok(ansible, role, show)
    assert final.task("result").result["edge_hierarchy_result"]["changed"] is False
    dps.http.close()


def test_edge_gateway_dps_pending_then_adopted(ansible, emulator, hub):
    role = {"name": "gateway", "ansible.builtin.include_role": {"name": "fleet.azure_iot.edge_gateway"},
            "vars": {"edge_gateway_id": "site-gw", "edge_gateway_provisioning": "dps", "edge_gateway_tags": {"site": "s1"},
                     "edge_gateway_children": ["site-sensor-1"]}}
    show = {"name": "result", "ansible.builtin.debug": {"var": "edge_gateway_result"}}
    first = run_ok(ansible, role, show)
    res = first.task("result").result["edge_gateway_result"]
    assert res["pending"] is True and res["changed"] is True and res["device_scope"] is None
    assert hub.get_device("site-gw").status_code == 404 and hub.get_device("site-sensor-1").status_code == 404
    assert run_ok(ansible, role, show).task("result").result["edge_gateway_result"]["changed"] is False
    dps = Dps(emulator)
    key = dps.keys("site-gw")[0]
    env = emulator.env
    assert register(env["DPS_DEVICE_ENDPOINT"], env["DPS_ID_SCOPE"], "site-gw", key, env["DPS_CA_PATH"])["status"] \
        == "assigned"
    adopted = run_ok(ansible, role, show).task("result").result["edge_gateway_result"]
    gw = hub.get_device("site-gw").json()
    assert adopted["pending"] is False and adopted["device_scope"] == gw["deviceScope"]
    assert gw["authentication"]["symmetricKey"]["primaryKey"] == key
    assert hub.get_device("site-sensor-1").json()["deviceScope"] == gw["deviceScope"]
    assert run_ok(ansible, role, show).task("result").result["edge_gateway_result"]["changed"] is False
    bad = ansible.run(play({"name": "keys", "ansible.builtin.include_role": {"name": "fleet.azure_iot.edge_gateway"},
                            "vars": {"edge_gateway_id": "k-gw", "edge_gateway_provisioning": "dps",
                                     "edge_gateway_primary_key": "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUE="}}))
    assert bad.rc != 0 and "takes no" in bad.output
    dps.http.close()
