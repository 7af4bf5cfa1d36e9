"""The IoT Central devices API of the emulator (iot-api.md §8), its responses validated against the Device
and Error schemas documented there."""

from __future__ import annotations

import jsonschema
import pytest
import ssl

import httpx

DEVICE_SCHEMA = {  # §8: 2022-07-31 Device; every field optional
    "type": "object", "additionalProperties": False,
    "properties": {"id": {"type": "string"}, "etag": {"type": "string"}, "displayName": {"type": "string"},
                   "template": {"type": "string"}, "enabled": {"type": "boolean"}, "provisioned": {"type": "boolean"},
                   "simulated": {"type": "boolean"}, "organizations": {"type": "array", "items": {"type": "string"}}},
}
ERROR_SCHEMA = {
    "type": "object", "additionalProperties": False, "required": ["error"],
    "properties": {"error": {"type": "object", "additionalProperties": False, "required": ["code", "message"],
                             "properties": {"code": {"type": "string"}, "message": {"type": "string"},
                                            "requestId": {"type": "string"}, "time": {"type": "string"}}}},
}
LIST_SCHEMA = {"type": "object", "additionalProperties": False, "required": ["value"],
               "properties": {"value": {"type": "array", "items": DEVICE_SCHEMA}, "nextLink": {"type": "string"}}}
CREDENTIALS_SCHEMA = {"type": "object", "required": ["idScope"], "properties": {
    "idScope": {"type": "string"}, "symmetricKey": {"type": "object", "required": ["primaryKey", "secondaryKey"]}}}
SAMPLE = {"displayName": "CheckoutThermostatccc", "template": "dtmi:contoso:testDeviceTemplate;1", "simulated": True,
          "enabled": True, "organizations": ["seattle"]}


class Central:
    def __init__(self, emu, token=None):
        self.http = httpx.Client(base_url=emu.env["IOTCENTRAL_APP_URL"], timeout=30,
                                 verify=ssl.create_default_context(cafile=emu.env["IOTCENTRAL_CA_PATH"]))
        self.token = token or emu.env["IOTCENTRAL_API_TOKEN"]

    def req(self, method, path, json=None, version="2022-07-31", headers=None, token="default"):
        h = {"Authorization": self.token if token == "default" else token}
        if token is None:
            h.pop("Authorization")
        h.update(headers or {})
        params = {"api-version": version} if version else {}
        return self.http.request(method, f"/api{path}", json=json, params=params, headers=h)


@pytest.fixture
def central(emulator):
    c = Central(emulator)
    yield c
    c.http.close()


def check(resp, schema):
    jsonschema.Draft7Validator(schema).validate(resp.json())
    return resp.json()


def test_seed_sample_request_works_as_written(central):
    r = central.req("PUT", "/devices/ccc", SAMPLE)
    assert r.status_code == 200
    dev = check(r, DEVICE_SCHEMA)
    assert dev == {**SAMPLE, "id": "ccc", "etag": dev["etag"], "provisioned": False}
    assert check(central.req("GET", "/devices/ccc"), DEVICE_SCHEMA) == dev


def test_patch_merges_and_etag_412(central):
    etag = central.req("PUT", "/devices/d1", SAMPLE).json()["etag"]
    r = central.req("PATCH", "/devices/d1", {"enabled": False, "etag": etag},
                    headers={"Content-Type": "application/merge-patch+json"})
    dev = check(r, DEVICE_SCHEMA)
    assert dev["enabled"] is False and dev["displayName"] == SAMPLE["displayName"] and dev["etag"] != etag
    stale = central.req("PATCH", "/devices/d1", {"enabled": True, "etag": etag})
    assert stale.status_code == 412 and stale.headers["x-ms-error-code"] == "PreconditionFailed"
    check(stale, ERROR_SCHEMA)
    stale_put = central.req("PUT", "/devices/d1", {**SAMPLE, "etag": etag})
    assert stale_put.status_code == 412


def test_put_replaces_the_device(central):
    central.req("PUT", "/devices/r1", {**SAMPLE, "enabled": False})
    replaced = central.req("PUT", "/devices/r1", {"template": SAMPLE["template"]}).json()
    assert replaced["enabled"] is True and replaced["displayName"] == "r1"  # what a blind PUT does


def test_list_pages_with_next_link(central):
    for i in range(30):
        central.req("PUT", f"/devices/p{i:02d}", {"displayName": f"p{i}"})
    first = check(central.req("GET", "/devices"), LIST_SCHEMA)
    assert len(first["value"]) == 25 and first["nextLink"].startswith(central.http.base_url.scheme + "://")
    second = central.http.get(first["nextLink"], headers={"Authorization": central.token}).json()
    assert len(second["value"]) == 5 and "nextLink" not in second


def test_delete_credentials_and_errors(central):
    central.req("PUT", "/devices/c1", SAMPLE)
    creds = check(central.req("GET", "/devices/c1/credentials"), CREDENTIALS_SCHEMA)
    assert creds["idScope"].startswith("0ne") and creds["symmetricKey"]["primaryKey"]
    assert central.req("DELETE", "/devices/c1").status_code == 204
    missing = central.req("DELETE", "/devices/c1")
    assert missing.status_code == 404 and check(missing, ERROR_SCHEMA)["error"]["code"] == "NotFound"
    cases = [
        (central.req("GET", "/devices/c1", token="SharedAccessSignature sr=x&sig=y&skn=z&se=1"), 401),
        (central.req("GET", "/devices/c1", token=None), 401),
        (central.req("PUT", "/devices/x", {"template": "dtmi:nope;1"}), 400),
        (central.req("PUT", "/devices/x", {"organizations": ["nowhere"]}), 400),
        (central.req("PUT", "/devices/x", {"organizations": ["seattle", "seattle2"]}), 400),
        (central.req("PUT", "/devices/x", {"color": "red"}), 400),
        (central.req("PUT", "/devices/UPPER", {}), 400),
        (central.req("GET", "/devices/x", version=None), 400),
        (central.req("PATCH", "/devices/x", {"enabled": False}), 404),
    ]
    for resp, status in cases:
        assert resp.status_code == status, resp.text
        body = check(resp, ERROR_SCHEMA)
        assert resp.headers["x-ms-error-code"] == body["error"]["code"]
    assert "dtmi:nope;1" in cases[2][0].json()["error"]["message"]


def test_central_counts_and_reset(emulator, central):
    before = emulator.stats()
    central.req("PUT", "/devices/s1", SAMPLE)
    central.req("GET", "/devices/s1")
    after = emulator.stats()
    assert after["central_writes"] - before["central_writes"] == 1
    assert after["write_requests"] - before["write_requests"] == 1
    emulator.reset()
    assert central.req("GET", "/devices/s1").status_code == 404


def test_configured_templates_and_tokens(emulator_factory):
    emu = emulator_factory("--central-template", "dtmi:acme:meter;2", "--central-organization", "plant-7",
                           "--central-token", "SharedAccessSignature sr=app&sig=abc&skn=ci&se=99999999999999")
    c = Central(emu)
    assert emu.env["IOTCENTRAL_API_TOKEN"] == "SharedAccessSignature sr=app&sig=abc&skn=ci&se=99999999999999"
    assert c.req("PUT", "/devices/m1", {"template": "dtmi:acme:meter;2", "organizations": ["plant-7"]}).status_code == 200
    assert c.req("PUT", "/devices/m2", {"template": "dtmi:contoso:testDeviceTemplate;1"}).status_code == 400
    c.http.close()
