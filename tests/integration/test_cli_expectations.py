"""What users of the az CLI expect (#29 item 5): iothub_device and iothub_module return the twin they manage,
iothub_module pre-creates an edge-managed module (managed_by), and the sas_token filter makes a device SAS token
the emulator accepts.  Real playbooks against the emulator."""

from __future__ import annotations

from helpers import counting, play, run_ok, task


def test_the_twin_a_task_manages_is_returned(ansible, emulator, hub):
    args = dict(device_id="tw", tags={"site": "plant-7"}, desired_properties={"interval": 30})
    with counting(emulator) as w:
        chk = run_ok(ansible, play(task("d", "iothub_device", **args)), check=True)
    assert w.writes == 0 and chk.task("d").result["twin"]["tags"] == {"site": "plant-7"}  # predicted
    r = run_ok(ansible, play(task("d", "iothub_device", **args)))
    twin = r.task("d").result["twin"]
    hub_twin = hub.request("GET", "/twins/tw").json()
    assert twin["tags"] == {"site": "plant-7"} and twin["properties"]["desired"]["interval"] == 30
    assert twin["etag"] == hub_twin["etag"]  # the twin as the hub answered the write
    again = run_ok(ansible, play(task("d", "iothub_device", **args)))
    assert not again.task("d").changed and again.task("d").result["twin"]["etag"] == hub_twin["etag"]
    plain = run_ok(ansible, play(task("d", "iothub_device", device_id="tw")))
    assert "twin" not in plain.task("d").result  # not managed: not returned
    hub.put_device("edge", {"deviceId": "edge", "capabilities": {"iotEdge": True}})
    m = run_ok(ansible, play(task("m", "iothub_module", device_id="edge", module_id="filter",
                                  desired_properties={"threshold": 5})))
    assert m.task("m").result["twin"]["properties"]["desired"]["threshold"] == 5


def test_a_custom_module_precreated_as_edge_managed(ansible, emulator, hub):
    hub.put_device("edge2", {"deviceId": "edge2", "capabilities": {"iotEdge": True}})
    args = dict(device_id="edge2", module_id="workload", managed_by="IotEdge")
    r = run_ok(ansible, play(task("m", "iothub_module", **args)))
    assert r.task("m").changed and hub.request("GET", "/devices/edge2/modules/workload").json()["managedBy"] == "IotEdge"
    with counting(emulator) as w:
        again = run_ok(ansible, play(task("m", "iothub_module", **args)))
    assert w.writes == 0 and not again.task("m").changed
    refused = ansible.run(play(task("m", "iothub_module", device_id="edge2", module_id="workload", managed_by="ops")))
    assert refused.rc != 0 and "force=true" in refused.task("m").result["msg"]
    moved = run_ok(ansible, play(task("m", "iothub_module", device_id="edge2", module_id="workload", managed_by="ops",
                                      force=True)))
    assert moved.task("m").result["changes"] == ["managed_by"]
    assert hub.request("GET", "/devices/edge2/modules/workload").json()["managedBy"] == "ops"


def test_sas_token_filter_makes_a_token_the_hub_accepts(ansible, emulator, hub):
    """A device SAS token from the device's connection string, as az iot hub generate-sas-token makes it: the
    emulator accepts it for the device's own endpoint (a device-to-cloud smoke test in the same job)."""
    r = ansible.run(play(
        task("d", "iothub_device", device_id="smoke", return_secrets=True, register="dev"),
        {"name": "token", "ansible.builtin.set_fact": {
            "token": "{{ dev.connection_string | fleet.azure_iot.sas_token(expiry=600) }}"}, "no_log": True},
        {"name": "check", "ansible.builtin.assert": {"that": [
            "token.startswith('SharedAccessSignature sr=')", "'&sig=' in token", "'&se=' in token",
            "'skn=' not in token", "'smoke' in token"]}}), allow_secrets=True)  # the device's keys are asked for
    assert r.rc == 0 and r.task("check").result.get("failed") is not True, r.output[-3000:]
    assert "SharedAccessSignature sr=" not in r.output  # no_log: the token itself is never printed
