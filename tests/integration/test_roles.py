"""Roles edge_gateway and edge_hierarchy: real ansible-playbook runs against the emulator."""

from __future__ import annotations

import yaml
from helpers import counting, play


def role_play(role: str, after: list | None = None, **vars) -> str:
    return yaml.safe_dump([{
        "name": "role test", "hosts": "localhost", "gather_facts": False,
        "tasks": [{"name": "apply role", "ansible.builtin.include_role": {"name": f"fleet.azure_iot.{role}"}, "vars": vars}]
        + (after or []),
    }], sort_keys=False)


def fact(run, name):
    return run.task(f"Publish {name}").result["ansible_facts"][name]


def apply(ansible, role, check=False, expect_rc=0, after=None, **vars):
    r = ansible.run(role_play(role, after, **vars), check=check)
    assert r.rc == expect_rc, r.output[-4000:]
    return r


GATEWAY_CHILDREN = [{"device_id": "line1-sensor-1"}, {"device_id": "line1-sensor-2"},
                    {"device_id": "line1-gw", "edge_enabled": True}]


def test_edge_gateway_first_run_rerun_and_result(ansible, emulator, hub):
    with counting(emulator) as w:
        r = apply(ansible, "edge_gateway", edge_gateway_id="plant-gw", edge_gateway_children=GATEWAY_CHILDREN)
    res = fact(r, "edge_gateway_result")
    gw = hub.get_device("plant-gw").json()
    assert res["changed"] and res["device_scope"] == gw["deviceScope"] and gw["capabilities"]["iotEdge"]
    assert res["children"] == ["line1-gw", "line1-sensor-1", "line1-sensor-2"]
    assert hub.get_device("line1-sensor-1").json()["deviceScope"] == gw["deviceScope"]
    assert hub.get_device("line1-gw").json()["parentScopes"] == [gw["deviceScope"]]
    assert w.delta("bulk_calls") == 2  # the gateway first, then its children
    with counting(emulator) as w:
        again = apply(ansible, "edge_gateway", edge_gateway_id="plant-gw", edge_gateway_children=GATEWAY_CHILDREN)
    assert not fact(again, "edge_gateway_result")["changed"] and w.writes == 0
    assert again.changed_tasks() == []


def test_edge_gateway_add_remove_and_prune_children(ansible, hub):
    apply(ansible, "edge_gateway", edge_gateway_id="gw", edge_gateway_children=GATEWAY_CHILDREN)
    fewer = [{"device_id": "line1-sensor-1"}, {"device_id": "line1-sensor-3"}]
    kept = apply(ansible, "edge_gateway", edge_gateway_id="gw", edge_gateway_children=fewer)
    assert fact(kept, "edge_gateway_result")["created"] == ["line1-sensor-3"]
    assert hub.get_device("line1-sensor-2").status_code == 200  # not pruned unless asked
    hub.put_device("elsewhere", {"deviceId": "elsewhere"})
    pruned = apply(ansible, "edge_gateway", edge_gateway_id="gw", edge_gateway_children=fewer,
                   edge_gateway_prune_children=True)
    assert fact(pruned, "edge_gateway_result")["deleted"] == ["line1-gw", "line1-sensor-2"]
    assert hub.get_device("elsewhere").status_code == 200  # never touched: not under the gateway


def test_edge_gateway_check_mode_and_nested_parent(ansible, emulator, hub):
    with counting(emulator) as w:
        r = apply(ansible, "edge_gateway", check=True, edge_gateway_id="gw", edge_gateway_children=GATEWAY_CHILDREN)
    assert w.writes == 0 and fact(r, "edge_gateway_result")["changed"]
    assert hub.get_device("gw").status_code == 404
    apply(ansible, "edge_gateway", edge_gateway_id="top", edge_gateway_children=[])
    apply(ansible, "edge_gateway", edge_gateway_id="lower", edge_gateway_parent="top",
          edge_gateway_children=[{"device_id": "s"}])
    top = hub.get_device("top").json()["deviceScope"]
    assert hub.get_device("lower").json()["parentScopes"] == [top]


def test_edge_gateway_connection_string_is_no_log(ansible, hub, tmp_path):
    out = tmp_path / "cs.txt"
    save = [{"name": "save it", "ansible.builtin.copy": {"content": "{{ edge_gateway_device_connection_string }}",
                                                         "dest": str(out), "mode": "0600"}, "no_log": True}]
    r = apply(ansible, "edge_gateway", after=save, edge_gateway_id="gw", edge_gateway_return_connection_string=True)
    key = hub.get_device("gw").json()["authentication"]["symmetricKey"]["primaryKey"]
    assert out.read_text().endswith(f"DeviceId=gw;SharedAccessKey={key}")
    assert key not in r.output and key not in str(r.tasks)


TREE = [{"device_id": "plant-gw", "children": [
    {"device_id": "line1-gw", "children": [{"device_id": "line1-sensor-1"}, {"device_id": "line1-sensor-2"}]},
    {"device_id": "plant-meter"},
]}]


def test_edge_hierarchy_first_run_rerun_and_result(ansible, emulator, hub):
    with counting(emulator) as w:
        r = apply(ansible, "edge_hierarchy", edge_hierarchy_tree=TREE)
    res = fact(r, "edge_hierarchy_result")
    plant, line1 = hub.get_device("plant-gw").json(), hub.get_device("line1-gw").json()
    assert res["changed"] and sorted(res["gateways"]) == ["line1-gw", "plant-gw"]
    assert res["gateways"]["plant-gw"]["device_scope"] == plant["deviceScope"]
    assert res["gateways"]["plant-gw"]["children"] == ["line1-gw", "plant-meter"]
    assert res["gateways"]["line1-gw"]["children"] == ["line1-sensor-1", "line1-sensor-2"]
    assert line1["parentScopes"] == [plant["deviceScope"]]
    assert hub.get_device("line1-sensor-2").json()["deviceScope"] == line1["deviceScope"]
    assert hub.get_device("plant-meter").json()["deviceScope"] == plant["deviceScope"]
    assert w.delta("bulk_calls") == 3  # one per layer
    with counting(emulator) as w:
        again = apply(ansible, "edge_hierarchy", edge_hierarchy_tree=TREE)
    assert not fact(again, "edge_hierarchy_result")["changed"] and w.writes == 0


def test_edge_hierarchy_add_remove_move_and_prune(ansible, hub):
    apply(ansible, "edge_hierarchy", edge_hierarchy_tree=TREE)
    moved = [{"device_id": "plant-gw", "children": [
        {"device_id": "line1-gw", "children": [{"device_id": "line1-sensor-1"}]},
        {"device_id": "plant-meter"},
        {"device_id": "line1-sensor-2"},  # moved up to the plant gateway
        {"device_id": "line2-gw", "children": [{"device_id": "line2-sensor-1"}]},  # added
    ]}]
    r = apply(ansible, "edge_hierarchy", edge_hierarchy_tree=moved)
    res = fact(r, "edge_hierarchy_result")
    assert res["updated"] == ["line1-sensor-2"] and res["created"] == ["line2-gw", "line2-sensor-1"]
    plant = hub.get_device("plant-gw").json()["deviceScope"]
    assert hub.get_device("line1-sensor-2").json()["deviceScope"] == plant
    removed = [{"device_id": "plant-gw", "children": [{"device_id": "line1-gw", "children": []},
                                                      {"device_id": "line2-gw", "edge_enabled": True}]}]
    kept = apply(ansible, "edge_hierarchy", edge_hierarchy_tree=removed)
    assert fact(kept, "edge_hierarchy_result")["deleted"] == []  # non-destructive by default
    pruned = apply(ansible, "edge_hierarchy", edge_hierarchy_tree=removed, edge_hierarchy_prune=True)
    # line1-gw says children: [] (its children go); line2-gw says nothing of its children (they stay)
    assert fact(pruned, "edge_hierarchy_result")["deleted"] == ["line1-sensor-1", "line1-sensor-2", "plant-meter"]
    assert hub.get_device("line2-sensor-1").status_code == 200
    assert hub.get_device("line1-gw").json()["capabilities"]["iotEdge"] is True


def test_edge_hierarchy_check_mode_writes_nothing(ansible, emulator):
    with counting(emulator) as w:
        r = apply(ansible, "edge_hierarchy", check=True, edge_hierarchy_tree=TREE)
    assert w.writes == 0 and fact(r, "edge_hierarchy_result")["changed"]
    assert fact(r, "edge_hierarchy_result")["created"] == ["line1-gw", "line1-sensor-1", "line1-sensor-2", "plant-gw", "plant-meter"]


def test_edge_hierarchy_validates_the_whole_tree_first(ansible, emulator):
    deep = {"device_id": "L6", "edge_enabled": True}
    for i in range(5, 0, -1):
        deep = {"device_id": f"L{i}", "children": [deep]}
    cases = [
        ([{"device_id": "gw", "edge_enabled": False, "children": [{"device_id": "x"}]}], "cannot have children"),
        ([deep], "at most 5"),
        ([{"device_id": "gw", "children": [{"device_id": "a"}]}, {"device_id": "a"}], "declared more than once"),
        ([{"device_id": "gw", "children": [{"device_id": "bad id"}]}], "not a valid IoT Hub device id"),
        ([{"device_id": "gw", "children": [{"device_id": "c", "parent": "other"}]}], "contradicts"),
    ]
    for tree, fragment in cases:
        with counting(emulator) as w:
            r = apply(ansible, "edge_hierarchy", expect_rc=2, edge_hierarchy_tree=tree)
        msg = r.task("Converge the hierarchy top-down in one bulk task").result["msg"]
        assert fragment in msg, (fragment, msg)
        assert w.delta("requests") == 0
    bad_type = apply(ansible, "edge_hierarchy", expect_rc=2, edge_hierarchy_tree="not a list")
    assert "edge_hierarchy_tree" in bad_type.output


def test_edge_gateway_children_may_be_plain_ids(ansible, emulator, hub):
    """#29 item 4: children as iothub_device_bulk takes them, plain ids included."""
    role = {"name": "gw", "ansible.builtin.include_role": {"name": "fleet.azure_iot.edge_gateway"},
            "vars": {"edge_gateway_id": "ids-gw", "edge_gateway_children": ["ids-a", {"device_id": "ids-b"}]}}
    r = ansible.run(play(role))
    assert r.rc == 0, r.output[-3000:]
    result = r.task("Publish edge_gateway_result").result["ansible_facts"]["edge_gateway_result"]
    assert result["children"] == ["ids-a", "ids-b"]
    scope = hub.get_device("ids-gw").json()["deviceScope"]
    assert all(hub.get_device(c).json()["deviceScope"] == scope for c in ("ids-a", "ids-b"))
