"""Connection strings, SAS signing (checked by the emulator's independent validator) and input validation."""

from __future__ import annotations

import base64

import pytest

from ansible_collections.fleet.azure_iot.plugins.module_utils._errors import (
    AuthError,
    SpecError,
    format_validation_error,
)
from ansible_collections.fleet.azure_iot.plugins.module_utils._auth import (
    SasCredential,
    parse_connection_string,
    sas_token,
)
from ansible_collections.fleet.azure_iot.plugins.module_utils._models import DeviceSpec

KEY = base64.b64encode(b"p" * 32).decode()
CS = f"HostName=myhub.azure-devices.net;SharedAccessKeyName=iothubowner;SharedAccessKey={KEY}"


def test_parse_connection_string():
    parts = parse_connection_string(CS)
    assert parts == {"HostName": "myhub.azure-devices.net", "SharedAccessKeyName": "iothubowner", "SharedAccessKey": KEY}
    assert parse_connection_string(CS.replace("myhub.azure-devices.net", "127.0.0.1:8443") + ";")["HostName"] == "127.0.0.1:8443"


@pytest.mark.parametrize("value, fragment", [
    ("", "empty"),
    ("garbage", "malformed"),
    ("HostName=h;SharedAccessKeyName=p", "lacks SharedAccessKey"),
    ("HostName=h;SharedAccessKeyName=p;SharedAccessKey=not*base64", "not valid base64"),
    (f"HostName=h;DeviceId=d;SharedAccessKey={KEY}", "device connection string"),
    (f"HostName=h;Policy=p;SharedAccessKey={KEY}", "unknown part"),
])
def test_bad_connection_strings_name_the_option(value, fragment):
    with pytest.raises(AuthError) as exc:
        parse_connection_string(value)
    assert "connection_string" in str(exc.value) and fragment in str(exc.value)
    assert KEY not in str(exc.value)


@pytest.mark.parametrize("host", ["myhub.azure-devices.net", "127.0.0.1:8443"])
def test_sas_token_accepted_by_the_emulators_validator(host):
    auth = pytest.importorskip("iot_emulator.auth")
    policy = auth.Policy("iothubowner", KEY, {"RegistryRead", "RegistryWrite"})
    validator = auth.Authorizer({"iothubowner": policy}, [host])
    token = SasCredential(host, "iothubowner", KEY).header()
    assert validator.check(token, "/devices/x", "RegistryWrite") == "iothubowner"
    other = auth.Authorizer({"iothubowner": auth.Policy("iothubowner", base64.b64encode(b"q" * 32).decode(), set())}, [host])
    with pytest.raises(Exception):
        other.check(token, "/devices/x", "RegistryRead")


def test_sas_token_format_and_renewal():
    now = [1_700_000_000]
    cred = SasCredential("h:1", "iothubowner", KEY, clock=lambda: now[0])
    first = cred.header()
    assert first.startswith("SharedAccessSignature sr=h%3A1&sig=") and f"&se={now[0] + 3600}&skn=iothubowner" in first
    now[0] += 3000
    assert cred.header() == first  # still valid for > 5 minutes
    now[0] += 400
    assert cred.header() != first  # renewed before expiry
    assert sas_token("h", "p", KEY, 10) == sas_token("h", "p", KEY, 10)


@pytest.mark.parametrize("kwargs, option", [
    ({"device_id": "bad id"}, "device_id"),
    ({"device_id": "x" * 129}, "device_id"),
    ({"device_id": "d", "status_reason": "r" * 129}, "status_reason"),
    ({"device_id": "d", "primary_key": "not base64"}, "primary_key"),
    ({"device_id": "d", "secondary_key": base64.b64encode(b"short").decode()}, "secondary_key"),
    ({"device_id": "d", "primary_thumbprint": "12:34"}, "primary_thumbprint"),
    ({"device_id": "d", "primary_key": KEY, "primary_thumbprint": "a" * 40}, "mutually exclusive"),
    ({"device_id": "d", "auth_type": "certificate_authority", "primary_key": KEY}, "auth_type"),
    ({"device_id": "d", "parent": "d"}, "own parent"),
    ({"device_id": "d", "parent": "bad parent"}, "parent"),
    ({"device_id": "d", "status": "on"}, "status"),
])
def test_invalid_specs_name_the_option_and_hide_values(kwargs, option):
    with pytest.raises(SpecError) as exc:
        DeviceSpec(**kwargs)
    msg = format_validation_error(exc.value)
    assert option in msg
    for secret in (kwargs.get("primary_key"), kwargs.get("secondary_key")):
        if secret:
            assert secret not in msg


def test_valid_spec_normalises_thumbprints():
    s = DeviceSpec(device_id="a#b:c", primary_thumbprint="ab" * 32)
    assert s.primary_thumbprint == "AB" * 32 and s.wanted_auth_type == "selfSigned"


@pytest.mark.parametrize("kwargs, expected", [
    ({"device_id": "d", "colour": "red"}, "colour: is not a known option"),
    ({}, "device_id: is required"),
    ({"device_id": "d", "state": "gone"}, "state: must be one of present, absent"),
    ({"device_id": "d", "edge_enabled": "maybe"}, "edge_enabled: must be a boolean"),
    ({"device_id": 7}, "device_id: must be a string"),
    ({"device_id": "d", "tags": ["a"]}, "tags: must be a dictionary"),
])
def test_bulk_entries_are_checked_for_kind_choices_and_unknown_keys(kwargs, expected):
    with pytest.raises(SpecError) as exc:
        DeviceSpec(**kwargs)
    assert expected in format_validation_error(exc.value)


def test_booleans_read_as_ansible_reads_them_and_null_means_not_managed():
    assert DeviceSpec(device_id="d", edge_enabled="yes").edge_enabled is True
    assert DeviceSpec(device_id="d", edge_enabled="False").edge_enabled is False
    s = DeviceSpec(device_id="d", state=None, status=None)
    assert s.state == "present" and s.status is None and s.parent is None


def test_identity_specs_do_not_import_pydantic():
    import subprocess
    import sys
    code = ("import sys; import ansible_collections.fleet.azure_iot.plugins.modules.iothub_device, "
            "ansible_collections.fleet.azure_iot.plugins.modules.iothub_device_bulk, "
            "ansible_collections.fleet.azure_iot.plugins.modules.iothub_module; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('pydantic', 'anyio', 'click', 'rich')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**__import__("os").environ, "PYTHONPATH": ":".join(sys.path)}).stdout
    assert out.strip() == "[]"


def test_awx_environment_empty_values_are_unset_and_azure_rm_names_are_read():
    from ansible_collections.fleet.azure_iot.plugins.module_utils._auth import azure_environment
    env = {"AZURE_CLIENT_ID": "", "AZURE_TENANT_ID": " ", "AZURE_CLIENT_SECRET": "", "HOME": "/root"}
    assert azure_environment(env) == ["AZURE_CLIENT_ID", "AZURE_CLIENT_SECRET", "AZURE_TENANT_ID"]
    assert env == {"HOME": "/root"}  # a managed identity needs nothing else
    awx = {"AZURE_CLIENT_ID": "app", "AZURE_SECRET": "s3cret-value", "AZURE_TENANT": "tenant",
           "AZURE_SUBSCRIPTION_ID": "sub"}
    assert azure_environment(awx) == []
    assert awx["AZURE_CLIENT_SECRET"] == "s3cret-value" and awx["AZURE_TENANT_ID"] == "tenant"
    both = {"AZURE_TENANT": "awx-tenant", "AZURE_TENANT_ID": "standard-tenant"}
    azure_environment(both)
    assert both["AZURE_TENANT_ID"] == "standard-tenant"  # the standard name wins
