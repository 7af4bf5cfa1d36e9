"""Microsoft's DPS service SDK (azure-iot-deviceprovisioning, from PyPI) as an independent client of the emulator's
Device Provisioning Service: each expectation is what the SDK's recorded sessions against the real service show
(azure-sdk-for-python ``sdk/iothub/azure-iot-deviceprovisioning/tests/recordings``, api-version 2021-10-01), or the
spec (iot-api-2.md §4).  A test-only dependency; the collection never imports it."""

from __future__ import annotations

import base64

import pytest

pytest.importorskip("azure.iot.deviceprovisioning", reason="installed by requirements-dev.txt")
from azure.core.exceptions import HttpResponseError  # noqa: E402
from azure.iot.deviceprovisioning import DeviceProvisioningClient  # noqa: E402

KEY_A = base64.b64encode(b"A" * 64).decode()
KEY_B = base64.b64encode(b"B" * 64).decode()
EK = base64.b64encode(b"endorsement-key-of-a-tpm" * 4).decode()


@pytest.fixture
def dps(emulator, monkeypatch):
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    for var in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
        monkeypatch.delenv(var, raising=False)
    return DeviceProvisioningClient.from_connection_string(emulator.env["DPS_CONNECTION_STRING"],
                                                           connection_verify=emulator.env["DPS_CA_PATH"])


def sym(reg_id: str, **extra) -> dict:
    return {"registrationId": reg_id, "attestation": {"type": "symmetricKey",
                                                      "symmetricKey": {"primaryKey": KEY_A, "secondaryKey": KEY_B}},
            **extra}


def test_symmetric_key_lifecycle_as_recorded(dps):
    twin = {"properties": {"desired": {"key": "value"}}}
    created = dps.enrollment.create_or_update(id="sym-1", enrollment=sym("sym-1", initialTwin=twin))
    # the PUT answer carries the keys; provisioningStatus is null when not given (recorded)
    assert created["attestation"]["symmetricKey"] == {"primaryKey": KEY_A, "secondaryKey": KEY_B}
    assert created["provisioningStatus"] is None and created["initialTwin"] == twin
    etag = created["etag"]
    assert base64.b64decode(etag).decode().startswith('"')  # base64 of a quoted GUID-like string (recorded)
    got = dps.enrollment.get(id="sym-1")
    assert got["attestation"] == {"type": "symmetricKey"}  # GET hides the keys (recorded)
    assert got["registrationState"] == {"registrationId": "sym-1", "status": "unassigned"}
    listed = list(dps.enrollment.query(query_specification={"query": "SELECT *"}))
    assert [e["registrationId"] for e in listed] == ["sym-1"] and listed[0]["attestation"] == {"type": "symmetricKey"}
    assert dps.enrollment.get_attestation_mechanism(id="sym-1")["symmetricKey"]["primaryKey"] == KEY_A
    updated = dps.enrollment.create_or_update(id="sym-1", enrollment=sym("sym-1", provisioningStatus="disabled"),
                                              if_match=etag)  # the etag sent back as returned, unquoted
    assert updated["provisioningStatus"] == "disabled" and updated["etag"] != etag
    with pytest.raises(HttpResponseError) as stale:
        dps.enrollment.create_or_update(id="sym-1", enrollment=sym("sym-1"), if_match=etag)
    assert stale.value.status_code == 412
    dps.enrollment.delete(id="sym-1")
    assert list(dps.enrollment.query(query_specification={"query": "SELECT *"})) == []
    with pytest.raises(HttpResponseError) as gone:
        dps.enrollment.get(id="sym-1")
    assert gone.value.status_code == 404 and gone.value.response.headers["x-ms-error-code"] == "404201"


def test_keys_generated_when_omitted_and_put_without_if_match_on_existing(dps, emulator):
    e = {"registrationId": "gen-1", "attestation": {"type": "symmetricKey",
                                                    "symmetricKey": {"primaryKey": None, "secondaryKey": None}}}
    created = dps.enrollment.create_or_update(id="gen-1", enrollment=e)
    keys = created["attestation"]["symmetricKey"]
    assert len(base64.b64decode(keys["primaryKey"])) == 64 and keys["primaryKey"] != keys["secondaryKey"]
    with pytest.raises(HttpResponseError) as conflict:
        dps.enrollment.create_or_update(id="gen-1", enrollment=e)
    body = conflict.value.response.json()
    assert conflict.value.status_code == 409 and body["errorCode"] == 409201
    assert set(body) >= {"errorCode", "trackingId", "message", "timestampUtc"}
    emulator.configure(dps_put_without_if_match="upsert")  # the other reading of "Create or update"
    try:
        again = dps.enrollment.create_or_update(id="gen-1", enrollment=e)
        assert again["etag"] != created["etag"]
    finally:
        emulator.configure(dps_put_without_if_match="conflict")


def test_bulk_as_recorded_and_limit(dps):
    tpm = {"registrationId": "tpm-1", "attestation": {"type": "tpm", "tpm": {"endorsementKey": EK}},
           "allocationPolicy": "static", "provisioningStatus": "enabled"}
    ok = dps.enrollment.run_bulk_operation(bulk_operation={"mode": "create", "enrollments": [tpm, sym("sym-2")]})
    assert ok == {"isSuccessful": True, "errors": []}
    again = dps.enrollment.run_bulk_operation(bulk_operation={"mode": "update", "enrollments": [tpm, sym("sym-2")]})
    assert again["isSuccessful"] is False
    assert {(e["registrationId"], e["errorCode"], e["errorStatus"]) for e in again["errors"]} == {
        ("tpm-1", 409201, "Enrollment already exists."), ("sym-2", 409201, "Enrollment already exists.")}
    assert dps.enrollment.get_attestation_mechanism(id="tpm-1")["tpm"]["endorsementKey"] == EK
    with pytest.raises(HttpResponseError) as too_many:
        dps.enrollment.run_bulk_operation(bulk_operation={"mode": "create",
                                                          "enrollments": [sym(f"b-{i}") for i in range(11)]})
    assert too_many.value.status_code == 400
    gone = dps.enrollment.run_bulk_operation(bulk_operation={"mode": "delete", "enrollments": [tpm, sym("sym-2")]})
    assert gone["isSuccessful"] is True and list(dps.enrollment.query(query_specification={"query": "SELECT *"})) == []


def test_paging_with_top(dps):
    for i in range(7):
        dps.enrollment.create_or_update(id=f"page-{i}", enrollment=sym(f"page-{i}"))
    pages = [list(p) for p in dps.enrollment.query(query_specification={"query": "select *"}, top=3).by_page()]
    assert [len(p) for p in pages] == [3, 3, 1]
    assert sorted(e["registrationId"] for p in pages for e in p) == [f"page-{i}" for i in range(7)]


def test_groups_and_validation(dps, emulator):
    group = {"enrollmentGroupId": "grp-1", "attestation": {"type": "symmetricKey"},
             "allocationPolicy": "hashed", "iotHubs": [emulator.hostname],
             "reprovisionPolicy": {"updateHubAssignment": True, "migrateDeviceData": True}}
    created = dps.enrollment_group.create_or_update(id="grp-1", enrollment_group=group)
    assert created["iotHubs"] == [emulator.hostname] and created["attestation"]["symmetricKey"]["primaryKey"]
    assert dps.enrollment_group.get(id="grp-1")["attestation"] == {"type": "symmetricKey"}
    assert [g["enrollmentGroupId"] for g in dps.enrollment_group.query(query_specification={"query": "SELECT *"})] \
        == ["grp-1"]
    assert list(dps.device_registration_state.query(id="grp-1")) == []
    for bad in ({**group, "enrollmentGroupId": "grp-2", "iotHubs": ["not-linked.azure-devices.net"]},
                {**group, "enrollmentGroupId": "grp-2", "attestation": {"type": "tpm", "tpm": {"endorsementKey": EK}}},
                {**group, "enrollmentGroupId": "grp-2", "allocationPolicy": "custom"}):
        with pytest.raises(HttpResponseError) as refused:
            dps.enrollment_group.create_or_update(id="grp-2", enrollment_group=bad)
        assert refused.value.status_code == 400
    with pytest.raises(HttpResponseError) as bad_id:
        dps.enrollment.create_or_update(id="-bad-", enrollment=sym("-bad-"))
    assert bad_id.value.status_code == 400
    with pytest.raises(HttpResponseError) as missing:
        dps.device_registration_state.get(id="never-registered")
    assert missing.value.status_code == 404 and missing.value.response.json()["errorCode"] == 404202


def test_sas_is_checked(emulator):
    wrong = emulator.env["DPS_CONNECTION_STRING"].rsplit("SharedAccessKey=", 1)[0] + "SharedAccessKey=" + KEY_A
    client = DeviceProvisioningClient.from_connection_string(wrong, connection_verify=emulator.env["DPS_CA_PATH"])
    with pytest.raises(HttpResponseError) as denied:
        client.enrollment.get(id="x")
    assert denied.value.status_code == 401
    hub_cs = emulator.connection_string  # the hub's policy does not open the DPS
    hub_client = DeviceProvisioningClient.from_connection_string(
        hub_cs.replace(emulator.hostname, emulator.env["DPS_HOSTNAME"]), connection_verify=emulator.env["DPS_CA_PATH"])
    with pytest.raises(HttpResponseError) as other:
        hub_client.enrollment.get(id="x")
    assert other.value.status_code == 401
