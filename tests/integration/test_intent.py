"""Deletes and key rotations that keep their intent under index lag, lost answers and other writers (issue #22).

Each test is a real ansible-playbook run against the emulator, and asserts what must NOT happen (a device deleted,
a key changed) beside what must."""

from __future__ import annotations

from helpers import counting, play, run_ok, task

FAST = {"retry_backoff_seconds": 0.05, "max_retries": 12}
LAG = 20  # seconds: far longer than any of these tests takes, so the index shows the old state throughout



def exists(hub, did: str) -> bool:
    return hub.get_device(did).status_code == 200


def keys(hub, did: str) -> dict:
    return hub.get_device(did).json()["authentication"]["symmetricKey"]


def role_task(role: str, **vars) -> dict:
    return {"name": f"apply {role}", "ansible.builtin.include_role": {"name": f"fleet.azure_iot.{role}"}, "vars": vars}


# ----------------------------------------------------------------------- 1. a prune re-checks on a GET
def test_prune_leaves_a_device_another_job_moved_out_of_the_fleet_within_the_lag(ansible, emulator, hub):
    fleet_a = {"devices": ["a1", "a2", "x1"], "defaults": {"tags": {"fleet": "A"}}, "prune": True,
               "prune_query": "tags.fleet = 'A'", "max_deletes": 1}
    run_ok(ansible, play(task("A", "iothub_device_bulk", **fleet_a)))
    x1_keys = keys(hub, "x1")
    assert len(hub.query_all("SELECT * FROM devices")) == 3  # indexed before the lag starts
    emulator.configure(query_lag_s=LAG)
    # Job B takes x1 into its fleet: a twin-only change, which does not move the identity etag.
    run_ok(ansible, play(task("B", "iothub_device", device_id="x1", tags={"fleet": "B"})))
    assert hub.query_all("SELECT * FROM devices WHERE tags.fleet = 'A'")  # the index still says fleet A
    again = dict(fleet_a, devices=["a1", "a2"])
    for check in (True, False):
        with counting(emulator) as w:
            r = run_ok(ansible, play(task("A", "iothub_device_bulk", **again)), check=check)
        res = r.task("A").result
        assert res["deleted"] == [] and not res["changed"], res
        assert any("x1: no longer matches prune_query" in n for n in res["notes"]), res["notes"]
        assert w.writes == 0
    assert exists(hub, "x1") and keys(hub, "x1") == x1_keys
    assert hub.request("GET", "/twins/x1").json()["tags"] == {"fleet": "B"}


# ------------------------------------------------------- 2. a conflict on a prune delete is re-checked too
def test_a_prune_delete_that_meets_a_move_is_rechecked_not_deleted_harder(ansible, emulator, hub):
    run_ok(ansible, play(task("tree", "iothub_device_bulk", devices=[
        {"device_id": "gw1", "edge_enabled": True}, {"device_id": "gw2", "edge_enabled": True},
        {"device_id": "s1", "parent": "gw1"}, {"device_id": "x1", "parent": "gw1"}])))
    gw2_scope = hub.get_device("gw2").json()["deviceScope"]
    x1_keys = keys(hub, "x1")
    # Another task moves x1 to gw2 right after this task confirmed it (between its GET and its delete).
    emulator.race("x1", {"deviceScope": gw2_scope, "parentScopes": [gw2_scope]}, target="device", after="twin")
    with counting(emulator) as w:
        r = run_ok(ansible, play(task("prune", "iothub_device_bulk", prune_children=True, **FAST, devices=[
            {"device_id": "gw1", "edge_enabled": True}, {"device_id": "s1", "parent": "gw1"}])))
    assert emulator.stats()["races_applied"] == 1  # the other writer really came in between
    res = r.task("prune").result
    assert res["deleted"] == [] and res["failed_devices"] == [], res
    assert any("x1: is no longer a child of 'gw1'" in n for n in res["notes"]), res["notes"]
    assert w.delta("registry_writes") == 0
    x1 = hub.get_device("x1").json()
    assert x1["deviceScope"] == gw2_scope and x1["authentication"]["symmetricKey"] == x1_keys


# ------------------------------------------------------------ 3. a prune of a list cut short is refused
def test_a_prune_that_would_delete_most_of_its_selection_is_refused(ansible, emulator, hub):
    hub.bulk([{"id": f"s-{i:03d}", "importMode": "create", "tags": {"fleet": "big"}} for i in range(100)])
    hub.bulk([{"id": f"s-{i:03d}", "importMode": "create", "tags": {"fleet": "big"}} for i in range(100, 200)])
    args = {"devices": ["s-000"], "prune": True, "prune_query": "tags.fleet = 'big'"}
    for check in (True, False):
        with counting(emulator) as w:
            r = ansible.run(play(task("bulk", "iothub_device_bulk", **args)), check=check)
        msg = r.task("bulk").result["msg"]
        assert r.rc != 0 and "would delete 199 of the 200" in msg and "max_deletes=199" in msg, msg
        assert "s-001, s-002" in msg
        assert w.writes == 0
    assert len(hub.query_all("SELECT deviceId FROM devices")) == 200
    # At most ten (or a tenth of the selection) go without max_deletes.
    keep = [f"s-{i:03d}" for i in range(10, 200)]
    r = run_ok(ansible, play(task("bulk", "iothub_device_bulk", devices=keep, prune=True,
                                  prune_query="tags.fleet = 'big'")))
    assert r.task("bulk").result["deleted"] == [f"s-{i:03d}" for i in range(10)]


# ------------------------------------------- 4. a child attached within the lag is found after the delete
def test_a_child_attached_within_the_lag_fails_the_gateway_delete_naming_it(ansible, emulator, hub):
    """The guard before a gateway delete reads the index, which lags, and nothing consistent lists a gateway's
    children: the task queries again after the delete and fails naming a child it finds then.  The emulator's
    query_lag_queries makes the lag end between the two queries (a write shows after N more queries)."""
    for module in ("iothub_device", "iothub_device_bulk"):
        emulator.reset()
        hub.put_device("gw", {"deviceId": "gw", "capabilities": {"iotEdge": True}})
        hub.put_device("keep", {"deviceId": "keep"})
        hub.query_all("SELECT deviceId FROM devices")  # indexed
        scope = hub.get_device("gw").json()["deviceScope"]
        args = ({"device_id": "gw", "state": "absent"} if module == "iothub_device"
                else {"devices": [{"device_id": "gw", "state": "absent"}, "keep"]})
        with counting(emulator) as w:  # the queries the task makes before its delete (check mode makes them too)
            run_ok(ansible, play(task("gw", module, **args)), check=True)
        emulator.configure(query_lag_queries=w.delta("query_pages"))
        hub.put_device("late", {"deviceId": "late", "deviceScope": scope, "parentScopes": [scope]})
        r = ansible.run(play(task("gw", module, **args)))
        emulator.configure(query_lag_queries=0)
        res = r.task("gw").result
        assert r.rc != 0 and res["changed"] is True, r.output[-3000:]
        assert hub.get_device("gw").status_code == 404  # the guard did not see the child: the delete went ahead
        if module == "iothub_device":
            assert "still name it as their parent (late)" in res["msg"], res
        else:
            assert [(f["deviceId"], f["errorCode"]) for f in res["failed_devices"]] == [("late", "OrphanedChild")], res
            assert "still name it as their parent (late)" in res["failed_devices"][0]["errorStatus"], res  # one message
        assert exists(hub, "late") and exists(hub, "keep")  # reported, never deleted


# ------------------------------------------------------------------ 5. moves between two tasks' gateways
def test_a_move_between_gateways_of_two_tasks_keeps_the_device_and_its_keys(ansible, emulator, hub):
    def kids(*names):
        return [{"device_id": n} for n in names]
    for gw, children in (("gw1", kids("s1", "mover")), ("gw2", kids("s2"))):
        run_ok(ansible, play(role_task("edge_gateway", edge_gateway_id=gw, edge_gateway_children=children)))
    mover_keys = keys(hub, "mover")
    assert len(hub.query_all("SELECT * FROM devices")) == 5  # indexed before the lag starts
    emulator.configure(query_lag_s=LAG)
    # The gaining task runs first (the documented order); the losing task prunes its children inside the lag,
    # when the index still shows the mover under gw1.
    run_ok(ansible, play(role_task("edge_gateway", edge_gateway_id="gw2", edge_gateway_children=kids("s2", "mover")),
                         role_task("edge_gateway", edge_gateway_id="gw1", edge_gateway_children=kids("s1"),
                                   edge_gateway_prune_children=True)))
    mover = hub.get_device("mover").json()
    assert mover["deviceScope"] == hub.get_device("gw2").json()["deviceScope"]
    assert mover["authentication"]["symmetricKey"] == mover_keys  # never deleted and re-created


# --------------------------------------------------------- 12. a clause the hub cannot read is an input error
def test_a_prune_query_that_cannot_be_read_fails_before_any_request(ansible, emulator):
    for clause, fragment in (("tags.site = 'it''s'", "\\'"), ("tags.group = 'x'", "[[group]]")):
        with counting(emulator) as w:
            r = ansible.run(play(task("bulk", "iothub_device_bulk", devices=["d"], prune=True, prune_query=clause)))
        msg = r.task("bulk").result["msg"]
        assert r.rc != 0 and "prune_query" in msg and fragment in msg and "un again" not in msg, msg
        assert w.delta("requests") == 0


# ------------------------------------------------------------------- 6, 7. a rotation happens exactly once
def _rotate(ansible, module: str, rotation: str, **extra):
    args = {"device_id": "r"} if module == "iothub_device" else {"device_id": "r", "module_id": "m"}
    return ansible.run(play(task("rotate", module, rotate_keys=rotation, return_secrets=True, **args,
                                 **{**FAST, **extra})), allow_secrets=True)


def _live(hub, module: str) -> dict:
    path = "/devices/r" if module == "iothub_device" else "/devices/r/modules/m"
    return hub.request("GET", path).json()["authentication"]["symmetricKey"]


def _fresh_identity(emulator, hub, module: str, drop_writes: int) -> dict:
    """A new hub with identity r (and module m), the next DROP_WRITES answers to be lost; its keys."""
    emulator.reset()
    hub.put_device("r", {"deviceId": "r"})
    if module == "iothub_module":
        hub.request("PUT", "/devices/r/modules/m", json={"moduleId": "m", "deviceId": "r"})
    before = _live(hub, module)
    emulator.configure(drop_writes=drop_writes)
    return before


def test_a_swap_whose_answer_is_lost_is_applied_once(ansible, emulator, hub):
    for module in ("iothub_device", "iothub_module"):
        before = _fresh_identity(emulator, hub, module, drop_writes=1)
        r = _rotate(ansible, module, "swap")
        assert emulator.stats()["faults_injected"].get("drop_after_apply") == 1  # the answer really was lost
        res = r.task("rotate").result
        assert r.rc == 0 and res["changed"] and res["action"] == "update", r.output[-3000:]
        after = _live(hub, module)
        assert after == {"primaryKey": before["secondaryKey"], "secondaryKey": before["primaryKey"]}, module


def test_lost_answers_rotate_the_primary_once_and_return_the_live_key(ansible, emulator, hub):
    for module in ("iothub_device", "iothub_module"):
        before = _fresh_identity(emulator, hub, module, drop_writes=3)
        with counting(emulator) as w:
            r = _rotate(ansible, module, "primary")
        res = r.task("rotate").result
        assert r.rc == 0 and res["changed"] and res["action"] == "update", r.output[-3000:]
        after = _live(hub, module)
        assert after["secondaryKey"] == before["secondaryKey"] and after["primaryKey"] != before["primaryKey"]
        assert res["connection_string"].endswith(f"SharedAccessKey={after['primaryKey']}")
        assert res["secondary_connection_string"].endswith(f"SharedAccessKey={after['secondaryKey']}")
        assert w.delta("registry_writes") == 1, module  # one rotation landed, not five
        # When the answers stay lost, the task fails, says changed, names no other writer, and still returns the
        # key that is live in the hub.
        emulator.configure(drop_writes=50)
        r = _rotate(ansible, module, "primary", max_retries=2)
        emulator.configure(drop_writes=0)
        res = r.task("rotate").result
        live = _live(hub, module)
        assert r.rc != 0 and res["changed"] is True, r.output[-3000:]
        assert "another writer" not in res["msg"]
        assert res["connection_string"].endswith(f"SharedAccessKey={live['primaryKey']}")
        assert live["primaryKey"] != after["primaryKey"]  # its rotation did land


# ------------------------------------------------- 9. a fleet's keys rotated in batches, once, returned live
def _fleet_keys(hub, ids) -> dict:
    return {d: keys(hub, d) for d in ids}


def test_a_fleet_rotation_through_the_bulk_registry_lands_once_and_returns_the_live_keys(ansible, emulator, hub):
    fleet = [f"r{i}" for i in range(5)]
    hub.bulk([{"id": d, "importMode": "create"} for d in fleet + ["other"]])
    other = keys(hub, "other")
    before = _fleet_keys(hub, fleet)
    args = {"devices": fleet, "defaults": {"rotate_keys": "swap"}, "batch_size": 2, **FAST}
    with counting(emulator) as w:  # check mode predicts the rotation and writes nothing
        r = run_ok(ansible, play(task("rotate", "iothub_device_bulk", **args)), check=True)
    assert r.task("rotate").result["updated"] == fleet and w.writes == 0
    # A swap applied twice is no swap: the first bulk call's answer is lost, and its retry meets 412.
    emulator.configure(drop_writes=1)
    r = run_ok(ansible, play(task("rotate", "iothub_device_bulk", return_secrets=True, **args)), allow_secrets=True)
    assert emulator.stats()["faults_injected"].get("drop_after_apply") == 1
    res = r.task("rotate").result
    after = _fleet_keys(hub, fleet)
    assert res["changed"] and res["updated"] == fleet, res
    for d in fleet:
        assert after[d] == {"primaryKey": before[d]["secondaryKey"], "secondaryKey": before[d]["primaryKey"]}, d
    assert keys(hub, "other") == other  # not in the task: untouched
    live = {s["device_id"]: s for s in res["secrets"]}
    assert sorted(live) == fleet
    for d in fleet:
        assert live[d]["connection_string"].endswith(f"SharedAccessKey={after[d]['primaryKey']}")
        assert live[d]["secondary_connection_string"].endswith(f"SharedAccessKey={after[d]['secondaryKey']}")

    # A primary rotation without return_secrets: no key of the fleet anywhere in the output.
    r = run_ok(ansible, play(task("rotate", "iothub_device_bulk", **dict(args, defaults={"rotate_keys": "primary"}))))
    res = r.task("rotate").result
    now = _fleet_keys(hub, fleet)
    assert "secrets" not in res and res["updated"] == fleet
    for d in fleet:
        assert now[d]["secondaryKey"] == after[d]["secondaryKey"] and now[d]["primaryKey"] != after[d]["primaryKey"]
        assert now[d]["primaryKey"] not in r.output and now[d]["secondaryKey"] not in r.output

    # Answers that stay lost: the task fails, says changed, and returns the keys the hub holds for every device.
    emulator.configure(drop_writes=50)
    r = ansible.run(play(task("rotate", "iothub_device_bulk", return_secrets=True,
                              **dict(args, defaults={"rotate_keys": "secondary"}, max_retries=1))),
                    allow_secrets=True)
    emulator.configure(drop_writes=0)
    res = r.task("rotate").result
    final = _fleet_keys(hub, fleet)
    assert r.rc != 0 and res["changed"] is True, r.output[-3000:]
    live = {s["device_id"]: s for s in res["secrets"]}
    assert sorted(live) == fleet, res["secrets"]
    for d in fleet:
        assert final[d]["primaryKey"] == now[d]["primaryKey"]  # a secondary rotation never touches the primary
        assert live[d]["secondary_connection_string"].endswith(f"SharedAccessKey={final[d]['secondaryKey']}")


def test_a_fleet_rotation_rotates_a_device_the_lagging_index_does_not_show_and_creates_a_missing_one(
        ansible, emulator, hub):
    emulator.configure(query_lag_s=LAG)
    hub.put_device("fresh", {"deviceId": "fresh"})  # created within the lag: the query does not show it
    before = keys(hub, "fresh")
    with counting(emulator) as w:
        r = run_ok(ansible, play(task("rotate", "iothub_device_bulk", devices=["fresh", "new"],
                                      defaults={"rotate_keys": "primary"}, return_secrets=True, **FAST)),
                   allow_secrets=True)
    res = r.task("rotate").result
    after = keys(hub, "fresh")
    assert res["updated"] == ["fresh"] and res["created"] == ["new"], res
    assert after["primaryKey"] != before["primaryKey"] and after["secondaryKey"] == before["secondaryKey"]
    assert [s["device_id"] for s in res["secrets"]] == ["fresh"]  # a created device was not rotated after
    assert w.delta("registry_writes") == 2, w.delta("registry_writes")


# -------------------------------------------------------- 10. rights proven before the first write
def test_twin_content_without_service_connect_fails_before_any_write(ansible, emulator):
    cs = emulator.policy_connection_string("registryReadWrite")
    for device_id in ("new-dev", "new-dev"):
        with counting(emulator) as w:
            r = ansible.run(play(task("dev", "iothub_device", device_id=device_id, tags={"site": "a"},
                                      connection_string=cs)))
        res = r.task("dev").result
        assert r.rc != 0 and "ServiceConnect" in res["msg"] and res.get("changed") is False, res
        assert w.writes == 0


# ---------------------------------------------------------------------- 11. the action that was written
def test_a_create_whose_answer_was_lost_reports_create(ansible, emulator, hub):
    emulator.configure(drop_writes=1)
    r = run_ok(ansible, play(task("dev", "iothub_device", device_id="lost-create", **FAST)))
    res = r.task("dev").result
    assert emulator.stats()["faults_injected"].get("drop_after_apply") == 1
    assert res["changed"] and res["action"] == "create" and "status" in res["changes"], res
    assert exists(hub, "lost-create")


# ------------------------------------------------------------------------------- 12. timeout must be > 0
def test_timeout_zero_is_an_input_error(ansible, emulator):
    with counting(emulator) as w:
        r = ansible.run(play(task("dev", "iothub_device", device_id="d", timeout=0)))
    assert r.rc != 0 and "timeout must be greater than 0" in r.task("dev").result["msg"]
    assert w.delta("requests") == 0


# ------------------------------------------------------- 8. the rotation guide, run as a user runs it
def test_the_key_rotation_guide_keeps_a_live_key_at_every_step(ansible, emulator, hub, tmp_path):
    import re
    from pathlib import Path
    guide = (Path(__file__).resolve().parents[2] / "docs" / "key-rotation.md").read_text()
    playbook = re.findall(r"```yaml\n(.*?)```", guide, flags=re.S)[0]  # the guide's playbook (then a fleet task)
    path = tmp_path / "rotate-keys.yml"
    path.write_text(playbook)
    hub.put_device("plant-gw", {"deviceId": "plant-gw"})
    held = keys(hub, "plant-gw")["primaryKey"]  # what the device connects with

    with counting(emulator) as w:
        r = ansible.run(path)  # no step: refused, nothing written
    assert r.rc != 0 and "one step per job" in r.output and w.writes == 0

    for step in ("1", "2", "3", "4"):
        r = ansible.run(path, extra_vars={"step": step})
        assert r.rc == 0, r.output[-3000:]
        if step == "2":  # the device takes the key that was handed over
            held = (tmp_path / "plant-gw.connection-string").read_text().strip().split("SharedAccessKey=")[1]
        live = keys(hub, "plant-gw")
        assert held in (live["primaryKey"], live["secondaryKey"]), f"after step {step} the device's key is dead"
    live = keys(hub, "plant-gw")
    assert live["primaryKey"] == held  # the devices end on the primary, the old keys are retired
