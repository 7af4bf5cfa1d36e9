"""PUT/GET/DELETE /devices/{id}: the ETag and If-Match rules, full replace, and edge scopes (iot-api.md §1, §2, §5)."""

from __future__ import annotations

import base64
import re

import pytest

KEY_A = base64.b64encode(b"a" * 32).decode()
KEY_B = base64.b64encode(b"b" * 32).decode()
TP40 = "A" * 40


def error_code(resp) -> str:
    return resp.headers.get("iothub-errorcode", "")


def test_create_without_if_match_then_409(hub):
    r = hub.put_device("dev1", {"deviceId": "dev1"})
    assert r.status_code == 200
    body = r.json()
    assert r.headers["ETag"] == f'"{body["etag"]}"'
    assert body["status"] == "enabled" and body["authentication"]["type"] == "sas"
    again = hub.put_device("dev1", {"deviceId": "dev1"})
    assert again.status_code == 409 and error_code(again) == "DeviceAlreadyExists"
    assert again.json()["Message"].startswith("ErrorCode:DeviceAlreadyExists;")


def test_empty_quoted_if_match_creates(hub):
    assert hub.put_device("dev2", {"deviceId": "dev2"}, if_match='""').status_code == 200


@pytest.mark.parametrize("if_match", ["*", '"*"'])
def test_wildcard_replaces_existing(hub, if_match):
    hub.put_device("w", {"deviceId": "w"})
    r = hub.put_device("w", {"deviceId": "w", "status": "disabled"}, if_match=if_match)
    assert r.status_code == 200 and r.json()["status"] == "disabled"


@pytest.mark.parametrize("quoted", [True, False])
def test_matching_etag_quoted_or_not(hub, quoted):
    etag = hub.put_device("e", {"deviceId": "e"}).json()["etag"]
    r = hub.put_device("e", {"deviceId": "e"}, if_match=f'"{etag}"' if quoted else etag)
    assert r.status_code == 200
    assert r.json()["etag"] != etag


def test_stale_etag_is_412_with_recorded_body(hub):
    etag = hub.put_device("s", {"deviceId": "s"}).json()["etag"]
    hub.put_device("s", {"deviceId": "s"}, if_match=etag)
    r = hub.put_device("s", {"deviceId": "s"}, if_match=etag)
    assert r.status_code == 412 and error_code(r) == "PreconditionFailed"
    assert r.json()["Message"] == "ErrorCode:PreconditionFailed;PreconditionFailed"
    assert re.match(r"^Tracking ID:[0-9a-f]{32}-G:\d+-TimeStamp:\d{2}/\d{2}/\d{4} \d{2}:\d{2}:\d{2}$",
                    r.json()["ExceptionMessage"])


def test_update_of_missing_device_with_if_match_is_404(hub):
    for if_match in ("*", '"MA=="'):
        r = hub.put_device("ghost", {"deviceId": "ghost"}, if_match=if_match)
        assert r.status_code == 404 and error_code(r) == "DeviceNotFound"


def test_etag_is_base64_counter_incremented_per_write(hub):
    e1 = hub.put_device("c", {"deviceId": "c"}).json()["etag"]
    e2 = hub.put_device("c", {"deviceId": "c"}, if_match=e1).json()["etag"]
    n1, n2 = int(base64.b64decode(e1)), int(base64.b64decode(e2))
    assert n2 == n1 + 1


def test_put_replaces_whole_identity_and_regenerates_omitted_keys(hub):
    created = hub.put_device("k", {"deviceId": "k", "statusReason": "x",
                                   "authentication": {"type": "sas", "symmetricKey": {"primaryKey": KEY_A, "secondaryKey": KEY_B}}}).json()
    assert created["authentication"]["symmetricKey"] == {"primaryKey": KEY_A, "secondaryKey": KEY_B}
    # An update that omits keys and statusReason resets them: new keys, no reason (§1.1 full replace).
    updated = hub.put_device("k", {"deviceId": "k"}, if_match=created["etag"]).json()
    keys = updated["authentication"]["symmetricKey"]
    assert keys["primaryKey"] not in (KEY_A, None) and keys["secondaryKey"] not in (KEY_B, None)
    assert len(base64.b64decode(keys["primaryKey"])) == 32
    assert updated["statusReason"] is None
    # Empty-string keys are regenerated too (TEST S5).
    again = hub.put_device("k", {"deviceId": "k", "authentication": {"symmetricKey": {"primaryKey": "", "secondaryKey": ""}}},
                           if_match=updated["etag"]).json()
    assert again["authentication"]["symmetricKey"]["primaryKey"] != keys["primaryKey"]


def test_get_and_404(hub):
    hub.put_device("g", {"deviceId": "g"})
    r = hub.get_device("g")
    assert r.status_code == 200 and r.headers["ETag"] == f'"{r.json()["etag"]}"'
    assert r.json()["authentication"]["symmetricKey"]["primaryKey"]
    assert "parentScopes" not in r.json() and "deviceScope" not in r.json()  # GET of a plain device (§1.3)
    missing = hub.get_device("nope")
    assert missing.status_code == 404 and missing.json()["Message"] == "ErrorCode:DeviceNotFound;nope"


def test_delete_rules(hub):
    etag = hub.put_device("d", {"deviceId": "d"}).json()["etag"]
    assert hub.delete_device("d", if_match=None).status_code == 400  # strict: If-Match required
    assert hub.delete_device("d", if_match='"bm9wZQ=="').status_code == 412
    r = hub.delete_device("d", if_match=f'"{etag}"')
    assert r.status_code == 204 and r.content == b"" and "ETag" not in r.headers
    assert hub.delete_device("d").status_code == 404


def test_ids_are_url_decoded_and_case_sensitive(hub):
    odd = "a#b?c%d:e;f'g$h"
    r = hub.put_device(odd, {"deviceId": odd})
    assert r.status_code == 200 and r.json()["deviceId"] == odd
    assert hub.get_device(odd).json()["deviceId"] == odd
    assert hub.get_device(odd.upper()).status_code == 404


@pytest.mark.parametrize("bad", ["has space", "x" * 129, "slash\\", "ünï"])
def test_invalid_ids_are_refused(hub, bad):
    r = hub.put_device(bad, {"deviceId": bad})
    assert r.status_code == 400 and error_code(r) == "ArgumentInvalid"


def test_body_id_must_match_path(hub):
    assert hub.put_device("one", {"deviceId": "two"}).status_code == 400


@pytest.mark.parametrize("auth, fragment", [
    ({"type": "sas", "symmetricKey": {"primaryKey": "not base64!"}}, "base64"),
    ({"type": "sas", "symmetricKey": {"primaryKey": base64.b64encode(b"short").decode()}}, "16 and 64 bytes"),
    ({"type": "sas", "symmetricKey": {"primaryKey": base64.b64encode(b"x" * 65).decode()}}, "16 and 64 bytes"),
    ({"type": "selfSigned", "x509Thumbprint": {"primaryThumbprint": "XYZ"}}, "hexadecimal"),
    ({"type": "selfSigned"}, "primaryThumbprint"),
    ({"type": "sas", "symmetricKey": {"primaryKey": KEY_A}, "x509Thumbprint": {"primaryThumbprint": TP40}}, "thumbprints"),
    ({"type": "certificateAuthority", "symmetricKey": {"primaryKey": KEY_A}}, "cannot have"),
    ({"type": "password"}, "authentication.type"),
])
def test_invalid_authentication_is_refused(hub, auth, fragment):
    r = hub.put_device("bad-auth", {"deviceId": "bad-auth", "authentication": auth})
    assert r.status_code == 400, r.text
    assert fragment in r.json()["Message"]


def test_x509_and_ca_devices(hub):
    ss = hub.put_device("x1", {"deviceId": "x1", "authentication": {"type": "selfSigned", "x509Thumbprint": {
        "primaryThumbprint": TP40, "secondaryThumbprint": "b" * 64}}}).json()
    assert ss["authentication"]["symmetricKey"] == {"primaryKey": None, "secondaryKey": None}
    assert ss["authentication"]["x509Thumbprint"]["secondaryThumbprint"] == "b" * 64
    ca = hub.put_device("x2", {"deviceId": "x2", "authentication": {"type": "certificateAuthority"}}).json()
    assert ca["authentication"]["x509Thumbprint"] == {"primaryThumbprint": None, "secondaryThumbprint": None}


def test_status_reason_limit_and_status_time(hub):
    assert hub.put_device("sr", {"deviceId": "sr", "statusReason": "r" * 129}).status_code == 400
    created = hub.put_device("sr", {"deviceId": "sr", "statusReason": "r" * 128}).json()
    assert created["statusUpdatedTime"] == "0001-01-01T00:00:00Z"
    body = {**created, "status": "disabled"}
    disabled = hub.put_device("sr", body, if_match=created["etag"]).json()
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{7}Z$", disabled["statusUpdatedTime"])
    assert hub.put_device("st", {"deviceId": "st", "status": "paused"}).status_code == 400


def edge(hub, device_id, parent_scope=None):
    body = {"deviceId": device_id, "capabilities": {"iotEdge": True}}
    if parent_scope:
        body["parentScopes"] = [parent_scope]
    r = hub.put_device(device_id, body)
    assert r.status_code == 200, r.text
    return r.json()


def test_edge_scope_generated_and_modules_created(hub):
    gw = edge(hub, "gw")
    assert gw["deviceScope"] == f"ms-azure-iot-edge://gw-{gw['generationId']}"
    assert gw["parentScopes"] == []
    mods = hub.request("GET", "/devices/gw/modules").json()
    assert sorted(m["moduleId"] for m in mods) == ["$edgeAgent", "$edgeHub"]


def test_edge_scope_is_immutable(hub):
    gw = edge(hub, "gw")
    changed = {**gw, "deviceScope": "ms-azure-iot-edge://other-1"}
    r = hub.put_device("gw", changed, if_match=gw["etag"])
    assert r.status_code == 400 and error_code(r) == "InvalidDeviceScope"
    dropped = {k: v for k, v in gw.items() if k != "deviceScope"}
    assert hub.put_device("gw", dropped, if_match=gw["etag"]).status_code == 400
    echoed = hub.put_device("gw", {**gw, "status": "disabled"}, if_match=gw["etag"])
    assert echoed.status_code == 200 and echoed.json()["deviceScope"] == gw["deviceScope"]


def test_leaf_parent_scopes_derived_from_device_scope(hub):
    gw = edge(hub, "gw")
    leaf = hub.put_device("leaf", {"deviceId": "leaf", "deviceScope": gw["deviceScope"],
                                   "parentScopes": ["ignored"]}).json()
    assert leaf["parentScopes"] == [gw["deviceScope"]]
    # Detach: deviceScope "" clears parentScopes even when stale parentScopes are sent (§5a).
    detached = hub.put_device("leaf", {**leaf, "deviceScope": ""}, if_match=leaf["etag"]).json()
    assert detached["parentScopes"] == [] and "deviceScope" not in detached


def test_parent_scope_rules(hub):
    """Recorded: a leaf's deviceScope that names no edge device is accepted.  CHOICE: an edge device's parentScopes
    must name an existing edge device."""
    hub.put_device("plain", {"deviceId": "plain"})
    r = hub.put_device("leaf", {"deviceId": "leaf", "deviceScope": "ms-azure-iot-edge://plain-1"})
    assert r.status_code == 200 and r.json()["deviceScope"] == "ms-azure-iot-edge://plain-1"
    r = hub.put_device("e", {"deviceId": "e", "capabilities": {"iotEdge": True},
                             "parentScopes": ["ms-azure-iot-edge://plain-1"]})
    assert r.status_code == 400 and error_code(r) == "InvalidDeviceScope"


def test_nested_edge_and_depth_limit(hub):
    scope = None
    for layer in range(1, 6):
        dev = edge(hub, f"L{layer}", scope)
        assert dev["parentScopes"] == ([scope] if scope else [])
        scope = dev["deviceScope"]
    r = hub.put_device("L6", {"deviceId": "L6", "capabilities": {"iotEdge": True}, "parentScopes": [scope]})
    assert r.status_code == 400 and "5 layers" in r.json()["Message"]
    # A leaf may hang under the fifth layer.
    assert hub.put_device("leaf", {"deviceId": "leaf", "deviceScope": scope}).status_code == 200


def test_edge_cycle_is_refused(hub):
    a = edge(hub, "a")
    b = edge(hub, "b", a["deviceScope"])
    r = hub.put_device("a", {**a, "parentScopes": [b["deviceScope"]]}, if_match=a["etag"])
    assert r.status_code == 400 and "cycle" in r.json()["Message"]


def test_edge_parent_scopes_hold_one_scope(hub):
    a, b = edge(hub, "a"), edge(hub, "b")
    r = hub.put_device("c", {"deviceId": "c", "capabilities": {"iotEdge": True},
                             "parentScopes": [a["deviceScope"], b["deviceScope"]]})
    assert r.status_code == 400


def test_edge_with_children_cannot_drop_edge(hub):
    gw = edge(hub, "gw")
    hub.put_device("leaf", {"deviceId": "leaf", "deviceScope": gw["deviceScope"]})
    r = hub.put_device("gw", {**gw, "capabilities": {"iotEdge": False}, "deviceScope": ""}, if_match=gw["etag"])
    assert r.status_code == 400


def test_missing_api_version_and_unknown_version(hub):
    r = hub.request("GET", "/devices/x", params={})
    assert r.status_code == 400 and error_code(r) == "InvalidProtocolVersion"
    r = hub.request("GET", "/devices/x", params={"api-version": "1999-01-01"})
    assert r.status_code == 400
    hub.put_device("x", {"deviceId": "x"})
    assert hub.request("GET", "/devices/x", params={"api-version": "2024-03-31"}).status_code == 200


def test_every_response_has_request_id(hub):
    for r in (hub.put_device("r", {"deviceId": "r"}), hub.get_device("missing"), hub.delete_device("r")):
        assert re.match(r"^[0-9a-f-]{36}$", r.headers["x-ms-request-id"])


def test_list_devices_top_is_clamped(hub):
    hub.bulk([{"id": f"t{i:02d}", "importMode": "create"} for i in range(12)])
    assert len(hub.request("GET", "/devices", params={"api-version": "2021-04-12", "top": "5"}).json()) == 5
    for top in ("0", "5000", "-3"):
        assert len(hub.request("GET", "/devices", params={"api-version": "2021-04-12", "top": top}).json()) == 12
