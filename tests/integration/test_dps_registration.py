"""Devices register through the emulator's DPS with Microsoft's Node device SDK (npm, unmodified), with keys the
collection's derive_device_key filter computed, and land in the allocated one of two linked hubs (two emulator
processes) with the enrollment's IoT Edge capability and initial twin; a re-provision moves one with its twin."""

from __future__ import annotations


import pytest
from helpers import run_ok, task
from support.node_sdk import register
from support.emulator import env_without_proxies
from support.hub import HubClient
from support.ansible import AnsibleRunner

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
