"""Authorization (§7), the test knobs, the counters, and the process start contract."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import signal
import stat
import subprocess
import time
import urllib.parse

import httpx
import pytest
from support.emulator import parse_env_file
from support.hub import HubClient, parse_connection_string, sas_token


def _sign(sr: str, key: str, se: int) -> str:
    return base64.b64encode(hmac.new(base64.b64decode(key), f"{sr}\n{se}".encode(), hashlib.sha256).digest()).decode()


def _token(sr, key, se, skn="iothubowner", sig_quote=True):
    sig = _sign(sr, key, se)
    return f"SharedAccessSignature sr={sr}&sig={urllib.parse.quote(sig, safe='') if sig_quote else sig}&se={se}&skn={skn}"


@pytest.fixture
def creds(emulator):
    cs = parse_connection_string(emulator.connection_string)
    return cs["HostName"], cs["SharedAccessKey"]


@pytest.mark.parametrize("encode", [
    lambda h: urllib.parse.quote_plus(h),                   # Python SDK
    lambda h: h,                                            # Node SDK: raw
    lambda h: urllib.parse.quote_plus(h).replace("%3a", "%3A"),  # C#: uppercase escapes
    lambda h: urllib.parse.quote_plus(h).lower(),           # documented lower-case encoding
])
def test_sas_encodings_accepted(hub, creds, encode):
    host, key = creds
    se = int(time.time()) + 600
    r = hub.request("GET", "/devices/none", auth=_token(encode(host), key, se))
    assert r.status_code == 404  # authorized, device missing


def test_sas_failures_are_401(hub, creds):
    host, key = creds
    now = int(time.time())
    other_key = base64.b64encode(b"z" * 32).decode()
    cases = {
        "no header": None,
        "garbage": "Basic abc",
        "wrong key": _token(urllib.parse.quote_plus(host), other_key, now + 600),
        "expired beyond skew": _token(urllib.parse.quote_plus(host), key, now - 400),
        "unknown policy": _token(urllib.parse.quote_plus(host), key, now + 600, skn="nobody"),
        "other host": _token("otherhub.azure-devices.net", key, now + 600),
        "bearer without test mode": "Bearer abc.def.ghi",
    }
    for name, header in cases.items():
        r = hub.request("GET", "/devices/x", auth=header)
        assert r.status_code == 401, name
        assert r.headers["iothub-errorcode"] == "IotHubUnauthorizedAccess", name
        assert r.json()["Message"].startswith("ErrorCode:IotHubUnauthorizedAccess;"), name
    # Within the 5-minute skew an expired token still works (C# MaxClockSkew).
    assert hub.request("GET", "/devices/x", auth=_token(urllib.parse.quote_plus(host), key, now - 100)).status_code == 404


def test_policy_rights(emulator, hub):
    """iot-api-2.md §6.5: registry reads RegistryRead, writes RegistryWrite, twins and queries ServiceConnect (the
    security doc; --query-right RegistryRead plays the SDK sample's reading)."""
    reader = HubClient(emulator.env["IOTHUB_REGISTRY_READ_CONNECTION_STRING"], emulator.ca_path)
    service = HubClient(emulator.env["IOTHUB_SERVICE_CONNECTION_STRING"], emulator.ca_path)
    hub.put_device("r", {"deviceId": "r"})
    assert reader.get_device("r").status_code == 200
    assert reader.query("SELECT * FROM devices").status_code == 401
    assert reader.request("GET", "/twins/r").status_code == 401
    assert service.query("SELECT * FROM devices").status_code == 200
    assert service.request("GET", "/twins/r").status_code == 200
    assert service.get_device("r").status_code == 401
    denied = reader.put_device("w", {"deviceId": "w"})
    assert denied.status_code == 401
    assert reader.bulk([{"id": "w", "importMode": "create"}]).status_code == 401
    emulator.configure(query_right="RegistryRead")
    try:
        assert reader.query("SELECT * FROM devices").status_code == 200
    finally:
        emulator.configure(query_right="ServiceConnect")
    reader.close()
    service.close()


def _jwt(payload: dict) -> str:
    def b64(d):
        return base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()
    return f"{b64({'alg': 'RS256', 'typ': 'JWT'})}.{b64(payload)}.c2ln"


def test_entra_test_mode(emulator_factory):
    emu = emulator_factory("--entra-test-mode")
    client = HubClient(emu.connection_string, emu.ca_path)
    good = _jwt({"aud": "https://iothubs.azure.net", "exp": time.time() + 600, "oid": "tester"})
    assert client.request("GET", "/devices/x", auth=f"Bearer {good}").status_code == 404
    wrong_aud = _jwt({"aud": "https://management.azure.com", "exp": time.time() + 600})
    assert client.request("GET", "/devices/x", auth=f"Bearer {wrong_aud}").status_code == 401
    expired = _jwt({"aud": "https://iothubs.azure.net", "exp": time.time() - 3600})
    assert client.request("GET", "/devices/x", auth=f"Bearer {expired}").status_code == 401
    client.close()


def test_stats_and_reset(emulator, hub):
    hub.put_device("a", {"deviceId": "a"})
    hub.get_device("a")
    hub.bulk([{"id": "b", "importMode": "create"}, {"id": "c", "importMode": "create"}])
    hub.query("SELECT * FROM devices")
    s = emulator.stats()
    for key in ("requests", "registry_reads", "registry_writes", "bulk_calls", "query_pages"):
        assert isinstance(s[key], int), key
    assert (s["requests"], s["registry_reads"], s["registry_writes"], s["bulk_calls"], s["query_pages"]) == (4, 1, 3, 1, 1)
    assert s["responses_by_status"] == {"200": 4} and s["devices"] == 3
    emulator.reset()
    s = emulator.stats()
    assert s["requests"] == 0 and s["devices"] == 0 and hub.get_device("a").status_code == 404


def test_control_routes_need_no_auth(emulator):
    r = httpx.get(f"{emulator.url}/_emulator/stats", verify=False)
    assert r.status_code == 200


def test_throttle_counts_each_bulk_device(emulator, hub):
    emulator.configure(throttle="S1:1")
    assert hub.bulk([{"id": f"t{i}", "importMode": "create"} for i in range(60)]).status_code == 200
    r = hub.bulk([{"id": f"u{i}", "importMode": "create"} for i in range(60)])
    assert r.status_code == 429 and r.headers["iothub-errorcode"] == "ThrottlingException"
    assert "Wait 10 seconds" in r.json()["Message"]
    for _ in range(20):  # the query quota is separate: 20 pages a minute on S1:1
        assert hub.query("SELECT deviceId FROM devices").status_code == 200
    assert hub.query("SELECT deviceId FROM devices").status_code == 429
    assert emulator.stats()["throttled"] >= 2


def test_faults_are_seeded_and_counted(emulator_factory):
    emu = emulator_factory("--fault-rate", "1", "--fault-seed", "7", "--fault-kinds", "429,500,503")
    client = HubClient(emu.connection_string, emu.ca_path)
    statuses = [client.get_device("x").status_code for _ in range(30)]
    assert set(statuses) <= {429, 500, 503} and len(set(statuses)) == 3
    s = emu.stats()
    assert sum(v for k, v in s["faults_injected"].items() if k in ("429", "500", "503")) == 30
    client.close()


def test_dropped_connections(emulator_factory):
    emu = emulator_factory("--fault-rate", "1", "--fault-seed", "3", "--fault-kinds", "drop")
    client = HubClient(emu.connection_string, emu.ca_path)
    with pytest.raises(httpx.TransportError):
        client.put_device("dropped", {"deviceId": "dropped"})
    client.close()
    emu.configure(fault_rate=0)
    s = emu.stats()
    assert s["faults_injected"]["drop"] == 1
    # A drop after apply leaves the write in place; a drop before apply does not.
    c2 = HubClient(emu.connection_string, emu.ca_path)
    exists = c2.get_device("dropped").status_code == 200
    assert exists == (s["faults_injected"].get("drop_after_apply", 0) == 1)
    c2.close()


def test_env_file_contract(emulator):
    env = parse_env_file(emulator.data_dir / "emulator.env")
    port = emulator.port
    assert env["IOTHUB_HOSTNAME"] == f"127.0.0.1:{port}"
    assert env["IOTHUB_CONNECTION_STRING"].startswith(f"HostName=127.0.0.1:{port};SharedAccessKeyName=iothubowner;SharedAccessKey=")
    assert env["IOTHUB_CA_PATH"] == str((emulator.data_dir / "ca.pem").resolve())
    # Shell-sourceable: bash reads the same values.
    out = subprocess.run(["bash", "-c", f"set -a; . '{emulator.data_dir}/emulator.env'; echo \"$IOTHUB_CONNECTION_STRING\""],
                         capture_output=True, text=True, check=True).stdout.strip()
    assert out == env["IOTHUB_CONNECTION_STRING"]
    assert stat.S_IMODE(os.stat(emulator.data_dir / "emulator.env").st_mode) == 0o600


def test_sigterm_stops_cleanly_and_state_file_survives_restart(emulator_factory, tmp_path):
    state = tmp_path / "state.json"
    emu = emulator_factory("--state-file", str(state))
    client = HubClient(emu.connection_string, emu.ca_path)
    created = client.put_device("keep", {"deviceId": "keep"}).json()
    client.close()
    old_cs, port = emu.connection_string, emu.port
    assert emu.stop(signal.SIGTERM) == 0
    assert not (emu.data_dir / "emulator.env").exists()
    emu.port = port
    emu.start()
    assert emu.connection_string == old_cs  # same port, same policy keys
    client = HubClient(emu.connection_string, emu.ca_path)
    again = client.get_device("keep").json()
    assert again["etag"] == created["etag"]
    assert again["authentication"] == created["authentication"]
    assert [t["deviceId"] for t in client.query("SELECT * FROM devices").json()] == ["keep"]
    client.close()


def test_bad_arguments_exit_2(tmp_path):
    import sys
    r = subprocess.run([sys.executable, "-m", "iot_emulator", "--data-dir", str(tmp_path), "--throttle", "Z9:1"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "unknown SKU" in r.stderr


def test_sas_token_helper_matches_emulator(emulator):
    cs = parse_connection_string(emulator.connection_string)
    token = sas_token(cs["HostName"], "iothubowner", cs["SharedAccessKey"])
    assert token.startswith("SharedAccessSignature sr=127.0.0.1%3A")


def test_secrets_lists_what_every_area_registered(emulator, hub):
    """Each area that stores secrets registers them: device keys, module keys and policy keys all show up."""
    device = hub.put_device("sd", {"deviceId": "sd"}).json()
    module = hub.request("PUT", "/devices/sd/modules/m", json={"moduleId": "m", "deviceId": "sd"}).json()
    s = emulator.secrets()
    assert set(s) >= {"device_keys", "policy_keys", "central_tokens", "central_device_keys"}
    for identity in (device, module):
        keys = identity["authentication"]["symmetricKey"]
        assert keys["primaryKey"] in s["device_keys"] and keys["secondaryKey"] in s["device_keys"]
    assert s["policy_keys"] and all(s["policy_keys"])
