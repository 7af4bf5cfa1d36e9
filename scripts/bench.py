#!/usr/bin/env python3
"""`make bench`: the collection's speed on the emulator (20 ms per request, query pages of 100), reported in
docs/benchmarks.md, never asserted.

1. iothub_device_bulk through queries and bulk calls: first apply, no-op re-run, 1 % drift, at BENCH_SIZES.
2. At BENCH_JOBS_N (100,000): the same three runs through import/export jobs on Azurite, beside the query/bulk
   path, with the module process's peak memory.
3. Throttled first applies: BENCH_THROTTLED_N (3,000) devices on an S1 x 10 hub and a tenth of them on S1 x 2,
   with hub_sku/hub_units and with the quota learnt, against the quota floor.
6. At BENCH_FILE_N (100,000; and 1,000,000 with BENCH_MILLION): devices_file in JSON Lines and CSV beside the
   devices list (up to BENCH_LIST_MAX, 100,000), through jobs: where the time went (module phases, jobs, the
   services' CPU, ansible-playbook) and the peak memory of ansible-playbook, the module and the emulator.
4. The per-task overhead: a loop of 20 iothub_device no-op tasks over a loop of 20 ansible.builtin.stat tasks,
   median of 5 pairs.
5. A loop of iothub_device over BENCH_LOOP_N devices, extrapolated (what a bulk no-op saves).
7. Hubs in parallel: BENCH_HUBS (8) emulated hubs x BENCH_HUBS_N (20,000) devices from one sharded file,
   converged by playbooks/fleet_of_hubs.yml with forks 1, 2, 4, 8, beside one hub alone.

Environment: BENCH_SIZES ("1000,10000"), BENCH_JOBS_N (100000; 0 skips), BENCH_MILLION (set to 1 to add
N = 1,000,000 from a file), BENCH_MILLION_LIST (set to 1 to add a million-entry devices list through jobs: its
ansible-playbook needs about 5 GB), BENCH_THROTTLED_N (3000), BENCH_LOOP_N (100), BENCH_LATENCY_MS (20),
BENCH_FILE_N (100000; 0 skips), BENCH_LIST_MAX (100000), BENCH_OVERHEAD (1; 0 skips the per-task ratio),
BENCH_OUT (docs/benchmarks.md: where the report goes), BENCH_HUBS (8; 0 skips the hubs-in-parallel run),
BENCH_HUBS_N (20000 devices per hub), BENCH_HUBS_THROTTLE (none; e.g. S1:10 for every hub).
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
import threading
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

# The same play with the fleet read from a file by the module (never through Ansible's templating).
FILE_PLAY = BULK_PLAY.replace("bench bulk", "bench file").replace('devices: "{{ bench_devices }}"',
                                                                    'devices_file: "{{ bench_file }}"')

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


def _proc(pid: int) -> tuple[int, float, float, str]:
    """(parent pid, peak resident MB, CPU seconds, command line) of a live process, from /proc."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()
    hwm = 0.0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            hwm = int(line.split()[1]) / 1024
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    return int(fields[1]), hwm, cpu, cmd


def tree(root: int) -> dict[int, tuple]:
    """ROOT and its live descendants: {pid: (ppid, peak MB, CPU s, command line)}."""
    procs = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                procs[int(entry.name)] = _proc(int(entry.name))
            except (OSError, ValueError, IndexError):
                continue
    keep, todo = {}, [root]
    while todo:
        pid = todo.pop()
        if pid in procs:
            keep[pid] = procs[pid]
            todo += [p for p, info in procs.items() if info[0] == pid]
    return keep


def cpu_seconds(proc) -> float:
    """CPU seconds of a service's process tree so far (the emulator, Azurite's node)."""
    return sum(info[2] for info in tree(proc.pid).values()) if proc is not None and proc.poll() is None else 0.0


def peak_mb(proc) -> float:
    return max((info[1] for info in tree(proc.pid).values()), default=0.0) if proc is not None else 0.0


class PlaybookWatch:
    """Polls the peak resident memory of ansible-playbook and its forked workers, the module (run through
    WRAPPER, which records its own peak) excluded."""

    def __init__(self, pid: int):
        self.pid, self.peak = pid, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self):
        while not self._stop.wait(0.5):
            procs = tree(self.pid)
            module = {p for p, info in procs.items() if "python-peak" in info[3]}
            changed = True
            while changed:  # the module's own children too
                extra = {p for p, info in procs.items() if info[0] in module and p not in module}
                changed = bool(extra)
                module |= extra
            for p, info in procs.items():
                if p not in module:
                    self.peak = max(self.peak, info[1])

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return self.peak


def run(collections: Path, emu: EmulatorProcess, play: str, extra: dict, name: str,
        peak: bool = True, azurite=None) -> tuple[float, dict, dict]:
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
    emu_cpu, azurite_cpu = cpu_seconds(emu.proc), cpu_seconds(azurite.proc if azurite else None)
    t0 = time.monotonic()
    p = subprocess.Popen([str(Path(sys.executable).parent / "ansible-playbook"), "-i", "localhost,", "-c", "local",
                          str(d / "play.yml"), "-e", f"@{xv}"], env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    watch = PlaybookWatch(p.pid) if peak else None
    stdout, stderr = p.communicate()
    wall = time.monotonic() - t0
    if p.returncode:
        print(stdout[-3000:], stderr[-3000:])
        raise SystemExit(f"{name} failed")
    after = emu.stats()
    delta = {k: after[k] - before[k] for k in COUNTERS}
    result = json.loads(out.read_text()) if out.exists() else {}
    peaks = [float(x) for x in PEAK.read_text().split()] if PEAK.exists() else [0.0]
    result["_peak_mb"] = max(peaks)
    result["_playbook_peak_mb"] = watch.stop() if watch else 0.0
    result["_emulator_cpu_s"] = cpu_seconds(emu.proc) - emu_cpu
    result["_emulator_peak_mb"] = peak_mb(emu.proc)
    result["_azurite_cpu_s"] = cpu_seconds(azurite.proc) - azurite_cpu if azurite else 0.0
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


FILE_HEADER = ("| run | wall s | module s: read / plan / write / wait | jobs s | emulator CPU s | Azurite CPU s | "
               "ansible-playbook s | ansible-playbook peak MB | module peak MB | emulator peak MB |")
FILE_RULE = "|---|---|---|---|---|---|---|---|---|---|"


def split_row(label: str, wall: float, d: dict, res: dict, note: str = "") -> str:
    """Where the wall time went: the module (its timings), the emulator's jobs, the services' CPU, and
    ansible-playbook (the wall time outside the module); and each process's peak memory."""
    t = res.get("timings") or {}
    module = t.get("total", 0.0)
    jobs = sum(j.get("seconds", 0.0) for j in res.get("jobs") or [])
    return (f"| {label}{' (' + note + ')' if note else ''} | {wall:.1f} | {module:.1f}: {t.get('read', 0):.1f} / "
            f"{t.get('plan', 0):.1f} / {t.get('write', 0):.1f} / {t.get('wait', 0):.1f} | {jobs:.1f} | "
            f"{res.get('_emulator_cpu_s', 0):.1f} | {res.get('_azurite_cpu_s', 0):.1f} | {wall - module:.1f} | "
            f"{res.get('_playbook_peak_mb', 0):.0f} | {res.get('_peak_mb', 0):.0f} | "
            f"{res.get('_emulator_peak_mb', 0):.0f} |")


def write_fleet_file(path: Path, n: int) -> Path:
    """The bench fleet as JSON Lines or CSV (by PATH's extension), written streaming."""
    with open(path, "w", encoding="utf-8") as fh:
        if path.suffix == ".csv":
            fh.write("device_id,status_reason\n")
            for i in range(n):
                fh.write(f"sensor-{i:07d},bench\n")
        else:
            for i in range(n):
                fh.write(f'{{"device_id": "sensor-{i:07d}", "status_reason": "bench"}}\n')
    return path


def three_runs(collections, emu, n: int, label: str, extra: dict, lines: list, play: str = BULK_PLAY,
               row_of=row, azurite=None) -> dict:
    devices = fleet(n)
    vars_ = {"bench_devices": devices, **extra} if play == BULK_PLAY else dict(extra)
    out = {}
    wall, d, res = run(collections, emu, play, vars_, f"{label}-{n}-first", azurite=azurite)
    lines.append(row_of(f"{label}: first apply", wall, d, res))
    out.update(first=wall, first_result=_brief(res))
    wall, d, res = run(collections, emu, play, vars_, f"{label}-{n}-noop", azurite=azurite)
    lines.append(row_of(f"{label}: no-op re-run", wall, d, res, f"{d['registry_writes']} writes"))
    out.update(noop=wall, noop_pages=d["query_pages"], noop_jobs=d["jobs_created"], noop_peak=res.get("_peak_mb"),
               noop_result=_brief(res))
    changed = max(1, n // 100)
    drift(emu, [x["device_id"] for x in devices[:changed]])
    wall, d, res = run(collections, emu, play, vars_, f"{label}-{n}-drift", azurite=azurite)
    lines.append(row_of(f"{label}: 1 % drift ({changed:,} devices)", wall, d, res,
                        f"{res.get('requests', {}).get('gets', '?')} GETs"))
    out.update(drift=wall, drift_calls=d["bulk_calls"], peak=res.get("_peak_mb"), drift_result=_brief(res))
    return out


def _brief(res: dict) -> dict:
    return {k: res.get(k) for k in ("counts", "timings", "pacing", "jobs", "requests", "_peak_mb", "_playbook_peak_mb",
                                    "_emulator_peak_mb", "_emulator_cpu_s", "_azurite_cpu_s")}


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


def hubs_in_parallel(collections: Path, latency: str, lines: list, summary: dict) -> None:
    """#28: BENCH_HUBS emulated hubs (separate processes, the same latency and throttle), BENCH_HUBS_N devices each
    from one sharded file, converged by playbooks/fleet_of_hubs.yml with forks 1, 2, 4, 8: the wall time of each
    first apply beside one hub's alone."""
    n_hubs = int(os.environ.get("BENCH_HUBS", "8"))
    per_hub = int(os.environ.get("BENCH_HUBS_N", "20000"))
    throttle = os.environ.get("BENCH_HUBS_THROTTLE", "")
    args = ["--latency-ms", latency] + (["--throttle", throttle] if throttle else [])
    emus = [EmulatorProcess(WORK / f"emu-hub-{i}", *args).start() for i in range(n_hubs)]
    try:
        fleet_path = WORK / "hubs-fleet.jsonl"
        with open(fleet_path, "w", encoding="utf-8") as fh:
            for i in range(per_hub * n_hubs):
                fh.write(json.dumps({"device_id": f"d-{i:08d}", "hub": f"hub-{i % n_hubs}"}) + "\n")
        inv = WORK / "hubs.iothub.yml"
        inv.write_text(json.dumps({"plugin": "fleet.azure_iot.iothub", "host_type": "hub", "hubs": [
            {"name": f"hub-{i}", "connection_string_env": f"BENCH_HUB_{i}_CS", "ca_path": str(e.ca_path)}
            for i, e in enumerate(emus)]}))
        env = env_without_proxies()
        env.update({f"BENCH_HUB_{i}_CS": e.connection_string for i, e in enumerate(emus)})
        env.update({"ANSIBLE_COLLECTIONS_PATH": str(collections), "ANSIBLE_INVENTORY_UNPARSED_FAILED": "1",
                    "ANSIBLE_LOCALHOST_WARNING": "0"})
        sku = {"bench_sku": throttle.split(":")[0], "bench_units": int((throttle.split(":") + ["1"])[1])} \
            if throttle else {}

        def converge(forks: int, limit: str | None = None) -> float:
            for e in emus:
                e.reset()
            cmd = [str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(inv), "-f", str(forks),
                   str(REPO / "playbooks" / "fleet_of_hubs.yml"), "-e", f"fleet_devices_file={fleet_path}",
                   "-e", f"ansible_python_interpreter={sys.executable}"]
            if sku:
                cmd += ["-e", f"fleet_hub_sku={sku['bench_sku']}", "-e", f"fleet_hub_units={sku['bench_units']}"]
            if limit:
                cmd += ["--limit", limit]
            cpu0 = [cpu_seconds(e.proc) for e in emus]
            t0 = time.monotonic()
            p = subprocess.run(cmd, env=env, capture_output=True, text=True)
            wall = time.monotonic() - t0
            if p.returncode:
                print(p.stdout[-3000:], p.stderr[-3000:])
                raise SystemExit(f"hubs bench with forks {forks} failed")
            summary.setdefault("hubs", {})[f"forks-{forks}" + (f"-{limit}" if limit else "")] = {
                "wall": wall, "emulator_cpu": sum(cpu_seconds(e.proc) - c for e, c in zip(emus, cpu0))}
            return wall
        one = converge(1, "hub-0")
        lines += [f"## Hubs in parallel: {n_hubs} emulated hubs x {per_hub:,} devices (#28)", "",
                  f"Each hub a separate emulator process ({latency} ms per request"
                  f"{', throttle ' + throttle if throttle else ', no throttle'}); one play "
                  "(playbooks/fleet_of_hubs.yml, `strategy: free`, `hub_key_filter`) converges every hub's first apply "
                  f"from one sharded file. One hub alone: {one:.1f} s.", "",
                  "| forks | wall s | wall / one hub's wall | ideal (hubs / forks) | emulators' CPU s |", "|---|---|---|---|---|"]
        for forks in (1, 2, 4, 8):
            wall = converge(forks)
            cpu = summary["hubs"][f"forks-{forks}"]["emulator_cpu"]
            lines.append(f"| {forks} | {wall:.1f} | {wall / one:.2f} | {n_hubs / min(forks, n_hubs):.0f} | {cpu:.1f} |")
        lines.append("")
    finally:
        for e in emus:
            e.stop()


def main() -> int:
    sizes = [int(x) for x in os.environ.get("BENCH_SIZES", "1000,10000").split(",") if x]
    jobs_n = int(os.environ.get("BENCH_JOBS_N", "100000"))
    throttled_n = int(os.environ.get("BENCH_THROTTLED_N", "3000"))
    loop_n = int(os.environ.get("BENCH_LOOP_N", "100"))
    file_n = int(os.environ.get("BENCH_FILE_N", "100000"))
    out_path = Path(os.environ.get("BENCH_OUT") or OUT)
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

    job_sizes = ([jobs_n] if jobs_n else []) + ([1_000_000] if os.environ.get("BENCH_MILLION_LIST") else [])
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

    file_sizes = ([file_n] if file_n else []) + ([1_000_000] if os.environ.get("BENCH_MILLION") else [])
    if file_sizes:
        azurite = AzuriteProcess(WORK / "azurite-file").start()
        try:
            for n in file_sizes:
                lines += [f"## N = {n:,} from a file: `devices_file` beside the `devices` list, through jobs", "",
                          "Module s is the module's own wall time (its `timings`: read, plan, write, wait); jobs s the "
                          "import/export jobs from creation to their end (the emulator's job engine reading and "
                          "writing Azurite); emulator and Azurite CPU s their processes' CPU time during the run; "
                          "ansible-playbook s the wall time outside the module (start, templating, the result).", "",
                          FILE_HEADER, FILE_RULE]
                kinds = [("jsonl", "devices_file JSON Lines"), ("csv", "devices_file CSV")]
                if n <= int(os.environ.get("BENCH_LIST_MAX", "100000")):
                    kinds.append(("list", "devices list"))
                for kind, label in kinds:
                    emu = EmulatorProcess(WORK / f"emu-file-{kind}-{n}", "--latency-ms", latency).start()
                    try:
                        extra = {"bench_container": azurite.container_uri(f"file{kind}{n}")}
                        if kind == "list":
                            summary[f"file-list-{n}"] = three_runs(collections, emu, n, label, extra, lines,
                                                                   row_of=split_row, azurite=azurite)
                        else:
                            path = write_fleet_file(WORK / f"fleet-{n}.{kind}", n)
                            summary[f"file-{kind}-{n}"] = three_runs(
                                collections, emu, n, label, {**extra, "bench_file": str(path)}, lines,
                                play=FILE_PLAY, row_of=split_row, azurite=azurite)
                    finally:
                        emu.stop()
                lines.append("")
        finally:
            azurite.stop()

    if os.environ.get("BENCH_HUBS", "8") != "0":
        hubs_in_parallel(collections, latency, lines, summary)

    if throttled_n:
        lines += ["## Throttled first applies: pacing against the quota floor", "",
                  "The quota floor is the least wall time the emulator's throttle allows: its sliding 60-second window "
                  "starts empty, so N operations at Q per minute need 60 x (ceil(N / Q) - 1) seconds "
                  "(docs/emulator.md). Wall is the task's own time (`timings.total`); the play's is beside it.", "",
                  "| hub | devices | run | task wall s | play wall s | quota floor s | task / floor | 429 answers | "
                  "waited for the quota s | quota reported |", "|---|---|---|---|---|---|---|---|---|---|"]
        for units, n in ((10, throttled_n), (2, max(1, throttled_n // 10))):
            quota = 100 * units
            floor = 60 * (-(-n // quota) - 1)
            emu = EmulatorProcess(WORK / f"emu-throttled-{units}", "--latency-ms", latency, "--throttle",
                                  f"S1:{units}").start()
            try:
                for how, extra in (("hub_sku S1, hub_units %d" % units, {"bench_sku": "S1", "bench_units": units}),
                                   ("quota learnt from the first 429", {})):
                    emu.reset()
                    wall, d, res = run(collections, emu, BULK_PLAY, {"bench_devices": fleet(n), **extra},
                                       f"throttled-{units}-{'stated' if extra else 'learnt'}")
                    pacing = res.get("pacing", {})
                    task = (res.get("timings") or {}).get("total", wall)
                    ratio = f"{task / floor:.2f}" if floor else "-"
                    lines.append(f"| S1 x {units} | {n:,} | {how} | {task:.1f} | {wall:.1f} | {floor} | {ratio} | "
                                 f"{d['throttled']} | {pacing.get('waited_seconds', '?')} | "
                                 f"{pacing.get('registry_operations_per_minute')} |")
                    summary[f"throttled-{units}-{'stated' if extra else 'learnt'}"] = {
                        "task": task, "wall": wall, "floor": floor, "throttled": d["throttled"], "pacing": pacing}
            finally:
                emu.stop()
        lines.append("")

    emu = EmulatorProcess(WORK / "emu-task", "--latency-ms", latency).start()
    try:
        ratio = stat_wall = dev_wall = None
        if os.environ.get("BENCH_OVERHEAD", "1") == "1":
            ratio, stat_wall, dev_wall = per_task_ratio(collections, emu, latency)
            lines += ["## Per-task overhead", "",
                      "A loop of 20 `iothub_device` no-op tasks against a loop of 20 `ansible.builtin.stat` tasks, both "
                      "on localhost, median of 5 pairs.", "", "| stat loop s | iothub_device loop s | ratio |",
                      "|---|---|---|", f"| {stat_wall:.2f} | {dev_wall:.2f} | {ratio:.2f} |", ""]
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
    out_path.write_text("\n".join(lines))
    (WORK / "summary.json").write_text(json.dumps(summary, indent=2))
    print("\n".join(lines))
    print(f"\nwritten to {out_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
