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


def run_playbook(collections: Path, emu: EmulatorProcess, playbook: Path) -> subprocess.CompletedProcess:
    env = env_without_proxies()
    env.update(emu.ansible_env())
    env.update({"ANSIBLE_COLLECTIONS_PATH": str(collections), "ANSIBLE_NOCOLOR": "1",
                "ANSIBLE_LOCALHOST_WARNING": "0", "ANSIBLE_INVENTORY_UNPARSED_WARNING": "0",
                "ANSIBLE_PYTHON_INTERPRETER": sys.executable})
    cmd = [str(Path(sys.executable).parent / "ansible-playbook"), "-i", "localhost,", "-c", "local", str(playbook)]
    return subprocess.run(cmd, env=env, text=True, stdin=subprocess.DEVNULL)


def main() -> int:
    shutil.rmtree(DEMO, ignore_errors=True)
    emu = EmulatorProcess(DEMO / "emulator").start()
    try:
        banner(f"Emulator listening on {emu.url}")
        print(f"env file: {emu.data_dir / 'emulator.env'}  (set -a; . that file; set +a  to use it yourself)")
        collections = install_collection(DEMO / "collections")
        playbook = REPO / "playbooks" / "demo_hierarchy.yml"
        banner("Run 1: provision a two-layer IoT Edge hierarchy (role fleet.azure_iot.edge_hierarchy)")
        first = run_playbook(collections, emu, playbook)
        if first.returncode:
            return first.returncode
        after_first = emu.stats()
        banner("Run 2: the same playbook again (nothing to change: changed=0)")
        second = run_playbook(collections, emu, playbook)
        if second.returncode:
            return second.returncode
        after_second = emu.stats()
        writes = after_second["write_requests"] - after_first["write_requests"]
        banner("Emulator counters")
        print(f"run 1: {after_first['registry_writes']} registry writes; run 2: {writes} writes")
        return 0 if writes == 0 else 1
    finally:
        emu.stop()


if __name__ == "__main__":
    sys.exit(main())
