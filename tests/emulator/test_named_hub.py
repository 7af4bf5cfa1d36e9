"""The emulator standing in for a named hub (*.azure-devices.net) for tools that accept only a hub name."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
from support.hub import HubClient

NAME = "myhub.azure-devices.net"
HOSTS = Path("/etc/hosts")


def _can_bind(port: int) -> bool:
    try:
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False


@pytest.fixture
def hosts_entry():
    """Add '127.0.0.1 myhub.azure-devices.net' to /etc/hosts for the test (docs/emulator.md recipe)."""
    if os.geteuid() != 0 or not os.access(HOSTS, os.W_OK):
        pytest.skip("needs root to add a hosts entry for myhub.azure-devices.net")
    original = HOSTS.read_text()
    line = f"127.0.0.1 {NAME}  # fleet.azure_iot test\n"
    HOSTS.write_text(original + ("" if original.endswith("\n") else "\n") + line)
    try:
        yield
    finally:
        HOSTS.write_text(original)


def test_named_hub_env_and_certificate(emulator_factory):
    from cryptography import x509
    emu = emulator_factory("--hostname", f"{NAME},alt.example")
    assert emu.env["IOTHUB_CONNECTION_STRING_NAMED"].startswith(f"HostName={NAME}:{emu.port};")
    sans = x509.load_pem_x509_certificate((emu.data_dir / "server.pem").read_bytes()).extensions.get_extension_for_class(
        x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
    assert {NAME, "alt.example", "localhost"} <= set(sans)


def test_tokens_for_the_name_are_accepted_and_other_hosts_refused(emulator_factory):
    emu = emulator_factory("--hostname", NAME)
    key = emu.connection_string.split("SharedAccessKey=")[1]
    named = HubClient(emu.connection_string, emu.ca_path)
    # Sign for the name (as a client configured with the named connection string does), send to loopback.
    from support.hub import sas_token
    for host in (f"{NAME}:{emu.port}", f"{NAME.upper()}:{emu.port}"):
        assert named.request("GET", "/devices/x", auth=sas_token(host, "iothubowner", key)).status_code == 404
    other = named.request("GET", "/devices/x", auth=sas_token(f"otherhub.azure-devices.net:{emu.port}", "iothubowner", key))
    assert other.status_code == 401
    named.close()


def test_official_sdk_reaches_the_emulator_by_hub_name(emulator_factory, hosts_entry, monkeypatch):
    pytest.importorskip("azure.iot.hub")
    from azure.iot.hub import IoTHubRegistryManager
    port = 443 if _can_bind(443) else 0
    emu = emulator_factory("--hostname", NAME, port=port)
    cs = emu.env["IOTHUB_CONNECTION_STRING_NAMED"]
    if port == 443:
        assert cs.startswith(f"HostName={NAME};")  # no port: what tools that refuse ports need
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", emu.ca_path)
    monkeypatch.setenv("NO_PROXY", f"{NAME},127.0.0.1,localhost")
    manager = IoTHubRegistryManager.from_connection_string(cs)
    created = manager.create_device_with_sas("named-1", None, None, "enabled")
    assert created.device_id == "named-1" and manager.get_device("named-1").etag == created.etag
