"""Every emulator response body validates against the official swagger, and the recorded examples of
iot-api.md (§1.3, §2.3, §3.2, §4) are reproduced field by field (ids, etags and times compared by format)."""

from __future__ import annotations

import base64
import datetime as dt
import re

import jsonschema
import pytest
from support import swagger

KEY = base64.b64encode(b"k" * 32).decode()
B64_DECIMAL = re.compile(r"^[A-Za-z0-9+/]+=*$")
TIME_7 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{7}Z$")


def _scenario(hub):
    """Exercise every route; yield (swagger path, method, status, body)."""
    r = hub.put_device("plain", {"deviceId": "plain"})
    yield "/devices/{id}", "put", r
    gw = hub.put_device("gw", {"deviceId": "gw", "capabilities": {"iotEdge": True}})
    yield "/devices/{id}", "put", gw
    scope = gw.json()["deviceScope"]
    yield "/devices/{id}", "put", hub.put_device("leaf", {"deviceId": "leaf", "deviceScope": scope, "statusReason": "r"})
    yield "/devices/{id}", "put", hub.put_device("child", {"deviceId": "child", "capabilities": {"iotEdge": True},
                                                           "parentScopes": [scope]})
    yield "/devices/{id}", "put", hub.put_device("x509", {"deviceId": "x509", "authentication": {
        "type": "selfSigned", "x509Thumbprint": {"primaryThumbprint": "a" * 40}}})
    yield "/devices/{id}", "put", hub.put_device("ca", {"deviceId": "ca", "authentication": {"type": "certificateAuthority"}})
    for d in ("plain", "gw", "leaf", "child", "x509", "ca"):
        yield "/devices/{id}", "get", hub.get_device(d)
    yield "/devices", "get", hub.request("GET", "/devices")
    yield "/devices", "post", hub.bulk([{"id": f"b{i}", "importMode": "create", "tags": {"site": "s", "n": i},
                                         "properties": {"desired": {"rate": {"hz": 5}}}} for i in range(3)])
    yield "/devices", "post", hub.bulk([{"id": "b0", "importMode": "create"}, {"id": "b9", "importMode": "create"}])
    yield "/devices", "post", hub.bulk([{"id": "dd", "importMode": "create"}, {"id": "dd", "importMode": "delete"}])
    yield "/devices/query", "post", hub.query("SELECT * FROM devices", max_items=4)
    yield "/devices/query", "post", hub.query("SELECT * FROM devices")
    yield "/twins/{id}", "get", hub.request("GET", "/twins/b1")
    yield "/twins/{id}", "patch", hub.request("PATCH", "/twins/b1", json={"tags": {"site": None, "zone": "z"}})
    yield "/devices/{id}/modules", "get", hub.request("GET", "/devices/gw/modules")
    yield "/devices/{id}/modules/{mid}", "get", hub.request("GET", "/devices/gw/modules/$edgeHub")
    yield "/devices/{id}/modules/{mid}", "put", hub.request("PUT", "/devices/gw/modules/m1",
                                                            json={"moduleId": "m1", "deviceId": "gw"})
    yield "/devices/{id}/modules/{mid}", "get", hub.request("GET", "/devices/gw/modules/m1")
    yield "/twins/{id}/modules/{mid}", "get", hub.request("GET", "/twins/gw/modules/m1")
    yield "/twins/{id}/modules/{mid}", "patch", hub.request("PATCH", "/twins/gw/modules/m1",
                                                            json={"tags": {"a": 1}, "properties": {"desired": {"x": 1}}})


def test_every_response_body_matches_the_swagger(hub):
    checked = 0
    for path, method, resp in _scenario(hub):
        assert resp.status_code in (200, 400), (path, method, resp.text)
        swagger.validate(path, method, resp.status_code, resp.json())
        checked += 1
    assert checked >= 20


def test_validator_is_strict():
    # The validator itself must reject what the swagger does not allow, or the test above proves nothing.
    with pytest.raises(jsonschema.ValidationError):
        swagger.validate("/devices/{id}", "get", 200, {"deviceId": "x", "invented": 1})
    with pytest.raises(jsonschema.ValidationError):
        swagger.validate("/devices/{id}", "get", 200, {"deviceId": "x", "status": "paused"})
    with pytest.raises(jsonschema.ValidationError):
        swagger.validate("/devices/{id}", "get", 200, {"deviceId": "x", "statusUpdatedTime": "yesterday"})
    with pytest.raises(jsonschema.ValidationError):
        swagger.validate("/devices", "post", 200, {"isSuccessful": "yes"})


def test_recorded_create_response(hub):
    """§1.3: the recorded create response, field by field."""
    t0 = dt.datetime.now(dt.timezone.utc)
    r = hub.put_device("UpdateWithETag1136204569", {"deviceId": "UpdateWithETag1136204569"})
    body = r.json()
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json; charset=utf-8"
    assert r.headers["ETag"] == f'"{body["etag"]}"'
    assert list(body) == ["deviceId", "generationId", "etag", "connectionState", "status", "statusReason",
                          "connectionStateUpdatedTime", "statusUpdatedTime", "lastActivityTime",
                          "cloudToDeviceMessageCount", "authentication", "capabilities", "parentScopes"]
    assert body["deviceId"] == "UpdateWithETag1136204569"
    assert re.match(r"^\d{18}$", body["generationId"])
    created = dt.datetime(1, 1, 1, tzinfo=dt.timezone.utc) + dt.timedelta(microseconds=int(body["generationId"]) // 10)
    assert abs((created - t0).total_seconds()) < 60  # .NET ticks of the creation time
    assert B64_DECIMAL.match(body["etag"]) and base64.b64decode(body["etag"]).decode().isdigit()
    assert body["connectionState"] == "Disconnected" and body["status"] == "enabled"
    assert body["statusReason"] is None and body["cloudToDeviceMessageCount"] == 0
    for field in ("connectionStateUpdatedTime", "statusUpdatedTime", "lastActivityTime"):
        assert body[field] == "0001-01-01T00:00:00Z"
    auth = body["authentication"]
    assert auth["type"] == "sas"
    for k in ("primaryKey", "secondaryKey"):
        assert len(auth["symmetricKey"][k]) == 44 and len(base64.b64decode(auth["symmetricKey"][k])) == 32
    assert auth["x509Thumbprint"] == {"primaryThumbprint": None, "secondaryThumbprint": None}
    assert body["capabilities"] == {"iotEdge": False} and body["parentScopes"] == []
    assert "x-ms-request-id" in r.headers


def test_recorded_error_envelopes(hub):
    """§2.3: envelope A for 404, 409, 412 and 401."""
    tracking = re.compile(r"^Tracking ID:[0-9a-f]{32}-G:\d+-TimeStamp:\d\d/\d\d/\d{4} \d\d:\d\d:\d\d$")
    hub.put_device("e", {"deviceId": "e"})
    cases = [
        (hub.get_device("sensor-thl-002"), 404, "ErrorCode:DeviceNotFound;sensor-thl-002"),
        (hub.put_device("e", {"deviceId": "e"}), 409, "ErrorCode:DeviceAlreadyExists;A device with ID 'e' is already registered."),
        (hub.put_device("e", {"deviceId": "e"}, if_match='"c3RhbGU="'), 412, "ErrorCode:PreconditionFailed;PreconditionFailed"),
    ]
    for resp, status, message in cases:
        assert resp.status_code == status
        assert resp.json()["Message"] == message
        assert tracking.match(resp.json()["ExceptionMessage"])
        assert resp.headers["iothub-errorcode"] == message.split(";")[0].split(":")[1]
        assert set(resp.json()) == {"Message", "ExceptionMessage"}
    unauth = hub.request("GET", "/devices/e", auth="SharedAccessSignature sr=x&sig=y&se=1&skn=iothubowner")
    assert unauth.status_code == 401 and unauth.json()["Message"].startswith("ErrorCode:IotHubUnauthorizedAccess;")


def test_recorded_twin_item(hub):
    """§3.2: the recorded query item of a bulk-created device."""
    hub.bulk([{"id": "bulkDevice779703902", "importMode": "create", "status": "enabled"}])
    item = hub.query("SELECT * FROM devices").json()[0]
    assert list(item) == ["deviceId", "etag", "deviceEtag", "status", "statusUpdateTime", "connectionState",
                          "lastActivityTime", "cloudToDeviceMessageCount", "authenticationType", "x509Thumbprint",
                          "version", "properties", "capabilities"]
    assert item["deviceId"] == "bulkDevice779703902" and item["etag"] == "AAAAAAAAAAE="
    assert base64.b64decode(item["deviceEtag"]).decode().isdigit()
    assert item["deviceEtag"] == hub.get_device("bulkDevice779703902").json()["etag"]
    assert item["status"] == "enabled" and item["connectionState"] == "Disconnected"
    assert item["statusUpdateTime"] == item["lastActivityTime"] == "0001-01-01T00:00:00Z"
    assert item["cloudToDeviceMessageCount"] == 0 and item["authenticationType"] == "sas"
    assert item["x509Thumbprint"] == {"primaryThumbprint": None, "secondaryThumbprint": None}
    for kind in ("desired", "reported"):
        props = item["properties"][kind]
        assert set(props) == {"$metadata", "$version"} and props["$version"] == 1
        assert TIME_7.match(props["$metadata"]["$lastUpdated"])
    assert item["capabilities"] == {"iotEdge": False}


def test_recorded_bulk_exchange(hub):
    """§4: create 10, update with eTag, delete with eTag, as the recorded BulkUpdate session did."""
    create = hub.bulk([{"id": f"bulkDeviceUpdate{i}", "importMode": "create", "status": "enabled"} for i in range(10)])
    assert create.status_code == 200 and create.text.replace(" ", "") == '{"isSuccessful":true,"errors":[],"warnings":[]}'
    dev = hub.get_device("bulkDeviceUpdate0").json()
    upd = hub.bulk([{"id": "bulkDeviceUpdate0", "eTag": dev["etag"], "importMode": "update", "status": "disabled",
                     "authentication": {"symmetricKey": dev["authentication"]["symmetricKey"], "x509Thumbprint": {},
                                        "type": "sas"}, "capabilities": {"iotEdge": False}}])
    assert upd.status_code == 200
    after = hub.get_device("bulkDeviceUpdate0").json()
    assert int(base64.b64decode(after["etag"])) == int(base64.b64decode(dev["etag"])) + 1
    assert after["authentication"]["symmetricKey"] == dev["authentication"]["symmetricKey"]
    assert TIME_7.match(after["statusUpdatedTime"])
    delete = hub.bulk([{"id": "bulkDeviceUpdate0", "eTag": after["etag"], "importMode": "delete"}])
    assert delete.status_code == 200 and hub.get_device("bulkDeviceUpdate0").status_code == 404


def test_edge_examples(hub):
    """§5: the IoT Edge docs' twin shape and the CLI's parent extraction."""
    gw = hub.put_device("IoTEdgeGateway", {"deviceId": "IoTEdgeGateway", "capabilities": {"iotEdge": True}}).json()
    assert gw["deviceScope"] == f"ms-azure-iot-edge://IoTEdgeGateway-{gw['generationId']}"
    prefix = "ms-azure-iot-edge://"
    scope = gw["deviceScope"]
    assert scope[len(prefix):scope.rindex("-")] == "IoTEdgeGateway"
    twin = hub.request("GET", "/twins/IoTEdgeGateway").json()
    assert twin["capabilities"] == {"iotEdge": True} and twin["deviceScope"] == scope
