"""Microsoft's Node device SDK for DPS (npm: azure-iot-provisioning-device, -http, azure-iot-security-symmetric-key,
pinned below), installed with npm into ``.node-sdks/`` of the repository on first use, and a device registering
through it (``register``)."""

from __future__ import annotations

import fcntl
import json
import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PREFIX = REPO / ".node-sdks"
PACKAGES = ("azure-iot-provisioning-device@1.9.1", "azure-iot-provisioning-device-http@1.9.1",
            "azure-iot-security-symmetric-key@1.8.2", "azure-iot-http-base@1.12.1")
SCRIPT = Path(__file__).resolve().parent / "dps_register.js"


def install() -> Path:
    marker = PREFIX / (".installed-" + "-".join(p.replace("@", "_") for p in PACKAGES))
    if marker.exists():
        return PREFIX
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError("npm is needed to install Microsoft's Node device SDK (Node.js 18 or later)")
    PREFIX.mkdir(parents=True, exist_ok=True)
    with open(PREFIX / ".lock", "w") as lock:  # parallel test workers install once
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not marker.exists():
            subprocess.run([npm, "install", "--prefix", str(PREFIX), *PACKAGES, "--no-audit", "--no-fund",
                            "--loglevel=error"], check=True, stdin=subprocess.DEVNULL)
            marker.touch()
    return PREFIX


def register(endpoint: str, id_scope: str, registration_id: str, key: str, ca_path: str,
             payload: dict | None = None) -> dict:
    """Register like a device; the SDK's result (``assignedHub``, ``deviceId``, ...) or {"error": ...}."""
    prefix = install()
    args = ["node", str(SCRIPT), endpoint, id_scope, registration_id, key, ca_path]
    if payload is not None:
        args.append(json.dumps(payload))
    env = {"NODE_PATH": str(prefix / "node_modules"), "PATH": "/usr/local/bin:/usr/bin:/bin"}
    p = subprocess.run(args, capture_output=True, text=True, timeout=120, env=env, stdin=subprocess.DEVNULL)
    lines = [line for line in p.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError(f"the Node device SDK printed no result (exit {p.returncode}): {p.stderr[-2000:]}")
    return json.loads(lines[-1])
