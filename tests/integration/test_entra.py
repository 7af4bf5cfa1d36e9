"""Entra ID auth through azure-identity's DefaultAzureCredential, offline: a stand-in `az` CLI mints a JWT for
the scope asked, and the emulator runs in --entra-test-mode (audience and expiry checked).  Only the Azure CLI
credential is enabled (AZURE_TOKEN_CREDENTIALS), so no managed-identity probe leaves the machine."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
from helpers import play, task
from support.ansible import AnsibleRunner
from support.emulator import env_without_proxies

FAKE_AZ = textwrap.dedent('''\
    #!{python}
    import base64, json, sys, time
    args = sys.argv[1:]
    resource = args[args.index("--resource") + 1] if "--resource" in args else args[args.index("--scope") + 1]
    resource = resource[:-len("/.default")] if resource.endswith("/.default") else resource
    aud = "{audience}" or resource
    b64 = lambda d: base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()
    token = b64({{"alg": "none"}}) + "." + b64({{"aud": aud, "exp": int(time.time()) + 3600, "oid": "tester"}}) + ".c2ln"
    print(json.dumps({{"accessToken": token, "expires_on": int(time.time()) + 3600, "tokenType": "Bearer"}}))
''')


@pytest.fixture
def entra(emulator_factory, collections_root, tmp_path):
    emu = emulator_factory("--entra-test-mode")

    def runner(audience: str = ""):
        bindir = tmp_path / f"bin{audience.replace('/', '_').replace(':', '_')}"
        bindir.mkdir(exist_ok=True)
        az = bindir / "az"
        az.write_text(FAKE_AZ.format(python=sys.executable, audience=audience))
        az.chmod(0o755)
        env = env_without_proxies()
        env.update(emu.ansible_env())
        env.update({"IOTHUB_CONNECTION_STRING": "", "IOTCENTRAL_API_TOKEN": "",
                    "PATH": f"{bindir}:{os.environ['PATH']}", "AZURE_TOKEN_CREDENTIALS": "AzureCliCredential"})
        return AnsibleRunner(collections_root, tmp_path / f"run{audience[:8].replace('/', '_')}", env, emulator=emu)
    return emu, runner


def test_iothub_and_central_with_entra_id(entra):
    emu, runner = entra
    r = runner().run(play(task("hub", "iothub_device", device_id="entra-dev", auth_mode="entra"),
                          task("info", "iothub_device_info", device_id="entra-dev"),
                          task("central", "iotcentral_device", device_id="entra-dev", auth_mode="entra")))
    assert r.rc == 0, r.output[-3000:]
    assert r.task("hub").changed and r.task("info").result["exists"] and r.task("central").changed


def test_entra_token_for_the_wrong_audience_is_a_clear_401(entra):
    emu, runner = entra
    r = runner("https://management.azure.com").run(play(task("hub", "iothub_device", device_id="x", auth_mode="entra")))
    msg = r.task("hub").result["msg"]
    assert r.rc != 0 and "HTTP 401" in msg and "audience" in msg


def test_entra_without_any_credential_is_a_clear_error(entra, tmp_path):
    emu, runner = entra
    run = runner()
    run.base_env["PATH"] = "/usr/bin:/bin"  # no az at all
    r = run.run(play(task("hub", "iothub_device", device_id="x", auth_mode="entra")))
    msg = r.task("hub").result["msg"]
    assert r.rc != 0 and "Entra ID: could not get a token for https://iothubs.azure.net/.default" in msg


def test_sas_path_never_imports_azure_identity():
    code = textwrap.dedent("""
        import sys
        from ansible_collections.fleet.azure_iot.plugins.modules import iothub_device, iotcentral_device
        from ansible_collections.fleet.azure_iot.plugins.module_utils._iothub import build_hub_client
        params = {"connection_string": "HostName=h:1;SharedAccessKeyName=p;SharedAccessKey=a2V5a2V5a2V5a2V5a2V5a2V5",
                  "hostname": None, "auth_mode": None, "ca_path": None, "validate_certs": True,
                  "timeout": 5, "max_retries": 1, "retry_budget_seconds": 1, "retry_backoff_seconds": None}
        build_hub_client(params)
        print(json.dumps(sorted(m for m in sys.modules if m.startswith("azure"))))
    """).replace("import sys", "import json, sys")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout
    assert json.loads(out) == []


def test_awx_empty_credential_fields_are_unset(entra, emulator_factory):
    """AWX injects a credential's unset fields as empty strings (#29 item 2): AZURE_CLIENT_ID="" and friends are
    unset, so the chain reaches a credential that works (here the Azure CLI; a managed identity on AWX)."""
    emu, runner = entra
    r = runner()
    r.base_env = {k: v for k, v in r.base_env.items() if k != "AZURE_TOKEN_CREDENTIALS"}  # the whole default chain
    r.base_env.update({"AZURE_CLIENT_ID": "", "AZURE_TENANT_ID": "", "AZURE_CLIENT_SECRET": "", "AZURE_SECRET": "",
                       "AZURE_TENANT": "", "AZURE_SUBSCRIPTION_ID": "", "IOTHUB_CONNECTION_STRING": ""})
    res = r.run(play(task("hub", "iothub_device", device_id="awx-dev")))  # no auth_mode: hostname means Entra
    assert res.rc == 0 and res.task("hub").changed, res.output[-3000:]
    res = r.run(play(task("hub", "iothub_device", device_id="awx-dev")), env={"IOTHUB_HOSTNAME": ""})
    msg = res.task("hub").result["msg"]
    assert res.rc != 0 and "No IoT Hub connection" in msg and "IOTHUB_CONNECTION_STRING and IOTHUB_HOSTNAME are set but empty" in msg


def test_dps_with_entra_id(entra):
    """The DPS data plane's scope (https://azure-devices-provisioning.net/.default) and dps_hostname."""
    emu, runner = entra
    r = runner().run(play(task("enroll", "dps_enrollment", registration_id="entra-enr", attestation="symmetric_key",
                               auth_mode="entra"),
                          task("info", "dps_enrollment_info", registration_id="entra-enr")),
                     env={"DPS_CONNECTION_STRING": ""})
    assert r.rc == 0, r.output[-3000:]
    assert r.task("enroll").changed and len(r.task("info").result["enrollments"]) == 1
    hub_audience = runner("https://iothubs.azure.net").run(
        play(task("enroll", "dps_enrollment", registration_id="entra-2", attestation="symmetric_key",
                  auth_mode="entra")), env={"DPS_CONNECTION_STRING": ""})
    assert hub_audience.rc != 0 and "401" in hub_audience.task("enroll").result["msg"]
