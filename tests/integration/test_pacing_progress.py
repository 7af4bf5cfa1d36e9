"""#25 items 3 and 4 against throttled emulators: a stated quota is filled (the apply ends near the quota floor,
with no 429), a learnt quota is never reported above the hub's, and the example play watches a paced run through
``progress_file`` while iothub_device_bulk runs with async.

The quota floor (docs/emulator.md): N operations at Q per minute need at least 60 x (ceil(N / Q) - 1) seconds on
the emulator's sliding window.  The pacer's own wait is asserted against 1.1 x the floor (it is what pacing
decides); the wall times are printed, and ``make bench`` reports them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import play, task
from support.ansible import AnsibleRunner
from support.emulator import env_without_proxies

REPO = Path(__file__).resolve().parents[2]
FAST = {"retry_backoff_seconds": 0.05, "max_retries": 12}


def floor_seconds(n, per_minute):
    return 60 * (-(-n // per_minute) - 1)


@pytest.fixture
def runner_for(collections_root, tmp_path):
    def make(emu) -> AnsibleRunner:
        env = env_without_proxies()
        env.update(emu.ansible_env())
        return AnsibleRunner(collections_root, tmp_path / "runner", env, emulator=emu)
    return make


def fleet_file(path: Path, prefix: str, n: int) -> Path:
    path.write_text("".join(json.dumps({"device_id": f"{prefix}-{i:05d}", "tags": {"n": i}}) + "\n"
                            for i in range(n)))
    return path


@pytest.mark.parametrize("units, n", [(10, 3000)])
def test_a_stated_quota_is_filled_without_a_429(emulator_factory, runner_for, tmp_path, units, n):
    emu = emulator_factory("--throttle", f"S1:{units}")
    runner = runner_for(emu)
    path = fleet_file(tmp_path / "fleet.jsonl", "s", n)
    r = runner.run(play(task("f", "iothub_device_bulk", devices_file=str(path), hub_sku="S1", hub_units=units,
                             **FAST)), verbosity=0, diff=False)
    assert r.rc == 0, r.output[-3000:]
    res = r.task("f").result
    assert res["counts"]["created"] == n
    quota = 100 * units
    floor = floor_seconds(n, quota)
    assert res["pacing"]["registry_operations_per_minute"] == quota
    assert res["pacing"]["throttled_responses"] == 0 and emu.stats()["throttled"] == 0
    assert floor * 0.9 <= res["pacing"]["waited_seconds"] <= 1.1 * floor  # filled: minutes the quota needs, no more
    assert res["timings"]["wait"] == pytest.approx(res["pacing"]["waited_seconds"], abs=0.2)
    print(f"S1x{units}, {n} creates: task {res['timings']['total']:.1f} s, floor {floor} s, timings {res['timings']}")


def test_a_learnt_quota_is_never_reported_above_the_hubs(emulator_factory, runner_for, tmp_path):
    emu = emulator_factory("--throttle", "S1:2")  # 200 a minute, not stated to the task
    runner = runner_for(emu)
    path = fleet_file(tmp_path / "fleet.jsonl", "l", 300)
    r = runner.run(play(task("f", "iothub_device_bulk", devices_file=str(path), max_concurrency=1, **FAST)),
                   verbosity=0, diff=False)
    assert r.rc == 0, r.output[-3000:]
    res = r.task("f").result
    assert res["counts"]["created"] == 300
    refused = emu.stats()["throttled"]
    assert refused >= 1 and res["pacing"]["throttled_responses"] == refused  # it did meet the quota
    assert res["pacing"]["registry_operations_per_minute"] <= 200  # it reported 300 before


def test_the_example_play_watches_a_paced_run_through_its_progress_file(emulator_factory, runner_for, tmp_path):
    """playbooks/fleet_from_file_watched.yml, as shipped: async with poll 0, a progress line per interval from
    progress_file, then the result.  S1 x 2 with 300 creates: 200 go at once, 100 a minute later."""
    emu = emulator_factory("--throttle", "S1:2")
    runner = runner_for(emu)
    path = fleet_file(tmp_path / "fleet.jsonl", "w", 300)
    r = runner.run(REPO / "playbooks" / "fleet_from_file_watched.yml", verbosity=0, diff=False,
                   extra_vars={"fleet_devices_file": str(path), "fleet_hub_sku": "S1", "fleet_hub_units": 2,
                               "fleet_watch_every_seconds": 5, "fleet_timeout_seconds": 600})
    assert r.rc == 0, r.output[-3000:]
    lines = [item["msg"] for item in r.task("Progress").result["results"] if "msg" in item]
    writing = [line for line in lines if line.startswith("write:")]
    assert len(writing) >= 2, lines  # the file was rewritten while the task waited for the quota
    assert len(set(writing)) == len(writing)  # each line a newer document (elapsed time moves)
    assert lines[-1].startswith("done: 300/300 devices"), lines
    assert len(lines) < 600 // 5  # break_when ended the watch when the task ended
    res = r.task("Collect the result").result
    assert res["counts"]["created"] == 300 and res["pacing"]["registry_operations_per_minute"] == 200
    assert res["pacing"]["throttled_responses"] == 0 and emu.stats()["throttled"] == 0
    assert 0.9 * 60 <= res["timings"]["wait"] <= 1.1 * 60  # floor 60 s: the second minute's 100, no more
    final = json.loads(Path(f"{path}.progress.json").read_text())
    assert final["phase"] == "done" and final["done"] == final["total"] == 300 and final["eta_seconds"] == 0
    report = [json.loads(line) for line in Path(f"{path}.report.jsonl").read_text().splitlines()]
    assert len(report) == 300 and {row["action"] for row in report} == {"create"}
    print("\n".join(lines))


def test_a_progress_file_that_cannot_be_written_fails_before_any_request(emulator_factory, runner_for, tmp_path):
    emu = emulator_factory()
    runner = runner_for(emu)
    path = fleet_file(tmp_path / "fleet.jsonl", "x", 3)
    before = emu.stats()["requests"]
    r = runner.run(play(task("f", "iothub_device_bulk", devices_file=str(path),
                             progress_file=str(tmp_path / "no" / "such" / "folder" / "p.json"))),
                   verbosity=0, diff=False)
    assert r.rc != 0
    assert "progress_file: cannot write" in r.task("f").result["msg"]
    assert emu.stats()["requests"] == before


def test_bad_input_is_reported_as_failed_in_the_progress_file(emulator_factory, runner_for, tmp_path):
    """A watcher stops on phase failed: an input error (here a line that is not JSON) must say so."""
    emu = emulator_factory()
    runner = runner_for(emu)
    path = tmp_path / "fleet.jsonl"
    path.write_text('{"device_id": "a"}\nnot json\n')
    progress = tmp_path / "p.json"
    r = runner.run(play(task("f", "iothub_device_bulk", devices_file=str(path), progress_file=str(progress))),
                   verbosity=0, diff=False)
    assert r.rc != 0 and "fleet.jsonl:2" in r.task("f").result["msg"]
    assert json.loads(progress.read_text())["phase"] == "failed"
