"""Start the emulator as a real process, exactly as its start contract says, and talk to its control routes."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import ssl

import httpx


def parse_env_file(path: Path) -> dict[str, str]:
    env = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition("=")
            parsed = shlex.split(value)
            env[key] = parsed[0] if parsed else ""
    return env


class EmulatorProcess:
    def __init__(self, data_dir: Path, *args: str, port: int = 0):
        self.data_dir = Path(data_dir)
        self.args = list(args)
        self.port = port
        self.proc: subprocess.Popen | None = None
        self.env: dict[str, str] = {}
        self.log_path = self.data_dir / "emulator.log"

    # -------------------------------------------------------------- process
    def start(self, timeout: float = 60.0) -> "EmulatorProcess":
        self.data_dir.mkdir(parents=True, exist_ok=True)
        env_file = self.data_dir / "emulator.env"
        cmd = [sys.executable, "-m", "iot_emulator", "--host", "127.0.0.1", "--port", str(self.port),
               "--data-dir", str(self.data_dir), *self.args]
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        # Wait for the contract's readiness signal: the env file appears only once connections are accepted.
        while not env_file.exists():
            if self.proc.poll() is not None:
                raise RuntimeError(f"emulator exited with {self.proc.returncode}: {self.log_path.read_text()[-2000:]}")
            if time.monotonic() > deadline:
                self.proc.kill()
                raise RuntimeError("emulator did not write emulator.env in time")
            time.sleep(0.02)
        self.env = parse_env_file(env_file)
        self.port = int(self.env["IOT_EMULATOR_PORT"])
        return self

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def restart(self, *args: str) -> "EmulatorProcess":
        self.stop()
        if args:
            self.args = list(args)
        return self.start()

    # ------------------------------------------------------------ contract
    @property
    def url(self) -> str:
        return self.env["IOT_EMULATOR_URL"]

    @property
    def ca_path(self) -> str:
        return self.env["IOTHUB_CA_PATH"]

    @property
    def connection_string(self) -> str:
        return self.env["IOTHUB_CONNECTION_STRING"]

    @property
    def hostname(self) -> str:
        return self.env["IOTHUB_HOSTNAME"]

    def policy_connection_string(self, policy: str) -> str:
        """The connection string of one of the hub's shared access policies (from DIR/policies.json)."""
        import json as _json
        key = _json.loads((self.data_dir / "policies.json").read_text())[policy]
        return f"HostName={self.hostname};SharedAccessKeyName={policy};SharedAccessKey={key}"

    def _control(self, method: str, path: str, json=None) -> dict:
        with httpx.Client(verify=ssl.create_default_context(cafile=self.ca_path), timeout=30) as c:
            r = c.request(method, f"{self.url}/_emulator/{path}", json=json)
            r.raise_for_status()
            return r.json()

    def stats(self) -> dict:
        return self._control("GET", "stats")

    def secrets(self) -> dict:
        return self._control("GET", "secrets")

    def reset(self) -> None:
        self._control("POST", "reset")

    def configure(self, **settings) -> dict:
        return self._control("POST", "config", json=settings)

    def race(self, device_id: str, patch: dict, times: int = 1, target: str = "device", after: str | None = None) -> dict:
        """Arm another writer: right after the next GET of DEVICE_ID (or of its twin, target="twin"), replace it
        with PATCH applied (or PATCH its twin).  ``after``: the read that sets it off, when not the one of TARGET."""
        return self._control("POST", "race", json={"device_id": device_id, "patch": patch, "times": times,
                                                   "target": target, "after": after or target})

    def refuse(self, device_id: str, code: str = "ArgumentInvalid", status: int = 400, times: int = 1) -> dict:
        """Make the next TIMES writes of DEVICE_ID fail with STATUS/CODE (a rule the client could not know)."""
        return self._control("POST", "refuse", json={"device_id": device_id, "status": status, "code": code,
                                                     "times": times})

    def ansible_env(self) -> dict[str, str]:
        """What a pipeline would export after sourcing emulator.env."""
        return {k: v for k, v in self.env.items() if k.startswith(("IOTHUB_", "IOTCENTRAL_", "DPS_"))}


def env_without_proxies() -> dict[str, str]:
    env = dict(os.environ)
    for k in list(env):
        if k.lower() in ("http_proxy", "https_proxy", "all_proxy"):
            env.pop(k)
    env["NO_PROXY"] = "127.0.0.1,localhost"
    return env


class AzuriteProcess:
    """scripts/azurite as a real process (its start contract: DIR/azurite.env once it accepts connections)."""

    def __init__(self, location: Path):
        self.location = Path(location)
        self.proc: subprocess.Popen | None = None
        self.env: dict[str, str] = {}

    def start(self, timeout: float = 300.0) -> "AzuriteProcess":
        script = Path(__file__).resolve().parents[2] / "scripts" / "azurite"
        self.location.mkdir(parents=True, exist_ok=True)
        log = open(self.location / "azurite.log", "ab")
        self.proc = subprocess.Popen([sys.executable, str(script), "--port", "0", "--location", str(self.location)],
                                     stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        env_file = self.location / "azurite.env"
        deadline = time.monotonic() + timeout  # the first start installs Azurite with npm
        while not env_file.exists():
            if self.proc.poll() is not None:
                raise RuntimeError(f"azurite exited: {(self.location / 'azurite.log').read_text()[-2000:]}")
            if time.monotonic() > deadline:
                self.proc.kill()
                raise RuntimeError("azurite did not start in time")
            time.sleep(0.05)
        self.env = parse_env_file(env_file)
        return self

    def stop(self) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def container_uri(self, name: str, permissions: str = "rwdl") -> str:
        """Create a container and return its SAS URL with PERMISSIONS (as a user hands one to IoT Hub)."""
        import datetime as dt

        from azure.storage.blob import BlobServiceClient, ContainerSasPermissions, generate_container_sas
        url, account, key = self.env["AZURITE_BLOB_URL"], self.env["AZURITE_ACCOUNT"], self.env["AZURITE_KEY"]
        service = BlobServiceClient(url, credential={"account_name": account, "account_key": key})
        try:
            service.create_container(name)
        except Exception:  # already there
            pass
        sas = generate_container_sas(account, name, account_key=key,
                                     permission=ContainerSasPermissions(**{
                                         {"r": "read", "w": "write", "d": "delete", "l": "list"}[p]: True
                                         for p in permissions}),
                                     expiry=dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=2))
        return f"{url}/{name}?{sas}"

    def blobs(self, container_uri: str) -> list:
        """The names of the blobs in a container (by its SAS URL): what a task left behind."""
        from azure.storage.blob import ContainerClient
        return sorted(b.name for b in ContainerClient.from_container_url(container_uri).list_blobs())
