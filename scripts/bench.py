#!/usr/bin/env python3
"""`make bench`: iothub_device_bulk against a loop of iothub_device, on the emulator at 20 ms latency.

Reports (does not assert) wall time, bulk calls, query pages and registry operations for: first apply, no-op
re-run and 1 % drift, for each fleet size; and a loop of iothub_device over the same fleet (run at
BENCH_LOOP_N devices and extrapolated).  Writes docs/benchmarks.md.

Environment: BENCH_SIZES (default "1000,10000"), BENCH_LOOP_N (default 1000), BENCH_LATENCY_MS (default 20).
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from support.ansible import install_collection  # noqa: E402
from support.emulator import EmulatorProcess, env_without_proxies  # noqa: E402
from support.hub import HubClient  # noqa: E402

WORK = REPO / ".bench"
OUT = REPO / "docs" / "benchmarks.md"
COUNTERS = ("requests", "registry_reads", "registry_writes", "bulk_calls", "query_pages", "write_requests")

BULK_PLAY = """
- name: bench bulk
  hosts: localhost
  gather_facts: false
  tasks:
    - name: converge the fleet
      fleet.azure_iot.iothub_device_bulk:
        devices: "{{ bench_devices }}"
        defaults:
          tags:
            fleet: bench
      register: bench_result
    - name: report
      ansible.builtin.copy:
        content: "{{ bench_result | to_json }}"
        dest: "{{ bench_out }}"
        mode: "0600"
"""

LOOP_PLAY = """
- name: bench loop
  hosts: localhost
  gather_facts: false
  tasks:
    - name: one task per device
      fleet.azure_iot.iothub_device:
        device_id: "{{ item.device_id }}"
      loop: "{{ bench_devices }}"
      loop_control:
        label: "{{ item.device_id }}"
"""


def run(collections: Path, emu: EmulatorProcess, play: str, extra: dict, name: str) -> tuple[float, dict, dict]:
    d = WORK / name
    d.mkdir(parents=True, exist_ok=True)
    (d / "play.yml").write_text(play)
    xv = d / "vars.json"
    out = d / "result.json"
    xv.write_text(json.dumps({**extra, "bench_out": str(out)}))
    env = env_without_proxies()
    env.update(emu.ansible_env())
    env.update({"ANSIBLE_COLLECTIONS_PATH": str(collections), "ANSIBLE_PYTHON_INTERPRETER": sys.executable,
                "ANSIBLE_LOCALHOST_WARNING": "0", "ANSIBLE_INVENTORY_UNPARSED_WARNING": "0"})
    before = emu.stats()
    t0 = time.monotonic()
    p = subprocess.run([str(Path(sys.executable).parent / "ansible-playbook"), "-i", "localhost,", "-c", "local",
                        str(d / "play.yml"), "-e", f"@{xv}"], env=env, capture_output=True, text=True)
    wall = time.monotonic() - t0
    if p.returncode:
        print(p.stdout[-3000:], p.stderr[-3000:])
        raise SystemExit(f"{name} failed")
    after = emu.stats()
    delta = {k: after[k] - before[k] for k in COUNTERS}
    result = json.loads(out.read_text()) if out.exists() else {}
    return wall, delta, result


def drift(emu: EmulatorProcess, ids: list[str]) -> None:
    """Someone changed 1 % of the fleet behind our back (statusReason), through the bulk API."""
    hub = HubClient(emu.connection_string, emu.ca_path)
    for i in range(0, len(ids), 100):
        chunk = ids[i:i + 100]
        entries = []
        for did in chunk:
            dev = hub.get_device(did).json()
            entries.append({"id": did, "importMode": "update", "status": dev["status"], "statusReason": "drifted",
                            "authentication": dev["authentication"], "capabilities": dev["capabilities"]})
        hub.bulk(entries).raise_for_status()
    hub.close()


def fleet(n: int) -> list[dict]:
    return [{"device_id": f"sensor-{i:05d}", "status_reason": "bench"} for i in range(n)]


def row(label: str, wall: float, d: dict, note: str = "") -> str:
    return (f"| {label} | {wall:.1f} | {d['bulk_calls']} | {d['query_pages']} | "
            f"{d['registry_reads'] + d['registry_writes']} | {d['registry_writes']} | {note} |")


def main() -> int:
    sizes = [int(x) for x in os.environ.get("BENCH_SIZES", "1000,10000").split(",")]
    loop_n = int(os.environ.get("BENCH_LOOP_N", "1000"))
    latency = os.environ.get("BENCH_LATENCY_MS", "20")
    shutil.rmtree(WORK, ignore_errors=True)
    collections = install_collection(WORK / "collections")
    lines = [
        "# Benchmarks", "",
        f"`make bench` on {dt.date.today().isoformat()}, {platform.python_implementation()} "
        f"{platform.python_version()}, {os.cpu_count()} cores, emulator latency {latency} ms per request. "
        "Figures are reported, never asserted in CI.", "",
        "Registry operations = GETs + devices written (each device of a bulk call counts once, as IoT Hub's "
        "throttle counts them). Query pages count against a separate quota (20/min/unit on S1).", "",
    ]
    summary = {}
    for n in sizes:
        emu = EmulatorProcess(WORK / f"emu-{n}", "--latency-ms", latency).start()
        try:
            devices = fleet(n)
            lines += [f"## N = {n:,}", "", "| run | wall s | bulk calls | query pages | registry ops | devices written | notes |",
                      "|---|---|---|---|---|---|---|"]
            wall, d, _ = run(collections, emu, BULK_PLAY, {"bench_devices": devices}, f"bulk-{n}-first")
            lines.append(row("iothub_device_bulk: first apply", wall, d))
            wall, d, _ = run(collections, emu, BULK_PLAY, {"bench_devices": devices}, f"bulk-{n}-noop")
            summary[n] = {"noop_wall": wall, "noop_writes": d["registry_writes"], "noop_pages": d["query_pages"]}
            target = math.ceil(n / 1000) + 1
            lines.append(row("iothub_device_bulk: no-op re-run", wall, d,
                             f"target: 0 writes, <= {target} query pages, < 10 s at 10,000"))
            changed = max(1, n // 100)
            drift(emu, [x["device_id"] for x in devices[:changed]])
            wall, d, res = run(collections, emu, BULK_PLAY, {"bench_devices": devices}, f"bulk-{n}-drift")
            lines.append(row(f"iothub_device_bulk: 1 % drift ({changed} devices)", wall, d,
                             f"target: {math.ceil(changed / 100)} bulk calls; {res.get('requests', {}).get('gets', '?')} "
                             "GETs read the drifted SAS devices' keys before rewriting them"))
            summary[n].update(drift_calls=d["bulk_calls"])
        finally:
            emu.stop()
        lines.append("")

    emu = EmulatorProcess(WORK / "emu-loop", "--latency-ms", latency).start()
    try:
        devices = fleet(loop_n)
        lines += [f"## A loop of iothub_device over {loop_n:,} devices (for comparison)", "",
                  "| run | wall s | bulk calls | query pages | registry ops | devices written | notes |",
                  "|---|---|---|---|---|---|---|"]
        wall_first, d, _ = run(collections, emu, LOOP_PLAY, {"bench_devices": devices}, "loop-first")
        lines.append(row("loop: first apply", wall_first, d))
        wall_noop, d_noop, _ = run(collections, emu, LOOP_PLAY, {"bench_devices": devices}, "loop-noop")
        lines.append(row("loop: no-op re-run", wall_noop, d_noop))
        per = wall_noop / loop_n
        ops = d_noop["registry_reads"] / loop_n
        lines += ["", "Extrapolated no-op re-run of the loop (linear in N):", "",
                  "| N | wall s | registry ops | S1 minutes of registry quota (100 ops/min/unit) |", "|---|---|---|---|"]
        for n in sizes:
            lines.append(f"| {n:,} | {per * n:.0f} | {ops * n:.0f} | {ops * n / 100:.0f} |")
            if n in summary:
                summary[n]["loop_noop_wall_extrapolated"] = per * n
    finally:
        emu.stop()
    lines += ["", "Bulk no-op re-runs cost query pages only (no registry operations); the loop pays one GET per "
              "device every night even when nothing changed.", ""]
    OUT.write_text("\n".join(lines))
    (WORK / "summary.json").write_text(json.dumps(summary, indent=2))
    print("\n".join(lines))
    print(f"\nwritten to {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
