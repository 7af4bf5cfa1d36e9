"""Query with paging and lag, bulk registry operations, twins (iot-api.md §3, §4)."""

from __future__ import annotations

import base64

import pytest


def ids(items):
    return [i["deviceId"] for i in items]


def make(hub, n, prefix="q", **extra):
    for start in range(0, n, 100):
        r = hub.bulk([{"id": f"{prefix}{i:04d}", "importMode": "create", **extra} for i in range(start, min(n, start + 100))])
        assert r.status_code == 200, r.text


def test_query_pages_with_continuation(hub):
    make(hub, 25)
    r = hub.query("SELECT * FROM devices", max_items=10)
    assert r.status_code == 200 and r.headers["x-ms-item-type"] == "Twin"
    assert len(r.json()) == 10 and r.headers.get("x-ms-continuation")
    assert ids(hub.query_all("SELECT * FROM devices", max_items=10)) == [f"q{i:04d}" for i in range(25)]
    # The last page carries no continuation header (recorded behaviour, §3.2).
    last = hub.query("SELECT * FROM devices", max_items=100)
    assert "x-ms-continuation" not in last.headers


def test_query_returns_twins_without_keys(hub):
    make(hub, 1)
    twin = hub.query("SELECT * FROM devices").json()[0]
    assert "authentication" not in twin and "symmetricKey" not in str(twin)
    assert twin["authenticationType"] == "sas" and twin["deviceEtag"] and twin["etag"] == "AAAAAAAAAAE="
    assert twin["statusUpdateTime"] == "0001-01-01T00:00:00Z"


@pytest.mark.parametrize("where, expected", [
    ("deviceId = 'q0003'", ["q0003"]),
    ("deviceId IN ['q0001', 'q0004', 'zz']", ["q0001", "q0004"]),
    ("deviceId NOT IN ['q0001', 'q0004']", ["q0000", "q0002", "q0003", "gw", "leaf"]),
    ("capabilities.iotEdge = true", ["gw"]),
    ("status = 'disabled'", ["q0002"]),
    ("tags.fleet = 'plant-7'", ["q0000", "q0001"]),
    ("tags.fleet = 'plant-7' AND NOT (deviceId = 'q0000')", ["q0001"]),
    ("tags.fleet = 'plant-7' OR status = 'disabled'", ["q0000", "q0001", "q0002"]),
    ("is_defined(tags.fleet)", ["q0000", "q0001"]),
    ("startswith(deviceId, 'q000') AND deviceId >= 'q0003'", ["q0003", "q0004"]),
])
def test_query_where(hub, where, expected):
    make(hub, 5)
    hub.bulk([{"id": "q0000", "importMode": "updateTwin", "tags": {"fleet": "plant-7"}},
              {"id": "q0001", "importMode": "updateTwin", "tags": {"fleet": "plant-7", "n": 1}}])
    q2 = hub.get_device("q0002").json()
    hub.put_device("q0002", {**q2, "status": "disabled"}, if_match=q2["etag"])
    gw = hub.put_device("gw", {"deviceId": "gw", "capabilities": {"iotEdge": True}}).json()
    hub.put_device("leaf", {"deviceId": "leaf", "deviceScope": gw["deviceScope"]})
    got = ids(hub.query_all(f"SELECT * FROM devices WHERE {where}"))
    assert sorted(got) == sorted(expected)


def test_query_parent_scopes_and_projection(hub):
    gw = hub.put_device("gw", {"deviceId": "gw", "capabilities": {"iotEdge": True}}).json()
    hub.put_device("leaf", {"deviceId": "leaf", "deviceScope": gw["deviceScope"]})
    hub.put_device("child-gw", {"deviceId": "child-gw", "capabilities": {"iotEdge": True}, "parentScopes": [gw["deviceScope"]]})
    hub.put_device("other", {"deviceId": "other"})
    r = hub.query(f"SELECT deviceId, deviceScope FROM devices WHERE array_contains(parentScopes, '{gw['deviceScope']}')")
    rows = sorted(r.json(), key=lambda x: x["deviceId"])
    assert [x["deviceId"] for x in rows] == ["child-gw", "leaf"]
    assert set(rows[1]) == {"deviceId", "deviceScope"} and rows[1]["deviceScope"] == gw["deviceScope"]
    assert set(rows[0]) == {"deviceId", "deviceScope"} and rows[0]["deviceScope"] != gw["deviceScope"]
    count = hub.query("SELECT COUNT() AS n FROM devices").json()
    assert count == [{"n": 4}]


@pytest.mark.parametrize("bad", ["SELECT FROM devices", "SELECT * FROM devices WHERE", "DELETE FROM devices",
                                 "SELECT * FROM devices WHERE nosuch(deviceId)", "SELECT * FROM jobs", ""])
def test_query_syntax_errors_are_400(hub, bad):
    r = hub.query(bad)
    assert r.status_code == 400


def test_bad_continuation_is_400(hub):
    make(hub, 3)
    token = hub.query("SELECT * FROM devices", max_items=1).headers["x-ms-continuation"]
    assert hub.query("SELECT deviceId FROM devices", max_items=1, continuation=token).status_code == 400
    assert hub.query("SELECT * FROM devices", continuation="garbage").status_code == 400


def test_query_index_lags_behind_writes(emulator, hub):
    emulator.configure(query_lag_s=3600)
    hub.put_device("new", {"deviceId": "new"})
    assert hub.get_device("new").status_code == 200   # GET is read-after-write consistent
    assert hub.query("SELECT * FROM devices").json() == []  # the index has not seen it yet
    emulator.configure(query_lag_s=0)
    assert ids(hub.query("SELECT * FROM devices").json()) == ["new"]
    emulator.configure(query_lag_s=3600)
    hub.delete_device("new")
    assert ids(hub.query("SELECT * FROM devices").json()) == ["new"]  # a ghost of the deleted device


def test_bulk_success_body(hub):
    r = hub.bulk([{"id": "b1", "importMode": "create", "status": "enabled"}])
    assert r.status_code == 200 and r.json() == {"isSuccessful": True, "errors": [], "warnings": []}
    assert "ETag" not in r.headers


def test_bulk_partial_failure_applies_the_others(hub):
    hub.bulk([{"id": "exists", "importMode": "create"}])
    r = hub.bulk([{"id": "exists", "importMode": "create"}, {"id": "fresh", "importMode": "create"},
                  {"id": "missing", "importMode": "delete"}, {"id": "bad id", "importMode": "create"}])
    assert r.status_code == 400
    body = r.json()
    assert body["isSuccessful"] is False
    errs = {e["deviceId"]: (e["errorCode"], e["operation"]) for e in body["errors"]}
    assert errs == {"exists": ("DeviceAlreadyExists", "create"), "missing": ("DeviceNotFound", "delete"),
                    "bad id": ("ArgumentInvalid", "create")}
    assert hub.get_device("fresh").status_code == 200


def test_bulk_every_import_mode(hub):
    hub.bulk([{"id": f"m{i}", "importMode": "create"} for i in range(6)])
    devs = {f"m{i}": hub.get_device(f"m{i}").json() for i in range(6)}
    twin_etag = hub.request("GET", "/twins/m4").json()["etag"]
    r = hub.bulk([
        {"id": "m0", "importMode": "update", "status": "disabled", "eTag": "ignored"},
        {"id": "m1", "importMode": "updateIfMatchETag", "eTag": devs["m1"]["etag"], "statusReason": "ok",
         "authentication": devs["m1"]["authentication"]},
        {"id": "m2", "importMode": "delete"},
        {"id": "m3", "importMode": "deleteIfMatchETag", "eTag": devs["m3"]["etag"]},
        {"id": "m4", "importMode": "updateTwinIfMatchETag", "twinETag": twin_etag, "tags": {"a": 1}},
        {"id": "m5", "importMode": "updateTwin", "properties": {"desired": {"interval": 30}}},
    ])
    assert r.status_code == 200, r.text
    assert hub.get_device("m0").json()["status"] == "disabled"
    m1 = hub.get_device("m1").json()
    assert m1["statusReason"] == "ok" and m1["authentication"]["symmetricKey"] == devs["m1"]["authentication"]["symmetricKey"]
    assert hub.get_device("m2").status_code == 404 and hub.get_device("m3").status_code == 404
    assert hub.request("GET", "/twins/m4").json()["tags"] == {"a": 1}
    assert hub.request("GET", "/twins/m5").json()["properties"]["desired"]["interval"] == 30


def test_bulk_etag_mismatch_and_unknown_mode(hub):
    hub.bulk([{"id": "e1", "importMode": "create"}])
    r = hub.bulk([{"id": "e1", "importMode": "updateIfMatchETag", "eTag": "c3RhbGU="},
                  {"id": "e2", "importMode": "createOrUpdate"}])
    assert r.status_code == 400
    codes = {e["deviceId"]: e["errorCode"] for e in r.json()["errors"]}
    assert codes == {"e1": "PreconditionFailed", "e2": "ArgumentInvalid"}


def test_bulk_duplicates_and_limits(hub):
    dup = hub.bulk([{"id": "d", "importMode": "create"}, {"id": "d", "importMode": "delete"}])
    assert dup.status_code == 400
    assert dup.json()["isSuccessful"] is False
    assert [(e["deviceId"], e["errorCode"]) for e in dup.json()["errors"]] == [("d", "DeviceDefinedMultipleTimes")]
    assert hub.get_device("d").status_code == 404  # nothing applied
    many = hub.bulk([{"id": f"n{i}", "importMode": "create"} for i in range(101)])
    assert many.status_code == 413 and many.headers["iothub-errorcode"] == "TooManyDevices"
    assert hub.bulk([]).status_code == 400
    assert hub.bulk({"devices": []}).status_code == 400


def test_bulk_carries_scopes(hub):
    gw = hub.put_device("gw", {"deviceId": "gw", "capabilities": {"iotEdge": True}}).json()
    r = hub.bulk([{"id": "leaf", "importMode": "create", "deviceScope": gw["deviceScope"]},
                  {"id": "child", "importMode": "create", "capabilities": {"iotEdge": True},
                   "parentScopes": [gw["deviceScope"]]}])
    assert r.status_code == 200, r.text
    assert hub.get_device("leaf").json()["parentScopes"] == [gw["deviceScope"]]
    assert hub.get_device("child").json()["parentScopes"] == [gw["deviceScope"]]


def test_twin_get_patch_and_etag(hub):
    hub.put_device("t", {"deviceId": "t"})
    twin = hub.request("GET", "/twins/t")
    assert twin.status_code == 200 and "etag" not in twin.headers  # §6.3: twin responses carry no ETag header
    assert base64.b64decode(twin.json()["etag"]) == (1).to_bytes(8, "big")
    etag = f'"{twin.json()["etag"]}"'
    r = hub.request("PATCH", "/twins/t", json={"tags": {"site": "a", "x": {"y": 1}}, "properties": {"desired": {"p": 1}}},
                    headers={"If-Match": etag})
    assert r.status_code == 200
    doc = r.json()
    assert doc["tags"] == {"site": "a", "x": {"y": 1}} and doc["properties"]["desired"]["$version"] == 2
    r = hub.request("PATCH", "/twins/t", json={"tags": {"site": None}})
    assert r.json()["tags"] == {"x": {"y": 1}}
    stale = hub.request("PATCH", "/twins/t", json={"tags": {"z": 1}}, headers={"If-Match": etag})
    assert stale.status_code == 412
    bad = hub.request("PATCH", "/twins/t", json={"tags": {"bad.key": 1}})
    assert bad.status_code == 400
    assert hub.request("GET", "/twins/none").status_code == 404
