"""Right on the real service whatever its unknowns: bulk twin writes that give the same twin whether the hub
merges or replaces (the emulator plays both with --bulk-twin-mode), the documented query escapes, the page size
the hub really uses, its limits checked before the first request, and one bulk call per 100 drifted devices."""

from __future__ import annotations

import pytest
from helpers import counting, play, task

MODES = ["replace", "merge"]


@pytest.fixture(params=MODES)
def twin_mode(request, emulator):
    emulator.configure(bulk_twin_mode=request.param)
    yield request.param
    emulator.configure(bulk_twin_mode="replace")


def bulk(ansible, expect_rc=0, check=False, **args):
    r = ansible.run(play(task("t", "iothub_device_bulk", **args)), check=check)
    assert r.rc == expect_rc, r.output[-3000:]
    return r.task("t").result


def twin(hub, did):
    doc = hub.request("GET", f"/twins/{did}").json()
    return doc.get("tags", {}), {k: v for k, v in doc["properties"]["desired"].items() if not k.startswith("$")}


def test_bulk_twin_changes_give_the_same_twin_under_both_readings(ansible, emulator, hub, twin_mode):
    hub.bulk([{"id": f"tw{i}", "importMode": "create", "tags": {"a": 1, "b": 2, "nested": {"x": 1, "y": 2}},
               "properties": {"desired": {"p": 1, "q": 2}}} for i in range(3)])
    devices = [
        {"device_id": "tw0", "tags": {"b": 3}, "desired_properties": {"r": 5}},            # add and change only
        {"device_id": "tw1", "tags": {"nested": {"y": None}}, "desired_properties": {"q": None}},   # removals
        {"device_id": "tw2", "status": "disabled", "tags": {"b": 4}},                       # identity and twin
    ]
    with counting(emulator) as w:
        res = bulk(ansible, devices=devices)
    assert sorted(res["updated"]) == ["tw0", "tw1", "tw2"] and not res["failed_devices"]
    assert twin(hub, "tw0") == ({"a": 1, "b": 3, "nested": {"x": 1, "y": 2}}, {"p": 1, "q": 2, "r": 5})
    assert twin(hub, "tw1") == ({"a": 1, "b": 2, "nested": {"x": 1}}, {"p": 1})
    assert twin(hub, "tw2") == ({"a": 1, "b": 4, "nested": {"x": 1, "y": 2}}, {"p": 1, "q": 2})
    assert hub.get_device("tw2").json()["status"] == "disabled"
    # the removal is one twin PATCH; tw2's twin follows its identity in a later bulk call
    assert w.delta("twin_writes") == 1 and w.delta("bulk_calls") == 2
    with counting(emulator) as w:
        again = bulk(ansible, devices=devices)
    assert not again["changed"] and w.writes == 0


def test_role_twin_defaults_under_both_readings(ansible, emulator, hub, twin_mode):
    tree = [{"device_id": "gw", "children": [{"device_id": "s1", "tags": {"line": 1}}]}]
    role = {"name": "apply", "ansible.builtin.include_role": {"name": "fleet.azure_iot.edge_hierarchy"},
            "vars": {"edge_hierarchy_tree": tree, "edge_hierarchy_defaults": {"tags": {"site": "p7", "old": "x"}}}}
    assert ansible.run(play(role)).rc == 0
    hub.request("PATCH", "/twins/s1", json={"tags": {"owner": "someone else"}})
    role["vars"]["edge_hierarchy_defaults"] = {"tags": {"site": "p8", "old": None}}
    r = ansible.run(play(role))
    assert r.rc == 0, r.output[-3000:]
    assert twin(hub, "s1")[0] == {"line": 1, "site": "p8", "owner": "someone else"}
    assert twin(hub, "gw")[0] == {"site": "p8"}
    with counting(emulator) as w:
        assert ansible.run(play(role)).rc == 0
    assert w.writes == 0


def test_device_ids_with_a_quote_converge_as_devices_and_parents(ansible, emulator, hub):
    tree = [{"device_id": "o'gw", "children": [{"device_id": "it's-1"}, {"device_id": "it's-2"}]}]
    res = bulk(ansible, tree=tree, prune_children=True)
    assert sorted(res["created"]) == ["it's-1", "it's-2", "o'gw"]
    gw = hub.get_device("o'gw").json()["deviceScope"]
    assert hub.get_device("it's-1").json()["deviceScope"] == gw
    hub.put_device("stray's", {"deviceId": "stray's", "deviceScope": gw})
    res = bulk(ansible, tree=tree, prune_children=True)
    assert res["deleted"] == ["stray's"] and sorted(res["unchanged"]) == ["it's-1", "it's-2", "o'gw"]
    many = [f"q'{i:03d}" for i in range(30)]
    bulk(ansible, devices=many)
    with counting(emulator) as w:
        again = bulk(ansible, devices=many)  # read through IN lists with escaped literals
    assert len(again["unchanged"]) == 30 and w.writes == 0


def test_a_drift_spread_over_three_levels_costs_one_bulk_call(ansible, emulator, hub):
    tree = [{"device_id": "L1", "children": [
        {"device_id": "L1-s"},
        {"device_id": "L2", "children": [
            {"device_id": "L2-s"},
            {"device_id": "L3", "children": [{"device_id": "L3-s1"}, {"device_id": "L3-s2"}]}]}]}]
    bulk(ansible, tree=tree)

    def drift(node):
        out = dict(node, status_reason="drift")
        if "children" in node:
            out["children"] = [drift(c) for c in node["children"]]
        return out
    drifted = drift(tree[0])
    drifted["status_reason"] = None  # L1 unchanged
    drifted["children"][1]["status_reason"] = None  # L2 unchanged: L1-s, L2-s, L3, L3-s1, L3-s2 drift
    drifted = {k: v for k, v in drifted.items() if v is not None}
    drifted["children"][1] = {k: v for k, v in drifted["children"][1].items() if v is not None}
    with counting(emulator) as w:
        res = bulk(ansible, tree=[drifted])
    assert sorted(res["updated"]) == ["L1-s", "L2-s", "L3", "L3-s1", "L3-s2"]
    assert w.delta("bulk_calls") == 1


def test_reads_follow_the_page_size_the_hub_uses(ansible, emulator, hub):
    for start in range(0, 1000, 100):
        hub.bulk([{"id": f"pg{i:04d}", "importMode": "create"} for i in range(start, start + 100)])
    res = bulk(ansible, devices=[f"pg{i:04d}" for i in range(0, 1000, 200)])  # 5 of 1000
    assert len(res["unchanged"]) == 5
    assert res["requests"]["query_pages"] == 3  # COUNT, the first page of the scan (page size 100), one IN list
    res = bulk(ansible, devices=[f"pg{i:04d}" for i in range(1000)])  # all of them: the scan is cheaper
    assert len(res["unchanged"]) == 1000 and res["requests"]["query_pages"] == 11


def test_limits_are_checked_before_the_first_request(ansible, emulator):
    def nest(n):
        node = {"leaf": 1}
        for i in range(n - 1):
            node = {f"l{i}": node}
        return {"top": node}
    cases = [
        ({"devices": [{"device_id": "d", "tags": nest(11)}]}, "devices[0] (d): tags"),
        ({"devices": [{"device_id": "d", "tags": {"k" * 1025: 1}}]}, "twin keys are 1 to 1024 bytes"),
        ({"devices": [{"device_id": "d", "desired_properties": {"s": "v" * 4097}}]}, "desired_properties"),
        ({"devices": [{"device_id": "d", "tags": {f"t{i}": "v" * 1000 for i in range(9)}}]}, "at most 8192 for tags"),
        ({"devices": [{"device_id": "d"}], "prune": True, "prune_query": "deviceId = 'x' OR " * 600 + "true"},
         "at most 8192"),
    ]
    for args, fragment in cases:
        with counting(emulator) as w:
            r = ansible.run(play(task("t", "iothub_device_bulk", **args)))
        assert r.rc != 0 and fragment in r.task("t").result["msg"], r.task("t").result["msg"]
        assert w.delta("requests") == 0
    ok = ansible.run(play(task("t", "iothub_device_bulk", devices=[{"device_id": "deep", "tags": nest(10)}])))
    assert ok.rc == 0, ok.output[-2000:]
