"""Configurations and applyConfigurationContent as recorded (iot-api-2.md §2)."""

from __future__ import annotations

import pytest
from support import swagger

DEVICE_CFG = {"id": "telemetry", "labels": {"HostPlatform": "SomeValue"},
              "content": {"deviceContent": {"properties.desired.deviceContent_key": "v1"}},
              "targetCondition": "*", "priority": 5}
MANIFEST = {"$edgeAgent": {"properties.desired": {
    "schemaVersion": "1.1", "runtime": {"type": "docker", "settings": {}},
    "systemModules": {"edgeAgent": {"type": "docker", "settings": {"image": "mcr.microsoft.com/azureiotedge-agent:1.5"}},
                      "edgeHub": {"type": "docker", "settings": {"image": "mcr.microsoft.com/azureiotedge-hub:1.5"}}},
    "modules": {"sensor": {"type": "docker", "settings": {"image": "x/sensor:1"}}}}},
    "$edgeHub": {"properties.desired": {"schemaVersion": "1.2", "routes": {"up": "FROM /messages/* INTO $upstream"},
                                        "storeAndForwardConfiguration": {"timeToLiveSecs": 7200}}}}


def code(r):
    return r.headers.get("iothub-errorcode")


def test_configuration_lifecycle_as_recorded(hub):
    r = hub.request("PUT", "/configurations/telemetry", json=DEVICE_CFG, headers={"If-Match": '""'})
    assert r.status_code == 200 and r.headers["ETag"] == '"MQ=="' and r.json()["etag"] == "MQ=="
    body = r.json()
    swagger.validate("/configurations/{id}", "put", 200, body)
    assert body["systemMetrics"]["queries"]["targetedCount"] == "select deviceId from devices"
    assert body["systemMetrics"]["queries"]["appliedCount"] == \
        "select deviceId from devices where configurations.[[telemetry]].status = 'Applied'"
    assert body["schemaVersion"] is None and body["createdTimeUtc"] == body["lastUpdatedTimeUtc"]
    dup = hub.request("PUT", "/configurations/telemetry", json=DEVICE_CFG)
    assert dup.status_code == 409 and code(dup) == "ConfigurationAlreadyExists"
    upd = hub.request("PUT", "/configurations/telemetry", json=dict(body, priority=9), headers={"If-Match": '"MQ=="'})
    assert upd.status_code == 200 and upd.json()["etag"] == "Mg==" and upd.json()["priority"] == 9
    changed = dict(upd.json(), content={"deviceContent": {"properties.desired.other": 1}})
    kept = hub.request("PUT", "/configurations/telemetry", json=changed, headers={"If-Match": "*"})
    assert kept.status_code == 200 and kept.json()["content"] == DEVICE_CFG["content"]  # content is immutable
    no_content = {k: v for k, v in kept.json().items() if k != "content"}
    assert hub.request("PUT", "/configurations/telemetry", json=no_content, headers={"If-Match": "*"}).status_code == 400
    assert hub.request("PUT", "/configurations/telemetry", json=kept.json(),
                       headers={"If-Match": "Mw=="}).status_code == 409  # an unquoted etag (PEER)
    listed = hub.request("GET", "/configurations")
    assert listed.status_code == 200 and isinstance(listed.json(), list) and "etag" not in listed.headers
    swagger.validate("/configurations", "get", 200, listed.json())
    assert hub.request("DELETE", "/configurations/telemetry", headers={"If-Match": "*"}).status_code == 204
    assert hub.request("GET", "/configurations/telemetry").status_code == 404


@pytest.mark.parametrize("cfg_id, content, fragment", [
    ("Upper", DEVICE_CFG["content"], "lower-case"),
    ("c1", {"deviceContent": {"tags.x": 1}}, "properties.desired"),
    ("c2", {"deviceContent": {"properties.desired.a": 1}, "modulesContent": MANIFEST}, "mixed"),
    ("c3", {"modulesContent": {"$edgeHub": MANIFEST["$edgeHub"]}}, "$edgeAgent"),
])
def test_configuration_rules(hub, cfg_id, content, fragment):
    r = hub.request("PUT", f"/configurations/{cfg_id}", json={"id": cfg_id, "content": content, "targetCondition": "*"})
    assert r.status_code == 400 and fragment in r.json()["Message"]


def test_metrics_target_condition_and_test_queries(hub):
    hub.bulk([{"id": f"m{i}", "importMode": "create", "tags": {"site": "a" if i < 3 else "b"}} for i in range(5)])
    cfg = dict(DEVICE_CFG, id="site-a", targetCondition="tags.site = 'a'",
               metrics={"queries": {"all": "SELECT deviceId FROM devices"}})
    body = hub.request("PUT", "/configurations/site-a", json=cfg).json()
    got = hub.request("GET", "/configurations/site-a").json()
    assert got["systemMetrics"]["results"]["targetedCount"] == 3 and got["metrics"]["results"]["all"] == 5
    assert body["systemMetrics"]["queries"]["targetedCount"] == "select deviceId from devices where tags.site = 'a'"
    r = hub.request("POST", "/configurations/testQueries",
                    json={"targetCondition": "tags.site = ", "customMetricQueries": {"ok": "SELECT * FROM devices"}})
    assert r.status_code == 200 and r.json()["targetConditionError"] and r.json()["customMetricQueryErrors"]["ok"] == ""
    star = hub.request("POST", "/configurations/testQueries", json={"targetCondition": "*"})
    assert star.json()["targetConditionError"]  # testQueries rejects '*' (PEER), PUT accepts it


def test_apply_configuration_content(hub):
    hub.put_device("leaf", {"deviceId": "leaf"})
    hub.put_device("gw", {"deviceId": "gw", "capabilities": {"iotEdge": True}})
    r = hub.request("POST", "/devices/leaf/applyConfigurationContent", json={"modulesContent": MANIFEST})
    assert r.status_code == 400 and "Not an Azure IoT Edge device" in r.json()["Message"]
    r = hub.request("POST", "/devices/gw/applyConfigurationContent", json={"modulesContent": MANIFEST})
    assert r.status_code == 204 and r.content == b""
    agent = hub.request("GET", "/twins/gw/modules/$edgeAgent").json()["properties"]["desired"]
    assert agent["modules"]["sensor"]["settings"]["image"] == "x/sensor:1"
    assert hub.request("GET", "/twins/gw/modules/$edgeHub").json()["properties"]["desired"]["routes"] == \
        {"up": "FROM /messages/* INTO $upstream"}
    assert hub.request("POST", "/devices/none/applyConfigurationContent",
                       json={"modulesContent": MANIFEST}).status_code == 404


def test_configuration_limits_and_throttle(emulator_factory):
    from support.hub import HubClient
    emu = emulator_factory("--throttle", "S1:1")
    hub = HubClient(emu.connection_string, emu.ca_path)
    statuses = [hub.request("PUT", f"/configurations/c{i}", json=dict(DEVICE_CFG, id=f"c{i}")).status_code
                for i in range(21)]
    assert statuses[:20] == [200] * 20 and statuses[20] == 429  # 20 configuration writes per minute per unit
    hub.close()


def test_official_sdk_configuration_calls(emulator, monkeypatch, hub):
    pytest.importorskip("azure.iot.hub")
    from azure.iot.hub import IoTHubConfigurationManager
    from azure.iot.hub.models import Configuration, ConfigurationContent, ConfigurationQueriesTestInput
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", emulator.ca_path)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    manager = IoTHubConfigurationManager.from_connection_string(emulator.connection_string)
    created = manager.create_configuration(Configuration(
        id="sdk-cfg", content=ConfigurationContent(device_content={"properties.desired.x": 1}), target_condition="*",
        priority=1))
    assert created.etag == "MQ=="
    got = manager.get_configuration("sdk-cfg")
    got.priority = 2
    # the SDK sends the etag as given; the service wants it quoted (PEER: unquoted -> a misleading 409)
    with pytest.raises(Exception):
        manager.update_configuration(got, got.etag)
    assert manager.update_configuration(got, f'"{got.etag}"').priority == 2
    assert [c.id for c in manager.get_configurations()] == ["sdk-cfg"]
    result = manager.test_configuration_queries(ConfigurationQueriesTestInput(target_condition="tags.a = 1"))
    assert not result.target_condition_error
    hub.put_device("sdk-gw", {"deviceId": "sdk-gw", "capabilities": {"iotEdge": True}})
    manager.apply_configuration_on_edge_device("sdk-gw", ConfigurationContent(modules_content=MANIFEST))
    manager.delete_configuration("sdk-cfg")
    assert manager.get_configurations() == []


# ------------------------------------------- as Microsoft's CLI live tests assert (test_iot_config_int.py, real hubs)
def test_applied_content_creates_the_listed_module_identities_and_twins(hub, emulator):
    """Item 12: set-modules on a fresh edge device lists $edgeAgent, $edgeHub and the module with an entry."""
    hub.put_device("edge1", {"deviceId": "edge1", "capabilities": {"iotEdge": True}})
    content = dict(MANIFEST, mymodule0={"properties.desired": {"key0": "value0"}})
    r = hub.request("POST", "/devices/edge1/applyConfigurationContent", json={"modulesContent": content})
    assert r.status_code == 204
    mods = {m["moduleId"]: m for m in hub.request("GET", "/devices/edge1/modules").json()}
    assert set(mods) == {"$edgeAgent", "$edgeHub", "mymodule0"}
    assert mods["mymodule0"]["managedBy"] == "IotEdge"
    twin = hub.request("GET", "/twins/edge1/modules/mymodule0").json()
    assert twin["properties"]["desired"]["key0"] == "value0"
    exported = hub.query_all("SELECT * FROM devices.modules WHERE devices.deviceId = 'edge1'")
    assert sorted(t["moduleId"] for t in exported) == ["$edgeAgent", "$edgeHub", "mymodule0"]
    emulator.configure(apply_content_managed_by=None)  # the other reading: the hub leaves managedBy unset
    hub.put_device("edge2", {"deviceId": "edge2", "capabilities": {"iotEdge": True}})
    hub.request("POST", "/devices/edge2/applyConfigurationContent", json={"modulesContent": content})
    assert hub.request("GET", "/devices/edge2/modules/mymodule0").json()["managedBy"] is None
    bad = hub.request("POST", "/devices/edge2/applyConfigurationContent",
                      json={"modulesContent": dict(MANIFEST, **{"$bad": {"properties.desired": {}}})})
    assert bad.status_code == 400 and "$bad" not in {m["moduleId"] for m in hub.request("GET", "/devices/edge2/modules").json()}


def test_metric_queries_are_not_parsed_at_put_and_empty_target_and_null_labels(hub):
    """Items 13, 14, 17: "select *" as a metric is accepted and echoed; targetCondition "" is accepted and read
    back as ""; no labels read back as null."""
    body = {"id": "cli", "content": {"deviceContent": {"properties.desired.x": 1}}, "targetCondition": "",
            "metrics": {"queries": {"mymetric2": "select *"}}}
    r = hub.request("PUT", "/configurations/cli", json=body, headers={"If-Match": '""'})
    assert r.status_code == 200, r.text
    got = hub.request("GET", "/configurations/cli").json()
    assert got["targetCondition"] == "" and got["labels"] is None
    assert got["metrics"]["queries"] == {"mymetric2": "select *"}
    assert got["systemMetrics"]["results"]["targetedCount"] == 0
    tq = hub.request("POST", "/configurations/testQueries", json={"customMetricQueries": {"mymetric2": "select *"}})
    assert tq.json()["customMetricQueryErrors"]["mymetric2"]  # testQueries is where they are checked


def test_module_configuration_targets_module_twins(hub):
    """Item 15: a moduleContent configuration's targetCondition is FROM devices.modules WHERE <condition>."""
    hub.put_device("d1", {"deviceId": "d1"})
    hub.request("PUT", "/devices/d1/modules/m1", json={"moduleId": "m1", "deviceId": "d1"})
    body = {"id": "modcfg", "content": {"moduleContent": {"properties.desired.k": 1}},
            "targetCondition": "FROM devices.modules WHERE moduleId = 'm1'"}
    r = hub.request("PUT", "/configurations/modcfg", json=body, headers={"If-Match": '""'})
    assert r.status_code == 200, r.text
    got = hub.request("GET", "/configurations/modcfg").json()
    assert got["targetCondition"] == body["targetCondition"] and got["systemMetrics"]["results"]["targetedCount"] == 1


def test_collection_qualified_paths(hub):
    """Item 16: devices.deviceId in a devices.modules query; devices stays reserved as a bare property name."""
    hub.put_device("q1", {"deviceId": "q1", "capabilities": {"iotEdge": True}})
    hub.put_device("q2", {"deviceId": "q2", "capabilities": {"iotEdge": True}})
    twins = hub.query_all("SELECT * FROM devices.modules WHERE devices.deviceId = 'q1'")
    assert {t["deviceId"] for t in twins} == {"q1"} and len(twins) == 2
    assert [t["deviceId"] for t in hub.query_all("SELECT * FROM devices WHERE devices.deviceId = 'q2'")] == ["q2"]
    r = hub.query("SELECT * FROM devices WHERE devices = 'x'")
    assert r.status_code == 400


# ------------------------------------------------------------------- automatic device management (#23 item 11)
def _deployment(cfg_id, priority, image, target="tags.site = 'a'"):
    content = {"modulesContent": {**MANIFEST, "$edgeAgent": {"properties.desired": {
        **MANIFEST["$edgeAgent"]["properties.desired"],
        "modules": {"sensor": {"type": "docker", "settings": {"image": image}}}}}}}
    return {"id": cfg_id, "content": content, "targetCondition": target, "priority": priority}


def _metrics(hub, cfg_id):
    return hub.request("GET", f"/configurations/{cfg_id}").json()["systemMetrics"]["results"]


def test_configurations_are_applied_to_the_twins_they_target(hub, emulator):
    emulator.configure(adm_delay_s=3600)
    for did, site in (("a1", "a"), ("a2", "a"), ("b1", "b")):
        hub.put_device(did, {"deviceId": did, "capabilities": {"iotEdge": True}})
        hub.request("PATCH", f"/twins/{did}", json={"tags": {"site": site}}, headers={"If-Match": "*"})
    hub.request("PUT", "/configurations/late", json=_deployment("late", 1, "x/late:1"))
    assert _metrics(hub, "late") == {"targetedCount": 2, "appliedCount": 0}  # not before its delay
    hub.request("DELETE", "/configurations/late", headers={"If-Match": "*"})
    emulator.configure(adm_delay_s=0)
    hub.request("PUT", "/configurations/dep1", json=_deployment("dep1", 1, "x/one:1"))
    assert _metrics(hub, "dep1") == {"targetedCount": 2, "appliedCount": 2}
    agent = hub.request("GET", "/twins/a1/modules/$edgeAgent").json()["properties"]["desired"]
    assert agent["modules"]["sensor"]["settings"]["image"] == "x/one:1"
    assert "modules" not in hub.request("GET", "/twins/b1/modules/$edgeAgent").json()["properties"]["desired"]
    twin = hub.request("GET", "/twins/a1").json()
    assert twin["configurations"] == {"dep1": {"status": "Applied"}}
    hub.request("PUT", "/configurations/dep2", json=_deployment("dep2", 2, "x/two:1"))  # higher priority wins
    assert _metrics(hub, "dep2")["appliedCount"] == 2 and _metrics(hub, "dep1")["appliedCount"] == 0
    assert hub.request("GET", "/twins/a2").json()["configurations"] == {"dep1": {"status": "Targeted"},
                                                                        "dep2": {"status": "Applied"}}
    agent = hub.request("GET", "/twins/a2/modules/$edgeAgent").json()["properties"]["desired"]
    assert agent["modules"]["sensor"]["settings"]["image"] == "x/two:1"
    hub.request("PUT", "/configurations/dep3", json=_deployment("dep3", 2, "x/three:1"))  # a tie: the newest wins
    assert _metrics(hub, "dep3")["appliedCount"] == 2
    assert hub.query_all("SELECT deviceId FROM devices WHERE configurations.[[dep3]].status = 'Applied'")
    hub.request("DELETE", "/configurations/dep3", headers={"If-Match": "*"})  # the next one takes over
    assert _metrics(hub, "dep2")["appliedCount"] == 2


def test_device_configurations_set_desired_paths(hub, emulator):
    emulator.configure(adm_delay_s=0)
    hub.put_device("d", {"deviceId": "d"})
    hub.request("PUT", "/configurations/dc", json={"id": "dc", "targetCondition": "*", "priority": 1, "content": {
        "deviceContent": {"properties.desired.settings.rate": 5}}})
    assert _metrics(hub, "dc") == {"targetedCount": 1, "appliedCount": 1}
    assert hub.request("GET", "/twins/d").json()["properties"]["desired"]["settings"] == {"rate": 5}
