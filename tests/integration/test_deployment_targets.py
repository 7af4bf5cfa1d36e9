"""IoT Edge deployments reach the right devices with the right content (#23 items 1-3): the manifest of a gateway's
real layer in the hub, no change dropped while a module twin is missing, and a node with an empty children list is
a gateway.  Real playbooks against the emulator."""

from __future__ import annotations

import copy

from helpers import counting, play, run_ok, task

from test_edge_deployments import MANIFEST, agent_desired


def images(hub, did):
    d = agent_desired(hub, did)
    return [m["settings"]["image"] for m in list(d["systemModules"].values()) + list(d["modules"].values())]


def hierarchy(tree, **more):
    return {"name": "apply", "ansible.builtin.include_role": {"name": "fleet.azure_iot.edge_hierarchy"},
            "vars": {"edge_hierarchy_tree": tree, "edge_hierarchy_default_deployment": "nested",
                     "edge_hierarchy_registry": "myregistry.azurecr.io", **more}}


def edge_gateway(hub, did, parent=None):
    body = {"deviceId": did, "capabilities": {"iotEdge": True}}
    if parent:
        body["parentScopes"] = [hub.get_device(parent).json()["deviceScope"]]
    assert hub.put_device(did, body).status_code == 200


def test_a_subtree_gets_the_manifests_of_its_real_layers(ansible, emulator, hub):
    """Item 1: a tree whose top node sits below an existing gateway (named by parent, or only in the hub)."""
    edge_gateway(hub, "plant-gw")
    for tree in ([{"device_id": "line-gw", "parent": "plant-gw", "children": [{"device_id": "cell-gw", "children": [
                  {"device_id": "cell-sensor"}]}]}],
                 [{"device_id": "line-gw", "children": [{"device_id": "cell-gw", "children": [
                  {"device_id": "cell-sensor"}]}]}]):  # the second run names no parent: line-gw's is the hub's
        r = run_ok(ansible, play(hierarchy(tree)))
        bulk = r.task("Converge the hierarchy top-down in one bulk task").result
        assert {d["device_id"]: d["layer"] for d in bulk["edge_devices"]} == {"line-gw": 2, "cell-gw": 3}
        for lower in ("line-gw", "cell-gw"):
            assert all(i.startswith("$upstream:443/") for i in images(hub, lower)), images(hub, lower)
    with counting(emulator) as w:
        again = run_ok(ansible, play(hierarchy(tree)))
    assert w.writes == 0 and again.changed_tasks() == []


def test_a_change_is_not_dropped_while_a_module_twin_is_missing(ansible, emulator, hub):
    """Item 2: applying the content creates the module twins; a module twin that is gone (or never made) is a
    difference, and a change to its desired properties is written."""
    edge_gateway(hub, "gw")
    apply = task("t", "iothub_edge_modules", device_id="gw", content=MANIFEST["modulesContent"])
    assert run_ok(ansible, play(apply)).task("t").changed
    assert hub.request("GET", "/twins/gw/modules/sensor").json()["properties"]["desired"]["SendInterval"] == 5
    with counting(emulator) as w:
        assert not run_ok(ansible, play(apply)).task("t").changed
    assert w.writes == 0
    assert hub.request("DELETE", "/devices/gw/modules/sensor", headers={"If-Match": "*"}).status_code == 204
    changed = copy.deepcopy(MANIFEST["modulesContent"])
    changed["sensor"]["properties.desired"]["SendInterval"] = 10
    with counting(emulator) as w:
        chk = run_ok(ansible, play(task("t", "iothub_edge_modules", device_id="gw", content=changed)), check=True)
    assert w.writes == 0 and chk.task("t").changed and chk.task("t").result["changes"] == ["sensor"]
    r = run_ok(ansible, play(task("t", "iothub_edge_modules", device_id="gw", content=changed)))
    assert r.task("t").changed
    assert hub.request("GET", "/twins/gw/modules/sensor").json()["properties"]["desired"]["SendInterval"] == 10


def test_a_node_with_an_empty_children_list_is_a_gateway(ansible, emulator, hub):
    """Item 3: ``children: []`` is "a gateway with no children (yet)": an edge device, with its deployment."""
    r = run_ok(ansible, play(hierarchy([{"device_id": "lonely-gw", "children": []}])))
    assert hub.get_device("lonely-gw").json()["capabilities"]["iotEdge"] is True
    bulk = r.task("Converge the hierarchy top-down in one bulk task").result
    assert [d["device_id"] for d in bulk["edge_devices"]] == ["lonely-gw"]
    assert all(i.startswith("myregistry.azurecr.io/") or i == "registry:latest" for i in images(hub, "lonely-gw"))
