"""RunProgress: timings per phase without the pacing's wait, the progress file's document and its atomic writes."""

from __future__ import annotations

import json
import os
import threading

import pytest

from ansible_collections.fleet.azure_iot.plugins.module_utils._progress import RunProgress


class Fake:
    def __init__(self):
        self.now = 0.0
        self.figures = {"done": 0, "total": 100, "bulk_calls": 0, "throttled": 0, "waited_seconds": 0.0}

    def clock(self):
        return self.now


def test_each_phase_is_timed_once_and_the_wait_is_taken_out_of_the_phase_it_happened_in():
    fake = Fake()
    progress = RunProgress(snapshot=lambda: fake.figures, clock=fake.clock)
    with progress.measure("read"):
        fake.now += 3
    with progress.measure("write"):
        fake.now += 2
        with progress.measure("read"):  # a re-read inside the write phase counts as read, once
            fake.now += 1
        fake.now += 60
        fake.figures["waited_seconds"] = 58.0  # the pacer waited 58 s of the write phase's 63
    with progress.measure("plan"):
        fake.now += 0.5
    t = progress.timings()
    assert t == {"read": 4.0, "plan": 0.5, "write": 4.0, "wait": 58.0, "total": 66.5}


def test_the_document_has_the_contract_keys_and_an_eta_from_the_rate_since_the_first_write():
    fake = Fake()
    progress = RunProgress(snapshot=lambda: fake.figures, clock=fake.clock)
    doc = progress.document()
    assert set(doc) >= {"phase", "done", "total", "bulk_calls", "throttled", "waited_seconds", "eta_seconds"}
    assert doc["eta_seconds"] is None  # no write yet: no rate
    fake.now = 10
    with progress.measure("write"):
        fake.now = 70
        fake.figures.update(done=30, bulk_calls=1)
        doc = progress.document()
    assert doc["phase"] == "write" and doc["done"] == 30 and doc["total"] == 100
    assert doc["eta_seconds"] == pytest.approx(140.0)  # 30 in 60 s: 70 more in 140 s
    assert progress.document("done")["eta_seconds"] == 0


def test_the_file_is_replaced_atomically_and_says_when_the_task_ended(tmp_path):
    fake = Fake()
    path = tmp_path / "progress.json"
    progress = RunProgress(str(path), snapshot=lambda: fake.figures, interval=3600)
    progress.start()
    assert json.loads(path.read_text())["phase"] == "start"
    fake.figures["done"] = 100
    progress.finish(failed=False)
    doc = json.loads(path.read_text())
    assert doc["phase"] == "done" and doc["done"] == 100
    assert os.listdir(tmp_path) == ["progress.json"]  # no temporary file left behind
    RunProgress(str(path), interval=3600).finish(failed=True)
    assert json.loads(path.read_text())["phase"] == "failed"


def test_the_file_is_rewritten_while_the_task_runs(tmp_path):
    path = tmp_path / "progress.json"
    seen = []
    five = threading.Event()

    def snapshot():
        seen.append(1)
        if len(seen) >= 5:
            five.set()
        return {"done": len(seen), "total": 1000}
    progress = RunProgress(str(path), snapshot=snapshot, interval=0.01)
    progress.start()
    assert five.wait(60)  # the background writer calls the snapshot at every write
    progress.finish()
    assert json.loads(path.read_text())["done"] >= 5


def test_without_a_path_nothing_is_written(tmp_path):
    progress = RunProgress(None)
    progress.start()
    progress.finish()
    assert progress.timings()["total"] >= 0


def test_the_eta_is_never_less_than_the_quota_allows():
    fake = Fake()
    progress = RunProgress(snapshot=lambda: fake.figures, clock=fake.clock)
    with progress.measure("write"):
        fake.now = 4
        fake.figures.update(done=200, total=300, quota_eta=57.0)  # 200 went at once; the rest waits for the minute
        assert progress.document()["eta_seconds"] == 57.0
