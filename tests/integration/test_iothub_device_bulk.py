"""iothub_device_bulk: real ansible-playbook runs against the emulator over HTTPS."""

from __future__ import annotations

import base64

from helpers import counting, play, task

K1 = base64.b64encode(b"1" * 32).decode()
K2 = base64.b64encode(b"2" * 32).decode()


def bulk(ansible, devices, check=False, diff=False, expect_rc=0, **opts):
    r = ansible.run(play(task("bulk", "iothub_device_bulk", devices=devices, **opts)), check=check, diff=diff)
    assert r.rc == expect_rc, r.output[-4000:]
    return r, r.task("bulk").result


def test_250_devices_mixed_create_update_delete_then_noop(ansible, emulator, hub):
    # 150 exist already: 50 stay, 50 change, 50 are deleted; 100 are new.
    hub.bulk([{"id": f"dev{i:03d}", "importMode": "create"} for i in range(100)])
    hub.bulk([{"id": f"dev{i:03d}", "importMode": "create"} for i in range(100, 150)])
    keys_before = {i: hub.get_device(f"dev{i:03d}").json()["authentication"]["symmetricKey"] for i in (50, 99)}
    devices = [{"device_id": f"dev{i:03d}"} for i in range(50)]
    devices += [{"device_id": f"dev{i:03d}", "status": "disabled", "status_reason": "drift"} for i in range(50, 100)]
    devices += [{"device_id": f"dev{i:03d}", "state": "absent"} for i in range(100, 150)]
    devices += [{"device_id": f"dev{i:03d}", "tags": {"batch": "new"}} for i in range(150, 250)]
    with counting(emulator) as w:
        _, res = bulk(ansible, devices)
    assert len(res["created"]) == 100 and len(res["updated"]) == 50 and len(res["deleted"]) == 50
    assert len(res["unchanged"]) == 50 and res["failed_devices"] == []
    assert w.registry_writes == 200
    assert w.delta("bulk_calls") == 3  # 100 creates + 50 updates (one level), then 50 deletes
    assert res["requests"]["gets"] == 50  # the SAS devices whose identity is rewritten (to keep their keys)
    for i in (50, 99):
        dev = hub.get_device(f"dev{i:03d}").json()
        assert dev["status"] == "disabled" and dev["statusReason"] == "drift"
        assert dev["authentication"]["symmetricKey"] == keys_before[i]  # keys kept through a bulk update
    assert hub.get_device("dev120").status_code == 404
    assert hub.request("GET", "/twins/dev200").json()["tags"] == {"batch": "new"}
    with counting(emulator) as w:
        _, again = bulk(ansible, devices)
    assert not again["changed"] and w.writes == 0 and w.delta("registry_reads") == 0
    assert len(again["unchanged"]) == 250 and again["requests"]["bulk_calls"] == 0  # absent ones included


def test_check_mode_writes_nothing(ansible, emulator, hub):
    hub.bulk([{"id": "old", "importMode": "create"}])
    devices = [{"device_id": "gw", "edge_enabled": True}, {"device_id": "leaf", "parent": "gw"},
               {"device_id": "old", "state": "absent"}]
    with counting(emulator) as w:
        _, res = bulk(ansible, devices, check=True, diff=True)
    assert w.writes == 0
    assert res["created"] == ["gw", "leaf"] and res["deleted"] == ["old"] and res["changed"]
    assert hub.get_device("gw").status_code == 404 and hub.get_device("old").status_code == 200


def test_three_level_nested_edge_tree_in_one_task(ansible, hub):
    devices = [
        {"device_id": "leaf-3", "parent": "edge-3"},  # order in the list does not matter
        {"device_id": "edge-3", "edge_enabled": True, "parent": "edge-2"},
        {"device_id": "edge-2", "edge_enabled": True, "parent": "edge-1"},
        {"device_id": "edge-1", "edge_enabled": True},
        {"device_id": "leaf-1", "parent": "edge-1"},
    ]
    _, res = bulk(ansible, devices)
    assert sorted(res["created"]) == sorted(d["device_id"] for d in devices)
    e1, e2, e3 = (hub.get_device(f"edge-{i}").json() for i in (1, 2, 3))
    assert e2["parentScopes"] == [e1["deviceScope"]] and e3["parentScopes"] == [e2["deviceScope"]]
    assert hub.get_device("leaf-3").json()["deviceScope"] == e3["deviceScope"]
    assert hub.get_device("leaf-1").json()["parentScopes"] == [e1["deviceScope"]]
    _, again = bulk(ansible, devices)
    assert not again["changed"]


def test_move_children_between_gateways(ansible, hub):
    base = [{"device_id": "gw-a", "edge_enabled": True}, {"device_id": "gw-b", "edge_enabled": True},
            {"device_id": "kid", "parent": "gw-a"}, {"device_id": "kid-edge", "edge_enabled": True, "parent": "gw-a"}]
    bulk(ansible, base)
    moved = base[:2] + [{"device_id": "kid", "parent": "gw-b"}, {"device_id": "kid-edge", "edge_enabled": True, "parent": "gw-b"}]
    _, res = bulk(ansible, moved)
    assert res["updated"] == ["kid", "kid-edge"]
    b = hub.get_device("gw-b").json()["deviceScope"]
    assert hub.get_device("kid").json()["deviceScope"] == b and hub.get_device("kid-edge").json()["parentScopes"] == [b]


def test_prune_by_tag_and_refused_without_selector(ansible, emulator, hub):
    hub.bulk([{"id": f"p{i}", "importMode": "create", "tags": {"fleet": "plant-7"}} for i in range(5)]
             + [{"id": "foreign", "importMode": "create", "tags": {"fleet": "other"}}])
    devices = [{"device_id": "p0"}, {"device_id": "p1"}, {"device_id": "p9"}]
    _, res = bulk(ansible, devices, defaults={"tags": {"fleet": "plant-7"}}, prune=True,
                  prune_query="tags.fleet = 'plant-7'")
    assert res["deleted"] == ["p2", "p3", "p4"] and res["created"] == ["p9"]
    assert hub.get_device("foreign").status_code == 200
    with counting(emulator) as w:
        r = ansible.run(play(task("bulk", "iothub_device_bulk", devices=devices, prune=True)))
    assert r.rc != 0 and "prune_query" in r.task("bulk").result["msg"] and w.writes == 0 and w.delta("requests") == 0


def test_partial_failure_reports_each_device_and_rerun_converges(ansible, emulator, hub):
    emulator.refuse("gw", code="InvalidDeviceScope")  # the hub refuses one device for a rule of its own
    devices = [{"device_id": "gw", "edge_enabled": True}, {"device_id": "ok1"}, {"device_id": "ok2"}]
    r, res = bulk(ansible, devices, expect_rc=2)
    assert res["created"] == ["ok1", "ok2"] and res["changed"] is True
    assert res["failed_devices"] == [{"deviceId": "gw", "errorCode": "InvalidDeviceScope",
                                      "errorStatus": res["failed_devices"][0]["errorStatus"], "operation": "create"}]
    assert "1 device(s) failed, the others were applied" in res["msg"]
    assert hub.get_device("ok1").status_code == 200 and hub.get_device("gw").status_code == 404
    _, fixed = bulk(ansible, devices)
    assert fixed["created"] == ["gw"] and fixed["unchanged"] == ["ok1", "ok2"]


def test_query_lag_converges_without_errors(ansible, emulator, hub):
    devices = [{"device_id": f"lag{i}", "status_reason": "v1"} for i in range(20)]
    bulk(ansible, devices)
    emulator.configure(query_lag_s=3600)  # the index now shows nothing newer than an hour
    hub.bulk([{"id": "lag-new", "importMode": "create"}])  # exists, but invisible to queries
    changed = [{"device_id": f"lag{i}", "status_reason": "v2"} for i in range(20)] + [{"device_id": "lag-new"}]
    _, res = bulk(ansible, changed)
    assert res["failed_devices"] == [] and len(res["updated"]) == 20 and res["unchanged"] == ["lag-new"]
    assert any("DeviceAlreadyExists" in n for n in res["notes"])
    assert all(hub.get_device(f"lag{i}").json()["statusReason"] == "v2" for i in range(20))
    again = ansible.run(play(task("bulk", "iothub_device_bulk", devices=changed)))
    assert again.rc == 0 and not again.task("bulk").result["failed_devices"]


def test_concurrent_change_is_replanned(ansible, emulator, hub):
    bulk(ansible, [{"device_id": "r1", "primary_key": K1, "secondary_key": K2}])
    emulator.race("r1", {"statusReason": "other writer"})  # fires after the module's GET of r1
    _, res = bulk(ansible, [{"device_id": "r1", "primary_key": K1, "secondary_key": K2, "status": "disabled"}])
    assert res["updated"] == ["r1"] and any("PreconditionFailed" in n for n in res["notes"])
    dev = hub.get_device("r1").json()
    assert dev["status"] == "disabled" and dev["statusReason"] == "other writer"
    assert dev["authentication"]["symmetricKey"] == {"primaryKey": K1, "secondaryKey": K2}


def test_diff_per_device_with_keys_redacted(ansible):
    r, res = bulk(ansible, [{"device_id": "k1", "primary_key": K1, "secondary_key": K2, "tags": {"a": 1}}], diff=True)
    diffs = res["diff"]
    assert len(diffs) == 1 and diffs[0]["before"] == {} and diffs[0]["after"]["primary_key"] == "******** (changed)"
    assert diffs[0]["after"]["tags"] == {"a": 1} and "tags" not in diffs[0]["before"]
    assert K1 not in r.output and K2 not in r.output


def test_bad_input_is_refused_before_any_request(ansible, emulator):
    cases = [
        ([{"device_id": "a"}, {"device_id": "a"}], "declared more than once"),
        ([{"device_id": "bad id"}], "devices[0]"),
        ([{"device_id": "a", "parent": "b"}, {"device_id": "b", "edge_enabled": True, "parent": "a"}], "cycle"),
        ([{"device_id": "x", "tags": {"bad.key": 1}}], "tags"),
        ([{"device_id": "x", "status_reason": "r" * 200}], "status_reason"),
        ([{"device_id": "x", "unknown_option": 1}], "unknown_option"),
        ([{"device_id": "k", "edge_enabled": False}, {"device_id": "c", "parent": "k"}], "edge_enabled=false"),
        ([{"device_id": f"e{i}", "edge_enabled": True, **({"parent": f"e{i-1}"} if i else {})} for i in range(6)], "5"),
    ]
    for devices, fragment in cases:
        with counting(emulator) as w:
            r = ansible.run(play(task("bulk", "iothub_device_bulk", devices=devices)))
        assert r.rc != 0 and fragment in r.task("bulk").result["msg"], (fragment, r.task("bulk").result["msg"])
        assert w.delta("requests") == 0
    with counting(emulator) as w:
        r = ansible.run(play(task("bulk", "iothub_device_bulk", devices=[{"device_id": "x"}], batch_size=101)))
    assert r.rc != 0 and "batch_size" in r.task("bulk").result["msg"] and w.delta("requests") == 0


def test_missing_or_plain_parent_fails_before_writes(ansible, emulator, hub):
    hub.put_device("plain", {"deviceId": "plain"})
    for parent, fragment in (("nowhere", "does not exist"), ("plain", "is not an IoT Edge device")):
        with counting(emulator) as w:
            r = ansible.run(play(task("bulk", "iothub_device_bulk", devices=[{"device_id": "ok"}, {"device_id": "c", "parent": parent}])))
        assert r.rc != 0 and fragment in r.task("bulk").result["msg"] and w.writes == 0
