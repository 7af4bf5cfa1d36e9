#!/usr/bin/env python3
"""`make demo`: start the emulator, run the collection's main job against it, show the result, stop."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from support.ansible import install_collection  # noqa: E402
from support.emulator import EmulatorProcess, env_without_proxies  # noqa: E402
from support.hub import HubClient  # noqa: E402

DEMO = REPO / ".demo"


def banner(text: str) -> None:
    print(f"\n=== {text} " + "=" * max(0, 70 - len(text)), flush=True)


def main() -> int:
    shutil.rmtree(DEMO, ignore_errors=True)
    emu = EmulatorProcess(DEMO / "emulator").start()
    try:
        banner(f"Emulator listening on {emu.url}")
        print(f"env file: {emu.data_dir / 'emulator.env'}")
        banner("Smoke check: create, read and query a device over HTTPS with a SAS token")
        hub = HubClient(emu.connection_string, emu.ca_path)
        created = hub.put_device("demo-device", {"deviceId": "demo-device"})
        print(f"PUT /devices/demo-device -> {created.status_code}, etag {created.json()['etag']}")
        again = hub.put_device("demo-device", {"deviceId": "demo-device"})
        print(f"PUT again without If-Match -> {again.status_code} {again.headers.get('iothub-errorcode')}")
        rows = hub.query("SELECT deviceId, status FROM devices").json()
        print(f"query -> {rows}")
        print(f"stats -> {emu.stats()}")
        hub.close()
        banner("Point a playbook at it")
        print(f"set -a; . {emu.data_dir / 'emulator.env'}; set +a")
        print("ansible-playbook your-playbook.yml   # modules read IOTHUB_CONNECTION_STRING and IOTHUB_CA_PATH")
        return 0
    finally:
        emu.stop()


if __name__ == "__main__":
    sys.exit(main())
