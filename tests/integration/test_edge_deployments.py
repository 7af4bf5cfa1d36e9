"""IoT Edge deployments: the modules of one gateway, configurations at scale, and nested defaults in the
hierarchy role.  Real playbooks against the emulator."""

from __future__ import annotations

import copy
import json

import yaml
from helpers import counting, play, task

PORTS = {"HostConfig": {"PortBindings": {"8883/tcp": [{"HostPort": "8883"}], "443/tcp": [{"HostPort": "443"}]}}}
MANIFEST = {"modulesContent": {
    "$edgeAgent": {"properties.desired": {
        "schemaVersion": "1.1", "runtime": {"type": "docker", "settings": {"minDockerVersion": "v1.25"}},
        "systemModules": {
            "edgeAgent": {"type": "docker", "settings": {"image": "mcr.microsoft.com/azureiotedge-agent:1.5"}},
            "edgeHub": {"type": "docker", "status": "running", "restartPolicy": "always",
                        "settings": {"image": "mcr.microsoft.com/azureiotedge-hub:1.5", "createOptions": PORTS}}},
        "modules": {"sensor": {"type": "docker", "status": "running", "restartPolicy": "always", "version": "1.0",
                               "settings": {"image": "mcr.microsoft.com/azureiotedge-simulated-temperature-sensor:1.5"}}}}},
    "$edgeHub": {"properties.desired": {"schemaVersion": "1.2",
                                        "routes": {"upstream": "FROM /messages/* INTO $upstream"},
                                        "storeAndForwardConfiguration": {"timeToLiveSecs": 7200}}},
    "sensor": {"properties.desired": {"SendInterval": 5}}}}


def run(ansible, *tasks, check=False, expect_rc=0):
    r = ansible.run(play(*tasks), check=check)
    assert r.rc == expect_rc, r.output[-3000:]
    return r


def agent_desired(hub, did):
    return hub.request("GET", f"/twins/{did}/modules/$edgeAgent").json()["properties"]["desired"]


def test_gateway_modules_applied_idempotent_and_createoptions_compared_as_json(ansible, emulator, hub, tmp_path):
    hub.put_device("gw", {"deviceId": "gw", "capabilities": {"iotEdge": True}})
    with counting(emulator) as w:
        chk = run(ansible, task("m", "iothub_edge_modules", device_id="gw", content=MANIFEST), check=True)
    assert chk.task("m").changed and w.writes == 0
    r = run(ansible, task("m", "iothub_edge_modules", device_id="gw", content=MANIFEST))
    res = r.task("m").result
    assert res["changed"] and res["changes"] == ["$edgeAgent", "$edgeHub", "sensor"] and res["modules"] == ["sensor"]
    opts = agent_desired(hub, "gw")["systemModules"]["edgeHub"]["settings"]["createOptions"]
    assert isinstance(opts, str) and json.loads(opts) == PORTS  # sent as a JSON string
    with counting(emulator) as w:
        again = run(ansible, task("m", "iothub_edge_modules", device_id="gw", content=MANIFEST))
    assert not again.task("m").changed and w.writes == 0
    # the same createOptions given as a string in another spelling, from a YAML file: still no change
    as_string = copy.deepcopy(MANIFEST)
    as_string["modulesContent"]["$edgeAgent"]["properties.desired"]["systemModules"]["edgeHub"]["settings"][
        "createOptions"] = json.dumps(PORTS, indent=2)
    path = tmp_path / "deployment.yml"
    path.write_text(yaml.safe_dump({"content": as_string}))
    with counting(emulator) as w:
        same = run(ansible, task("m", "iothub_edge_modules", device_id="gw", content_file=str(path)))
    assert not same.task("m").changed and w.writes == 0
    routed = copy.deepcopy(MANIFEST)
    routed["modulesContent"]["$edgeHub"]["properties.desired"]["routes"]["sensorToUpstream"] = \
        "FROM /messages/modules/sensor/* INTO $upstream"
    r = run(ansible, task("m", "iothub_edge_modules", device_id="gw", content=routed))
    assert r.task("m").result["changes"] == ["$edgeHub"] and r.task("m").result["diff"]["after"]["$edgeHub"]["routes"]
    assert "sensorToUpstream" in hub.request("GET", "/twins/gw/modules/$edgeHub").json()["properties"]["desired"]["routes"]


def test_long_create_options_are_chunked(ansible, hub):
    hub.put_device("gw2", {"deviceId": "gw2", "capabilities": {"iotEdge": True}})
    big = copy.deepcopy(MANIFEST)
    env = {f"VAR_{i}": "x" * 40 for i in range(30)}
    big["modulesContent"]["$edgeAgent"]["properties.desired"]["modules"]["sensor"]["settings"]["createOptions"] = {
        "Env": [f"{k}={v}" for k, v in env.items()]}
    run(ansible, task("m", "iothub_edge_modules", device_id="gw2", content=big))
    settings = agent_desired(hub, "gw2")["modules"]["sensor"]["settings"]
    assert "createOptions01" in settings and all(len(v) <= 512 for k, v in settings.items() if k.startswith("createOptions"))
    again = run(ansible, task("m", "iothub_edge_modules", device_id="gw2", content=big))
    assert not again.task("m").changed


def test_configuration_created_updated_in_place_and_recreated(ansible, emulator, hub):
    base = {"id": "plant7-base", "content": MANIFEST, "target_condition": "tags.site = 'plant-7'", "priority": 10,
            "labels": {"team": "ops"}}
    r = run(ansible, task("c", "iothub_configuration", **base))
    assert r.task("c").result["action"] == "create"
    with counting(emulator) as w:
        again = run(ansible, task("c", "iothub_configuration", **base))
    assert not again.task("c").changed and w.writes == 0
    r = run(ansible, task("c", "iothub_configuration", id="plant7-base", priority=20,
                          target_condition="tags.site = 'plant-7' AND tags.line = 1"))
    assert r.task("c").result["action"] == "update" and r.task("c").result["changes"] == ["priority", "target_condition"]
    cfg = hub.request("GET", "/configurations/plant7-base").json()
    assert cfg["priority"] == 20 and cfg["labels"] == {"team": "ops"} and cfg["etag"] == "Mg=="
    changed = copy.deepcopy(MANIFEST)
    changed["modulesContent"]["sensor"]["properties.desired"]["SendInterval"] = 10
    with counting(emulator) as w:
        refused = ansible.run(play(task("c", "iothub_configuration", id="plant7-base", content=changed)))
    assert refused.rc != 0 and "recreate=true" in refused.task("c").result["msg"] and w.writes == 0
    with counting(emulator) as w:
        chk = run(ansible, task("c", "iothub_configuration", id="plant7-base", content=changed, recreate=True), check=True)
    assert chk.task("c").result["action"] == "recreate" and w.writes == 0
    r = run(ansible, task("c", "iothub_configuration", id="plant7-base", content=changed, recreate=True))
    assert r.task("c").result["action"] == "recreate"
    cfg = hub.request("GET", "/configurations/plant7-base").json()
    assert cfg["content"]["modulesContent"]["sensor"]["properties.desired"]["SendInterval"] == 10
    assert cfg["priority"] == 20 and cfg["etag"] == "MQ=="  # a new configuration under the same id
    info = run(ansible, task("i", "iothub_configuration_info"))
    configurations = info.task("i").result["configurations"]
    assert [c["id"] for c in configurations] == ["plant7-base"] and "targetedCount" in configurations[0]["systemMetrics"]["results"]
    run(ansible, task("c", "iothub_configuration", id="plant7-base", state="absent"))
    assert hub.request("GET", "/configurations/plant7-base").status_code == 404


def _images(hub, did):
    d = agent_desired(hub, did)
    return [m["settings"]["image"] for m in list(d["systemModules"].values()) + list(d["modules"].values())]


def test_hierarchy_with_nested_default_deployments(ansible, emulator, hub):
    tree = [{"device_id": "top-gw", "children": [
        {"device_id": "mid-gw", "children": [
            {"device_id": "low-gw", "children": [{"device_id": "sensor-1"}]}]}]}]
    role = {"name": "apply", "ansible.builtin.include_role": {"name": "fleet.azure_iot.edge_hierarchy"},
            "vars": {"edge_hierarchy_tree": tree, "edge_hierarchy_default_deployment": "nested",
                     "edge_hierarchy_registry": "myregistry.azurecr.io"}}
    with counting(emulator) as w:
        chk = run(ansible, role, check=True)
    assert w.writes == 0 and chk.task("Give every gateway its modules, top-down").changed
    r = run(ansible, role)
    result = r.task("Publish edge_hierarchy_result").result["ansible_facts"]["edge_hierarchy_result"]
    assert result["deployed"] == ["top-gw", "mid-gw", "low-gw"]  # top-down
    assert all(i.startswith("myregistry.azurecr.io/") or i == "registry:latest" for i in _images(hub, "top-gw"))
    for lower in ("mid-gw", "low-gw"):
        assert all(i.startswith("$upstream:443/") for i in _images(hub, lower)), _images(hub, lower)
        routes = hub.request("GET", f"/twins/{lower}/modules/$edgeHub").json()["properties"]["desired"]["routes"]
        assert list(routes.values()) == ["FROM /messages/* INTO $upstream"]
    with counting(emulator) as w:
        again = run(ansible, role)
    assert w.writes == 0 and again.changed_tasks() == []
    # a node's own deployment wins over the default
    tree[0]["children"][0]["deployment"] = MANIFEST
    r = run(ansible, role)
    assert "sensor" in agent_desired(hub, "mid-gw")["modules"]


def test_edge_gateway_role_applies_its_deployment(ansible, emulator, hub):
    role = {"name": "apply", "ansible.builtin.include_role": {"name": "fleet.azure_iot.edge_gateway"},
            "vars": {"edge_gateway_id": "eg", "edge_gateway_children": [{"device_id": "eg-s"}],
                     "edge_gateway_deployment": MANIFEST}}
    r = run(ansible, role)
    assert r.task("Publish edge_gateway_result").result["ansible_facts"]["edge_gateway_result"]["changed"]
    assert "sensor" in agent_desired(hub, "eg")["modules"]
    with counting(emulator) as w:
        run(ansible, role)
    assert w.writes == 0


def test_bad_input_for_deployments(ansible, emulator, hub):
    hub.put_device("leaf", {"deviceId": "leaf"})

    def manifest(path, value):
        m = copy.deepcopy(MANIFEST)
        node = m["modulesContent"]
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
        return m
    agent = ["$edgeAgent", "properties.desired"]
    cases = [
        ("iothub_edge_modules", {"device_id": "gw", "content": {"modulesContent": {}}}, "$edgeAgent"),
        ("iothub_edge_modules", {"device_id": "gw", "content": manifest(agent + ["schemaVersion"], "2.0")}, "schemaVersion"),
        ("iothub_edge_modules", {"device_id": "gw", "content": manifest(agent + ["modules"], {
            f"m{i}": {"settings": {"image": "x"}} for i in range(51)})}, "at most 50"),
        ("iothub_edge_modules", {"device_id": "gw", "content": manifest(agent + ["modules", "bad name!"],
                                                                         {"settings": {"image": "x"}})}, "module name"),
        ("iothub_edge_modules", {"device_id": "gw", "content": manifest(agent + ["modules", "sensor", "settings"], {})},
         "image"),
        ("iothub_edge_modules", {"device_id": "gw", "content": manifest(["$edgeHub", "properties.desired", "routes"], None)},
         "routes"),
        ("iothub_edge_modules", {"device_id": "gw", "content": manifest(
            agent + ["systemModules", "edgeHub", "settings", "createOptions"], "{not json")}, "not valid JSON"),
        ("iothub_edge_modules", {"device_id": "gw", "content_file": "/nonexistent.json"}, "content_file"),
        ("iothub_configuration", {"id": "Upper", "content": MANIFEST}, "lower-case"),
        ("iothub_configuration", {"id": "c", "content": {"deviceContent": {"tags.a": 1}}}, "properties.desired"),
        ("iothub_configuration", {"id": "c", "content": MANIFEST, "metrics": {f"m{i}": "SELECT * FROM devices"
                                                                             for i in range(6)}}, "custom metrics"),
        ("iothub_configuration", {"id": "c", "content": MANIFEST, "priority": -1}, "priority"),
        ("iothub_configuration_info", {"id": "Bad Id"}, "configuration id"),
    ]
    for module, args, fragment in cases:
        with counting(emulator) as w:
            r = ansible.run(play(task("t", module, **args)))
        msg = r.task("t").result.get("msg", "")
        assert r.rc != 0 and fragment in msg, (module, args, msg)
        assert w.delta("requests") == 0 and "Traceback" not in r.output
    with counting(emulator) as w:
        r = ansible.run(play(task("t", "iothub_edge_modules", device_id="leaf", content=MANIFEST)))
    assert r.rc != 0 and "is not an IoT Edge device" in r.task("t").result["msg"] and w.writes == 0
    with counting(emulator) as w:
        r = ansible.run(play(task("t", "iothub_configuration", id="new-cfg", priority=3)))
    assert r.rc != 0 and "needs content" in r.task("t").result["msg"] and w.writes == 0
