"""Shared fixtures: a real emulator process over HTTPS, and ansible-playbook against it."""

from __future__ import annotations

import hashlib
import sys
import tempfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

# Make ``ansible_collections.fleet.azure_iot`` importable for plain pytest runs (ansible-test does this itself):
# a link tree in the temporary directory points back at the repository.
REPO = Path(__file__).resolve().parents[1]
if not (REPO.parent.name == "fleet" and REPO.parents[1].name == "ansible_collections"):
    _root = Path(tempfile.gettempdir()) / f"fleet-azure-iot-{hashlib.sha256(str(REPO).encode()).hexdigest()[:12]}"
    _link = _root / "ansible_collections" / "fleet" / "azure_iot"
    if not _link.is_symlink():
        _link.parent.mkdir(parents=True, exist_ok=True)
        _link.symlink_to(REPO, target_is_directory=True)
    sys.path.insert(0, str(_root))

from support.ansible import AnsibleRunner, install_collection  # noqa: E402
from support.emulator import AzuriteProcess, EmulatorProcess, env_without_proxies  # noqa: E402
from support.hub import HubClient  # noqa: E402


@pytest.fixture(scope="session")
def emulator_session(tmp_path_factory):
    emu = EmulatorProcess(tmp_path_factory.mktemp("emulator")).start()
    yield emu
    emu.stop()


@pytest.fixture
def emulator(emulator_session):
    """The shared emulator, emptied and with default knobs, for one test."""
    emulator_session.configure(latency_ms=0, fault_rate=0, query_lag_s=0, throttle=None, drop_writes=0)
    emulator_session.reset()
    return emulator_session


@pytest.fixture
def emulator_factory(tmp_path):
    """Start dedicated emulators with their own options (faults, lag, state file, host names)."""
    started = []

    def start(*args: str, port: int = 0, name: str = "emu") -> EmulatorProcess:
        emu = EmulatorProcess(tmp_path / f"{name}{len(started)}", *args, port=port).start()
        started.append(emu)
        return emu

    yield start
    for emu in started:
        emu.stop()


@pytest.fixture
def hub(emulator):
    client = HubClient(emulator.connection_string, emulator.ca_path)
    yield client
    client.close()


@pytest.fixture(scope="session")
def collections_root(tmp_path_factory):
    return install_collection(tmp_path_factory.mktemp("collections"))


@pytest.fixture
def ansible(collections_root, tmp_path, emulator):
    env = env_without_proxies()
    env.update(emulator.ansible_env())
    return AnsibleRunner(collections_root, tmp_path, env, emulator=emulator)


@pytest.fixture(scope="session")
def azurite(tmp_path_factory):
    """Azure Blob Storage for the import/export jobs: Azurite through scripts/azurite (installed on first use)."""
    proc = AzuriteProcess(tmp_path_factory.mktemp("azurite")).start()
    yield proc
    proc.stop()
