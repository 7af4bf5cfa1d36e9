#!/usr/bin/env python3
"""`make bench`: the collection's speed on the emulator (20 ms per request, query pages of 100), reported in
docs/benchmarks.md, never asserted.

1. iothub_device_bulk through queries and bulk calls: first apply, no-op re-run, 1 % drift, at BENCH_SIZES.
2. At BENCH_JOBS_N (100,000): the same three runs through import/export jobs on Azurite, beside the query/bulk
   path, with the module process's peak memory.
3. A throttled first apply: BENCH_THROTTLED_N (3,000) devices on an S1 x 10 hub (1,000 registry operations per
   minute), with hub_sku/hub_units, against the quota floor.
4. The per-task overhead: a loop of 20 iothub_device no-op tasks over a loop of 20 ansible.builtin.stat tasks,
   median of 5 pairs.
5. A loop of iothub_device over BENCH_LOOP_N devices, extrapolated (what a bulk no-op saves).

Environment: BENCH_SIZES ("1000,10000"), BENCH_JOBS_N (100000; 0 skips), BENCH_MILLION (set to 1 to add
N = 1,000,000 through jobs), BENCH_THROTTLED_N (3000), BENCH_LOOP_N (100), BENCH_LATENCY_MS (20).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from support.ansible import install_collection  # noqa: E402
from support.emulator import AzuriteProcess, EmulatorProcess, env_without_proxies  # noqa: E402
from support.hub import HubClient  # noqa: E402

WORK = REPO / ".bench"
WRAPPER = WORK / "python-peak"  # runs the module's Python and records its peak memory
OUT = REPO / "docs" / "benchmarks.md"
COUNTERS = ("requests", "registry_reads", "registry_writes", "bulk_calls", "query_pages", "write_requests",
            "jobs_created", "throttled")
PEAK = REPO / ".bench" / "peak-rss.txt"

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
        storage_container_uri: "{{ bench_container | default(omit) }}"
        hub_sku: "{{ bench_sku | default(omit) }}"
        hub_units: "{{ bench_units | default(omit) }}"
        max_concurrency: "{{ bench_concurrency | default(omit) }}"
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


def run(collections: Path, emu: EmulatorProcess, play: str, extra: dict, name: str,
        peak: bool = True) -> tuple[float, dict, dict]:
    """Run PLAY; PEAK=False runs modules on the plain interpreter (the peak-memory wrapper starts a second Python
    per task, which would blur per-task timings)."""
    d = WORK / name
    d.mkdir(parents=True, exist_ok=True)
    (d / "play.yml").write_text(play)
    xv = d / "vars.json"
    out = d / "result.json"
    xv.write_text(json.dumps({**extra, "bench_out": str(out)}))
    env = env_without_proxies()
    env.update(emu.ansible_env())
    env.update({"ANSIBLE_COLLECTIONS_PATH": str(collections), "ANSIBLE_PYTHON_INTERPRETER": str(WRAPPER if peak else sys.executable),
                "ANSIBLE_LOCALHOST_WARNING": "0", "ANSIBLE_INVENTORY_UNPARSED_WARNING": "0",
                "BENCH_PEAK_FILE": str(PEAK)})
    PEAK.unlink(missing_ok=True)
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
    peaks = [float(x) for x in PEAK.read_text().split()] if PEAK.exists() else [0.0]
    result["_peak_mb"] = max(peaks)
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


WRAPPER_TEXT = f"""#!{sys.executable}
# bench helper: run the module's Python as a child and append its peak resident memory (MB) to $BENCH_PEAK_FILE
import os, resource, subprocess, sys
rc = subprocess.call([{sys.executable!r}] + sys.argv[1:])
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
if os.environ.get("BENCH_PEAK_FILE"):
    with open(os.environ["BENCH_PEAK_FILE"], "a") as fh:
        fh.write(f"{{peak:.1f}}\\n")
sys.exit(rc)
"""

HEADER = "| run | wall s | bulk calls | query pages | jobs | registry ops | devices written | peak MB | notes |"


def fleet(n: int) -> list[dict]:
    return [{"device_id": f"sensor-{i:07d}", "status_reason": "bench"} for i in range(n)]


def row(label: str, wall: float, d: dict, res: dict, note: str = "") -> str:
    return (f"| {label} | {wall:.1f} | {d['bulk_calls']} | {d['query_pages']} | {d['jobs_created']} | "
            f"{d['registry_reads'] + d['registry_writes']} | {d['registry_writes']} | {res.get('_peak_mb', 0):.0f} | "
            f"{note} |")


def three_runs(collections, emu, n: int, label: str, extra: dict, lines: list) -> dict:
    devices = fleet(n)
    vars_ = {"bench_devices": devices, **extra}
    out = {}
    wall, d, res = run(collections, emu, BULK_PLAY, vars_, f"{label}-{n}-first")
    lines.append(row(f"{label}: first apply", wall, d, res))
    out["first"] = wall
    wall, d, res = run(collections, emu, BULK_PLAY, vars_, f"{label}-{n}-noop")
    lines.append(row(f"{label}: no-op re-run", wall, d, res, f"{d['registry_writes']} writes"))
    out.update(noop=wall, noop_pages=d["query_pages"], noop_jobs=d["jobs_created"], noop_peak=res.get("_peak_mb"))
    changed = max(1, n // 100)
    drift(emu, [x["device_id"] for x in devices[:changed]])
    wall, d, res = run(collections, emu, BULK_PLAY, vars_, f"{label}-{n}-drift")
    lines.append(row(f"{label}: 1 % drift ({changed:,} devices)", wall, d, res,
                     f"{res.get('requests', {}).get('gets', '?')} GETs"))
    out.update(drift=wall, drift_calls=d["bulk_calls"], peak=res.get("_peak_mb"))
    return out


TASK_PLAY = """
- name: bench per-task overhead
  hosts: localhost
  gather_facts: false
  tasks:
    - name: the task
      {task}
      loop: "{{{{ range(20) | list }}}}"
"""


def per_task_ratio(collections, emu, latency: str) -> tuple:
    hub = HubClient(emu.connection_string, emu.ca_path)
    hub.put_device("overhead", {"deviceId": "overhead"})
    hub.close()
    stat = TASK_PLAY.format(task='ansible.builtin.stat: {path: /etc/hostname}')
    dev = TASK_PLAY.format(task='fleet.azure_iot.iothub_device: {device_id: overhead}')
    ratios, stats, devs = [], [], []
    for i in range(5):
        ws, _, _ = run(collections, emu, stat, {}, f"stat-{i}", peak=False)
        wd, _, _ = run(collections, emu, dev, {}, f"device-{i}", peak=False)
        stats.append(ws)
        devs.append(wd)
        ratios.append(wd / ws)
    return statistics.median(ratios), statistics.median(stats), statistics.median(devs)


def main() -> int:
    sizes = [int(x) for x in os.environ.get("BENCH_SIZES", "1000,10000").split(",") if x]
    jobs_n = int(os.environ.get("BENCH_JOBS_N", "100000"))
    throttled_n = int(os.environ.get("BENCH_THROTTLED_N", "3000"))
    loop_n = int(os.environ.get("BENCH_LOOP_N", "100"))
    latency = os.environ.get("BENCH_LATENCY_MS", "20")
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    WRAPPER.write_text(WRAPPER_TEXT)
    WRAPPER.chmod(0o755)
    collections = install_collection(WORK / "collections")
    import ansible
    lines = [
        "# Benchmarks", "",
        f"`make bench` on {dt.date.today().isoformat()}: {platform.python_implementation()} "
        f"{platform.python_version()}, ansible-core {ansible.__version__}, {os.cpu_count()} cores "
        f"({platform.machine()}), emulator latency {latency} ms per request, query pages of 100 (the emulator's "
        "default, the documented maximum). Figures are reported, never asserted in CI.", "",
        "Registry operations = GETs + devices written (each device of a bulk call counts once, as IoT Hub's "
        "throttle counts them). Query pages count against a separate quota (20/min/unit on S1). Peak MB is the "
        "module process's peak resident memory.", "",
    ]
    summary: dict = {}
    for n in sizes:
        emu = EmulatorProcess(WORK / f"emu-{n}", "--latency-ms", latency).start()
        try:
            lines += [f"## N = {n:,}: queries and bulk calls", "", HEADER, "|---|---|---|---|---|---|---|---|---|"]
            summary[n] = three_runs(collections, emu, n, "iothub_device_bulk", {}, lines)
        finally:
            emu.stop()
        lines.append("")

    job_sizes = ([jobs_n] if jobs_n else []) + ([1_000_000] if os.environ.get("BENCH_MILLION") else [])
    if job_sizes:
        azurite = AzuriteProcess(WORK / "azurite").start()
        try:
            for n in job_sizes:
                title = ("import/export jobs beside queries and bulk calls" if n <= 100_000
                         else "import/export jobs (the query path is not run at this size)")
                lines += [f"## N = {n:,}: {title}", "", HEADER, "|---|---|---|---|---|---|---|---|---|"]
                emu = EmulatorProcess(WORK / f"emu-jobs-{n}", "--latency-ms", latency).start()
                try:
                    uri = azurite.container_uri(f"bench{n}")
                    summary[f"jobs-{n}"] = three_runs(collections, emu, n, "jobs", {"bench_container": uri}, lines)
                finally:
                    emu.stop()
                if n <= 100_000:
                    emu = EmulatorProcess(WORK / f"emu-query-{n}", "--latency-ms", latency).start()
                    try:
                        summary[f"query-{n}"] = three_runs(collections, emu, n, "queries and bulk calls", {}, lines)
                    finally:
                        emu.stop()
                lines.append("")
        finally:
            azurite.stop()

    if throttled_n:
        emu = EmulatorProcess(WORK / "emu-throttled", "--latency-ms", latency, "--throttle", "S1:10").start()
        try:
            floor = throttled_n / 1000 * 60
            lines += [f"## A throttled first apply: {throttled_n:,} devices on S1 x 10 (1,000 registry operations per "
                      "minute)", "", "| run | wall s | quota floor s | wall / floor | 429 answers | waited for the quota s |",
                      "|---|---|---|---|---|---|"]
            wall, d, res = run(collections, emu, BULK_PLAY, {"bench_devices": fleet(throttled_n), "bench_sku": "S1",
                                                            "bench_units": 10}, "throttled")
            pacing = res.get("pacing", {})
            lines.append(f"| hub_sku S1, hub_units 10 | {wall:.1f} | {floor:.0f} | {wall / floor:.2f} | {d['throttled']} | "
                         f"{pacing.get('waited_seconds', '?')} |")
            summary["throttled"] = {"wall": wall, "floor": floor, "throttled": d["throttled"], "pacing": pacing}
            emu.reset()
            wall, d, res = run(collections, emu, BULK_PLAY, {"bench_devices": fleet(throttled_n)}, "throttled-learn")
            pacing = res.get("pacing", {})
            lines.append(f"| quota learnt from the first 429 | {wall:.1f} | {floor:.0f} | {wall / floor:.2f} | "
                         f"{d['throttled']} | {pacing.get('waited_seconds', '?')} |")
        finally:
            emu.stop()
        lines.append("")

    emu = EmulatorProcess(WORK / "emu-task", "--latency-ms", latency).start()
    try:
        ratio, stat_wall, dev_wall = per_task_ratio(collections, emu, latency)
        lines += ["## Per-task overhead", "",
                  "A loop of 20 `iothub_device` no-op tasks against a loop of 20 `ansible.builtin.stat` tasks, both on "
                  "localhost, median of 5 pairs.", "", "| stat loop s | iothub_device loop s | ratio |", "|---|---|---|",
                  f"| {stat_wall:.2f} | {dev_wall:.2f} | {ratio:.2f} |", ""]
        summary["per_task_ratio"] = ratio
        if loop_n:
            devices = fleet(loop_n)
            wall_first, _d, _ = run(collections, emu, LOOP_PLAY, {"bench_devices": devices}, "loop-first", peak=False)
            wall_noop, d_noop, _ = run(collections, emu, LOOP_PLAY, {"bench_devices": devices}, "loop-noop", peak=False)
            per = wall_noop / loop_n
            ops = d_noop["registry_reads"] / loop_n
            lines += [f"## A loop of iothub_device over {loop_n:,} devices (for comparison)", "",
                      f"First apply {wall_first:.1f} s, no-op re-run {wall_noop:.1f} s ({per:.2f} s and {ops:.0f} "
                      "registry read per device). Extrapolated no-op re-run:", "",
                      "| N | wall s | registry ops | S1 minutes of registry quota (100 ops/min/unit) |",
                      "|---|---|---|---|"]
            for n in sizes + job_sizes:
                lines.append(f"| {n:,} | {per * n:.0f} | {ops * n:.0f} | {ops * n / 100:.0f} |")
            lines += ["", "A bulk no-op re-run costs query pages (or one export job) and no registry operation; the "
                      "loop pays one GET per device every night even when nothing changed.", ""]
    finally:
        emu.stop()
    OUT.write_text("\n".join(lines))
    (WORK / "summary.json").write_text(json.dumps(summary, indent=2))
    print("\n".join(lines))
    print(f"\nwritten to {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
