"""iothub_configuration tells the truth before it writes (#23 items 5-8): the hub tests the target condition and
metric queries (check mode too), a target that matches nothing and a priority tie are warnings, and a refused
content change names what differs.  Real playbooks against the emulator."""

from __future__ import annotations

import copy

from helpers import counting, play, run_ok, task

from test_edge_deployments import MANIFEST


def cfg(**args):
    return task("c", "iothub_configuration", **args)


def test_a_target_condition_the_hub_refuses_fails_in_check_mode_too(ansible, emulator, hub):
    for check in (True, False):
        for args, option in (({"target_condition": "tags.site = = 'x'"}, "target_condition"),
                             ({"target_condition": "tags.site = 'x'", "metrics": {"broken": "SELECT deviceId FROM"}},
                              "metrics.broken")):
            with counting(emulator) as w:
                r = ansible.run(play(cfg(id="bad", content=MANIFEST, **args)), check=check)
            msg = r.task("c").result["msg"]
            assert r.rc != 0 and msg.startswith(f"{option}: IoT Hub refuses") and w.writes == 0, msg
            asked = w.end["requests_by_route"].get("POST /configurations/testQueries", 0) \
                - w.start["requests_by_route"].get("POST /configurations/testQueries", 0)
            assert asked == 1  # the hub's own test of the queries, not a guess of the module


def test_a_target_that_matches_nothing_and_a_priority_tie_are_warnings(ansible, emulator, hub):
    hub.put_device("p7", {"deviceId": "p7", "capabilities": {"iotEdge": True}})
    hub.request("PATCH", "/twins/p7", json={"tags": {"site": "plant-7", "line": 1}}, headers={"If-Match": "*"})
    hub.query_all("SELECT deviceId FROM devices")
    r = run_ok(ansible, play(cfg(id="typo", content=MANIFEST, target_condition="site = 'plant-7'", priority=1)))
    assert any("matches no device now (0)" in w for w in r.task("c").result["warnings"]), r.task("c").result
    run_ok(ansible, play(cfg(id="first", content=MANIFEST, target_condition="tags.site = 'plant-7'", priority=5)))
    with counting(emulator) as w:
        chk = run_ok(ansible, play(cfg(id="second", content=MANIFEST, target_condition="tags.line = 1", priority=5)),
                     check=True)
    warnings = chk.task("c").result["warnings"]
    assert w.writes == 0 and any("'first'" in x and "both have priority 5" in x and "1 device(s)" in x
                                 for x in warnings), warnings
    other = run_ok(ansible, play(cfg(id="second", content=MANIFEST, target_condition="tags.line = 1", priority=6)))
    assert not any("both have priority" in x for x in other.task("c").result.get("warnings", []))


def test_a_refused_content_change_names_what_differs(ansible, emulator, hub):
    run_ok(ansible, play(cfg(id="named", content=MANIFEST, target_condition="*")))
    changed = copy.deepcopy(MANIFEST)
    agent = changed["modulesContent"]["$edgeAgent"]["properties.desired"]
    agent["modules"]["sensor"]["settings"]["image"] = "mcr.microsoft.com/azureiotedge-simulated-temperature-sensor:1.6"
    changed["modulesContent"]["$edgeHub"]["properties.desired"]["routes"]["extra"] = "FROM /messages/* INTO $upstream"
    r = ansible.run(play(cfg(id="named", content=changed)))
    msg = r.task("c").result["msg"]
    assert r.rc != 0 and "differs at 2 path(s)" in msg
    assert "modules.sensor.settings.image" in msg and "routes.extra" in msg and "1.6" in msg, msg
    chk = run_ok(ansible, play(cfg(id="named", content=changed, recreate=True)), check=True)
    diff = chk.task("c").result["diff"]
    assert any(k.endswith("modules.sensor.settings.image") for k in diff["after"]["content"]), diff
