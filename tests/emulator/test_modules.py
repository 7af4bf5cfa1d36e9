"""Module identities and module twins as recorded (iot-api-2.md §1)."""

from __future__ import annotations

import base64


def code(r) -> str:
    return r.headers.get("iothub-errorcode")


def test_module_lifecycle_as_recorded(hub):
    hub.put_device("d", {"deviceId": "d"})
    r = hub.request("PUT", "/devices/d/modules/m", json={"moduleId": "m", "deviceId": "d"}, headers={"If-Match": '""'})
    assert r.status_code == 200 and "etag" not in r.headers  # 200 (not 201), no ETag header
    body = r.json()
    assert body["managedBy"] is None and len(base64.b64decode(body["authentication"]["symmetricKey"]["primaryKey"])) == 32
    assert int(base64.b64decode(body["etag"])) > 0  # the +1 counter scheme of devices
    again = hub.request("PUT", "/devices/d/modules/m", json={"moduleId": "m", "deviceId": "d"})
    assert again.status_code == 409 and code(again) == "ModuleAlreadyExistsOnDevice"
    upd = hub.request("PUT", "/devices/d/modules/m", json=dict(body, managedBy="x"), headers={"If-Match": "*"})
    assert upd.status_code == 200 and int(base64.b64decode(upd.json()["etag"])) == int(base64.b64decode(body["etag"])) + 1
    assert upd.json()["authentication"] == body["authentication"]  # echoed keys kept
    stale = hub.request("PUT", "/devices/d/modules/m", json=body, headers={"If-Match": f'"{body["etag"]}"'})
    assert stale.status_code == 412
    no_auth = hub.request("PUT", "/devices/d/modules/m", json={"moduleId": "m"}, headers={"If-Match": "*"})
    assert no_auth.json()["managedBy"] is None  # PUT is a full replace: an omitted managedBy is cleared
    assert no_auth.json()["authentication"]["symmetricKey"] != body["authentication"]["symmetricKey"]  # new keys
    assert hub.request("DELETE", "/devices/d/modules/m").status_code == 412  # "Etag missing"
    assert hub.request("DELETE", "/devices/d/modules/m", headers={"If-Match": "*"}).status_code == 204
    assert code(hub.request("GET", "/devices/d/modules/m")) == "ModuleNotFound"


def test_dollar_ids_refused_and_runtime_modules_kept(hub):
    gw = hub.put_device("gw", {"deviceId": "gw", "capabilities": {"iotEdge": True}})
    assert gw.status_code == 200
    r = hub.request("PUT", "/devices/gw/modules/$mine", json={"moduleId": "$mine"})
    assert r.status_code == 400 and code(r) == "ArgumentInvalid"
    mods = {m["moduleId"]: m for m in hub.request("GET", "/devices/gw/modules").json()}
    assert set(mods) == {"$edgeAgent", "$edgeHub"}
    assert mods["$edgeAgent"]["managedBy"].lower() == "iotedge" and mods["$edgeAgent"]["authentication"]["type"] == "none"
    assert hub.request("DELETE", "/devices/gw/modules/$edgeHub", headers={"If-Match": "*"}).status_code == 400


def test_module_twins_and_query(hub):
    hub.put_device("d", {"deviceId": "d"})
    for mid in ("a", "b"):
        hub.request("PUT", f"/devices/d/modules/{mid}", json={"moduleId": mid})
    twin = hub.request("GET", "/twins/d/modules/a")
    doc = twin.json()
    assert "etag" not in twin.headers and doc["version"] == 2 and doc["properties"]["desired"]["$version"] == 1
    assert doc["deviceEtag"] == hub.request("GET", "/devices/d/modules/a").json()["etag"]  # the module's etag
    r = hub.request("PATCH", "/twins/d/modules/a", json={"tags": {"role": "x"}}, headers={"If-Match": f'"{doc["etag"]}"'})
    assert r.status_code == 200 and r.json()["tags"] == {"role": "x"}
    stale = hub.request("PATCH", "/twins/d/modules/a", json={"tags": {"role": "y"}}, headers={"If-Match": f'"{doc["etag"]}"'})
    assert stale.status_code == 412 and "ETag mismatch for device ID 'd'" in stale.json()["Message"]
    assert code(hub.request("GET", "/twins/d/modules/none")) == "DeviceNotFound"
    found = hub.query_all("SELECT * FROM devices.modules WHERE deviceId = 'd' AND tags.role = 'x'")
    assert [(t["deviceId"], t["moduleId"]) for t in found] == [("d", "a")]
    assert len(hub.query_all("SELECT * FROM devices.modules WHERE moduleId IN ['a', 'b']")) == 2


def test_bulk_module_entries_as_recorded(hub):
    hub.put_device("bd", {"deviceId": "bd"})
    entries = [{"id": "bd", "moduleId": f"m{i}", "importMode": "create", "properties": {"desired": {"user": "userA"}}}
               for i in range(10)]  # ten entries for the same device (recorded)
    r = hub.bulk(entries)
    assert r.status_code == 200 and r.json()["isSuccessful"] is True
    twin = hub.request("GET", "/twins/bd/modules/m3").json()
    assert twin["properties"]["desired"]["user"] == "userA" and twin["properties"]["desired"]["$version"] == 1


def test_module_stats_and_missing_device_knob(emulator, hub):
    before = emulator.stats()
    hub.put_device("s", {"deviceId": "s"})
    hub.request("PUT", "/devices/s/modules/m", json={"moduleId": "m"})
    hub.request("GET", "/devices/s/modules/m")
    after = emulator.stats()
    assert after["registry_writes"] - before["registry_writes"] == 2 and after["registry_reads"] - before["registry_reads"] == 1
    assert hub.request("GET", "/devices/none/modules/m").status_code == 404
    emulator.configure(module_missing_device_status=401)
    try:
        assert hub.request("GET", "/devices/none/modules/m").status_code == 401
    finally:
        emulator.configure(module_missing_device_status=404)


# ----------------------------------------------------- what the CLI's live tests assert against real hubs
def _desired_version(twin: dict) -> int:
    return twin["properties"]["desired"]["$version"]


def test_desired_patch_bumps_version_even_when_unchanged(hub):
    """azure-iot-cli-extension test_iothub_device_twin_int.py / test_iothub_module_twin_int.py: a twin PATCH that
    carries properties.desired notifies the device, so desired $version (and the twin version) grows even when
    the values are the same.  A PATCH of tags alone leaves desired $version as it is."""
    hub.put_device("d", {"deviceId": "d"})
    hub.request("PUT", "/devices/d/modules/m", json={"moduleId": "m", "deviceId": "d"})
    for path in ("/twins/d", "/twins/d/modules/m"):
        first = hub.request("PATCH", path, json={"properties": {"desired": {"x": 1}}}).json()
        same = hub.request("PATCH", path, json={"properties": {"desired": {"x": 1}}}).json()
        assert _desired_version(same) == _desired_version(first) + 1, path
        assert same["version"] == first["version"] + 1 and same["etag"] != first["etag"], path
        tags_only = hub.request("PATCH", path, json={"tags": {"t": 1}}).json()
        assert _desired_version(tags_only) == _desired_version(same), path


def test_regenerate_keys_honours_module_id(hub):
    """azure-iot-cli-extension test_iothub_modules_int.py: renew-key of a module rotates the module's keys (not its
    device's), names the module in rotatedKeys, and returns only the rotated key."""
    hub.put_device("d", {"deviceId": "d"})
    module = hub.request("PUT", "/devices/d/modules/m", json={"moduleId": "m", "deviceId": "d"}).json()
    device_keys = hub.get_device("d").json()["authentication"]["symmetricKey"]
    r = hub.request("POST", "/devices/keys/regenerate", params={"api-version": "2024-03-31"},
                    json={"policyKey": "secondaryKey", "devices": [{"id": "d", "moduleId": "m"},
                                                                   {"id": "d", "moduleId": "nope"}]})
    assert r.status_code == 200
    body = r.json()
    [rotated] = body["rotatedKeys"]
    assert rotated["id"] == "d" and rotated["moduleId"] == "m"
    assert rotated["primaryKey"] is None and rotated["secondaryKey"]
    assert body["errors"][0]["moduleId"] == "nope" and body["errors"][0]["errorCode"] == "ModuleNotFound"
    after = hub.request("GET", "/devices/d/modules/m").json()
    old = module["authentication"]["symmetricKey"]
    assert after["authentication"]["symmetricKey"] == {"primaryKey": old["primaryKey"], "secondaryKey": rotated["secondaryKey"]}
    assert after["etag"] != module["etag"]
    assert hub.get_device("d").json()["authentication"]["symmetricKey"] == device_keys  # the device is untouched
