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

    def race(self, device_id: str, patch: dict, times: int = 1) -> dict:
        """Arm another writer: right after the next GET of DEVICE_ID, PATCH-like replace it with PATCH."""
        return self._control("POST", "race", json={"device_id": device_id, "patch": patch, "times": times})

    def refuse(self, device_id: str, code: str = "ArgumentInvalid", status: int = 400, times: int = 1) -> dict:
        """Make the next TIMES writes of DEVICE_ID fail with STATUS/CODE (a rule the client could not know)."""
        return self._control("POST", "refuse", json={"device_id": device_id, "status": status, "code": code,
                                                     "times": times})

    def ansible_env(self) -> dict[str, str]:
        """What a pipeline would export after sourcing emulator.env."""
        return {k: v for k, v in self.env.items() if k.startswith(("IOTHUB_", "IOTCENTRAL_"))}


def env_without_proxies() -> dict[str, str]:
    env = dict(os.environ)
    for k in list(env):
        if k.lower() in ("http_proxy", "https_proxy", "all_proxy"):
            env.pop(k)
    env["NO_PROXY"] = "127.0.0.1,localhost"
    return env
