"""The emulator is exactly as strict as the recorded service: what the service accepts (recorded sessions, SDK and
CLI live tests) it accepts, what the service refuses it refuses, and where the sources disagree a knob plays each
reading (iot-api-2.md §6-§9; docs/emulator.md lists each rule with its source)."""

from __future__ import annotations

import base64
import time
import urllib.parse

import pytest
from support.hub import HubClient, sas_token

from test_central import Central


def code(r) -> str:
    return r.headers.get("iothub-errorcode") or r.headers.get("x-ms-error-code")


# ------------------------------------------------------------------------- recorded: accepted by the service
def test_twin_writes_may_carry_the_whole_twin_as_read(hub):
    """az CLI and the C# SDK PATCH/PUT the twin they GET, $metadata and $version included (recorded 200)."""
    hub.put_device("t", {"deviceId": "t"})
    twin = hub.request("GET", "/twins/t").json()
    twin["properties"]["desired"]["speed"] = 5
    r = hub.request("PATCH", "/twins/t", json=twin, headers={"If-Match": f'"{twin["etag"]}"'})
    assert r.status_code == 200 and r.json()["properties"]["desired"]["speed"] == 5
    again = r.json()
    again["tags"] = {"a": 1}
    assert hub.request("PUT", "/twins/t", json=again).status_code == 200
    entry = {"id": "t", "importMode": "updateTwinIfMatchETag", "twinETag": hub.request("GET", "/twins/t").json()["etag"],
             "properties": {"desired": {"speed": 6, "$metadata": {"$lastUpdated": "x"}, "$version": 3}}}
    assert hub.bulk([entry]).status_code == 200
    assert hub.request("GET", "/twins/t").json()["properties"]["desired"]["speed"] == 6


def test_edge_device_turned_leaf_while_echoing_its_own_scope(hub):
    """`az iot hub device-identity update --ee false` sends the GET body back; Microsoft's live test expects 200."""
    top = hub.put_device("top", {"deviceId": "top", "capabilities": {"iotEdge": True}}).json()
    gw = hub.put_device("gw", {"deviceId": "gw", "capabilities": {"iotEdge": True},
                               "parentScopes": [top["deviceScope"]]}).json()
    body = dict(gw, capabilities={"iotEdge": False})
    r = hub.put_device("gw", body, if_match="*")
    assert r.status_code == 200, r.text
    assert r.json()["capabilities"]["iotEdge"] is False and r.json()["deviceScope"] == top["deviceScope"]


def test_bulk_delete_if_match_etag_without_etag_deletes(hub):
    hub.bulk([{"id": "x", "importMode": "create"}])
    r = hub.bulk([{"id": "x", "importMode": "deleteIfMatchETag"}])
    assert r.status_code == 200 and hub.get_device("x").status_code == 404


# ---------------------------------------------------------------------- refused by the service, so refused here
def test_query_literals_take_the_documented_escapes_only(hub):
    hub.bulk([{"id": "it's", "importMode": "create"}, {"id": "b", "importMode": "create", "tags": {"path": "a\\b"}}])
    ok = hub.query("SELECT * FROM devices WHERE deviceId IN ['it\\'s', 'x'] OR tags.path = 'a\\\\b'")
    assert ok.status_code == 200 and sorted(t["deviceId"] for t in ok.json()) == ["b", "it's"]
    assert hub.query("SELECT * FROM devices WHERE deviceId = \"it\\'s\"").json()[0]["deviceId"] == "it's"
    doubled = hub.query("SELECT * FROM devices WHERE deviceId = 'it''s'")
    assert doubled.status_code == 400 and code(doubled) == "ArgumentInvalid"


def test_reserved_words_need_brackets_and_long_queries_are_refused(hub):
    hub.bulk([{"id": "g", "importMode": "create", "tags": {"group": "a"}}])
    assert hub.query("SELECT * FROM devices WHERE tags.group = 'a'").status_code == 400
    r = hub.query("SELECT * FROM devices WHERE tags.[[group]] = 'a'")
    assert r.status_code == 200 and [t["deviceId"] for t in r.json()] == ["g"]
    long_query = "SELECT * FROM devices WHERE deviceId IN [" + ", ".join(f"'d{i:05d}'" for i in range(1100)) + "]"
    assert len(long_query) > 8192 and hub.query(long_query).status_code == 400
    fits = "SELECT * FROM devices WHERE deviceId IN [" + ", ".join(f"'d{i:05d}'" for i in range(800)) + "]"
    assert len(fits) <= 8192 and hub.query(fits).status_code == 200


def _nested(depth: int) -> dict:
    """A section holding DEPTH nested objects below it, a scalar in the innermost."""
    node: dict = {"leaf": 1}
    for i in range(depth - 1):
        node = {f"l{i}": node}
    return {"top": node}


@pytest.mark.parametrize("patch, ok", [
    ({"tags": _nested(10)}, True),                        # objects nested 10 deep: a scalar in the 10th is fine
    ({"tags": _nested(11)}, False),
    ({"tags": {"k" * 1024: 1}}, True),
    ({"tags": {"k" * 1025: 1}}, False),                   # keys up to 1 KB
    ({"tags": {"a.b": 1}}, False), ({"tags": {"$x": 1}}, False), ({"tags": {"a b": 1}}, False),
    ({"tags": {"s": "v" * 4096}}, True),
    ({"tags": {"s": "v" * 4097}}, False),                 # string values up to 4 KB
    ({"tags": {f"t{i}": "v" * 1000 for i in range(8)}}, True),
    ({"tags": {f"t{i}": "v" * 1000 for i in range(9)}}, False),   # tags up to 8 KB
    ({"properties": {"desired": {f"d{i}": "v" * 4000 for i in range(8)}}}, True),
    ({"properties": {"desired": {f"d{i}": "v" * 4000 for i in range(9)}}}, False),  # desired up to 32 KB
])
def test_twin_limits(hub, patch, ok):
    hub.put_device("lim", {"deviceId": "lim"})
    r = hub.request("PATCH", "/twins/lim", json=patch)
    assert (r.status_code == 200) is ok, r.text
    b = hub.bulk([{"id": "lim", "importMode": "updateTwin", **patch}])
    assert (b.status_code == 200) is ok, b.text


def test_null_is_refused_by_twin_replace(hub):
    hub.put_device("n", {"deviceId": "n"})
    r = hub.request("PUT", "/twins/n", json={"tags": {"a": None}})
    assert r.status_code == 400 and "cannot be null" in r.json()["Message"]


def test_rights_twins_and_bulk_twin_entries_need_service_connect(emulator, hub):
    hub.put_device("p", {"deviceId": "p"})
    rw = HubClient(emulator.policy_connection_string("registryReadWrite"), emulator.ca_path)
    assert rw.request("GET", "/twins/p").status_code == 401
    assert rw.bulk([{"id": "p2", "importMode": "create"}]).status_code == 200
    assert rw.bulk([{"id": "p3", "importMode": "create", "tags": {"a": 1}}]).status_code == 401
    assert rw.bulk([{"id": "p", "importMode": "updateTwin", "tags": {"a": 1}}]).status_code == 401
    rw.close()


def test_sas_token_for_one_device_matches_whole_path_segments(emulator, hub):
    hub.put_device("sas1", {"deviceId": "sas1"})
    hub.put_device("sas10", {"deviceId": "sas10"})
    cs = dict(p.split("=", 1) for p in emulator.connection_string.split(";"))
    token = sas_token(f"{cs['HostName']}/devices/sas1", cs["SharedAccessKeyName"], cs["SharedAccessKey"])
    assert hub.request("GET", "/devices/sas1", auth=token).status_code == 200
    assert hub.request("GET", "/devices/sas10", auth=token).status_code == 401


def test_unknown_routes_answer_with_the_json_envelope(hub, emulator):
    r = hub.request("GET", "/nowhere/at/all")
    assert r.status_code == 404 and r.json()["Message"].startswith("ErrorCode:") and r.headers["iothub-errorcode"]
    r = hub.request("PATCH", "/devices/x")
    assert r.status_code == 405 and r.json()["Message"].startswith("ErrorCode:MethodNotAllowed")
    c = Central(emulator)
    r = c.req("GET", "/nothing-here")
    assert r.status_code == 404 and r.json()["error"]["code"]
    c.http.close()


def test_central_top_is_at_most_100_and_defaults_to_25(emulator):
    c = Central(emulator)
    for i in range(30):
        c.req("PUT", f"/devices/t{i:02d}", {"displayName": f"t{i}"})
    assert len(c.req("GET", "/devices").json()["value"]) == 25
    r = c.http.get("/api/devices", params={"api-version": "2022-07-31", "$top": "10"}, headers={"Authorization": c.token})
    assert len(r.json()["value"]) == 10 and "%24top=10" in r.json()["nextLink"]
    r = c.http.get("/api/devices", params={"api-version": "2022-07-31", "$top": "101"}, headers={"Authorization": c.token})
    assert r.status_code == 400 and r.json()["error"]["code"]
    c.http.close()


# ---------------------------------------------------------------------------------------- routes and knobs
def test_regenerate_keys_route(hub):
    hub.put_device("k", {"deviceId": "k"})
    before = hub.get_device("k").json()["authentication"]["symmetricKey"]
    r = hub.request("POST", "/devices/keys/regenerate", json={"policyKey": "secondaryKey", "devices": [{"id": "k"}, {"id": "none"}]},
                    params={"api-version": "2024-03-31"})
    assert r.status_code == 200
    body = r.json()
    assert [k["id"] for k in body["rotatedKeys"]] == ["k"] and body["errors"][0]["id"] == "none"
    after = hub.get_device("k").json()["authentication"]["symmetricKey"]
    assert after["primaryKey"] == before["primaryKey"] and after["secondaryKey"] != before["secondaryKey"]


@pytest.mark.parametrize("mode", ["replace", "merge"])
def test_bulk_twin_mode_knob(emulator, hub, mode):
    emulator.configure(bulk_twin_mode=mode)
    try:
        hub.bulk([{"id": "m", "importMode": "create", "tags": {"a": 1, "b": 2}, "properties": {"desired": {"x": 1}}}])
        assert hub.bulk([{"id": "m", "importMode": "updateTwin", "tags": {"b": 3}}]).status_code == 200
        twin = hub.request("GET", "/twins/m").json()
        assert twin["tags"] == ({"b": 3} if mode == "replace" else {"a": 1, "b": 3})
        assert twin["properties"]["desired"]["x"] == 1  # an absent section is untouched in both readings
    finally:
        emulator.configure(bulk_twin_mode="replace")


def test_query_page_size_defaults_to_100_and_never_refuses_a_large_value(emulator, hub):
    for start in range(0, 250, 100):
        hub.bulk([{"id": f"pg{i:03d}", "importMode": "create"} for i in range(start, min(250, start + 100))])
    r = hub.query("SELECT * FROM devices", max_items=1000)
    assert r.status_code == 200 and len(r.json()) == 100 and r.headers.get("x-ms-continuation")
    r = hub.request("POST", "/devices/query", json={"query": "SELECT * FROM devices"},
                    headers={"x-ms-max-item-count": "lots"})
    assert r.status_code == 200 and len(r.json()) == 100
    emulator.configure(max_page_size=1000)
    try:
        assert len(hub.query("SELECT * FROM devices", max_items=1000).json()) == 250
    finally:
        emulator.configure(max_page_size=100)
