# -*- coding: utf-8 -*-
# Copyright: fleet.azure_iot contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""PRIVATE to fleet.azure_iot: where a long task's time goes (``timings``) and a progress file to watch it by.

A module cannot stream to ansible-playbook's output.  ``RunProgress`` keeps the seconds spent per phase (read,
plan, write; the pacing's wait is measured by the pacer and taken out of the phase it happened in) and, with a
path (``progress_file``), replaces a small JSON file atomically every ``INTERVAL`` seconds from a background
thread while the task runs, so a play that runs the task with ``async`` can read it between polls (a file lookup,
or ``slurp`` on another host: docs/fleet-jobs.md).  The file holds counts and timings only: never an id, a key or a connection string.
"""

from __future__ import annotations

import json
import os
import threading
import time
from contextlib import contextmanager
from typing import Callable, Dict, Optional

INTERVAL = 2.0  # seconds between two writes of the progress file (the contract: at least every 5 s)
PHASES = ("read", "plan", "write")


class RunProgress:
    """The phases of one task.  ``snapshot`` returns the live figures: done (devices settled), total, bulk_calls,
    throttled, waited_seconds (the pacing's wall-clock wait), quota_eta (the least seconds the quota allows for the
    rest, or None)."""

    def __init__(self, path: Optional[str] = None, snapshot: Optional[Callable[[], Dict[str, float]]] = None,
                 clock=time.monotonic, interval: float = INTERVAL):
        self.path = path
        self.snapshot = snapshot or (lambda: {})
        self.clock = clock
        self.interval = interval
        self.started = clock()
        self.seconds: Dict[str, float] = {p: 0.0 for p in PHASES}
        self.waited_in: Dict[str, float] = {p: 0.0 for p in PHASES}
        self.phase = "start"
        self._write_started: Optional[float] = None  # when the first write began (the rate for the ETA)
        self._done_at_write = 0.0
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ phases
    @contextmanager
    def measure(self, phase: str):
        """Time a phase (nested: the inner phase's time is not counted twice)."""
        outer, self.phase = self.phase, phase
        before_wait = self._waited()
        start = self.clock()
        if phase == "write" and self._write_started is None:
            self._write_started = start
            self._done_at_write = self.snapshot().get("done", 0)
        try:
            yield
        finally:
            spent = self.clock() - start
            waited = self._waited() - before_wait
            with self._lock:
                self.seconds[phase] += spent
                self.waited_in[phase] += waited
                if outer in self.seconds:  # the outer phase goes on; its clock excludes this one
                    self.seconds[outer] -= spent
                    self.waited_in[outer] -= waited
            self.phase = outer

    def _waited(self) -> float:
        return float(self.snapshot().get("waited_seconds", 0.0))

    def timings(self) -> Dict[str, float]:
        """Seconds: ``read``, ``plan``, ``write`` (each without the pacing's wait), ``wait`` (for the quota),
        ``total`` (the task's wall time in the module; the rest is setup and the result)."""
        with self._lock:
            out = {p: round(max(0.0, self.seconds[p] - self.waited_in[p]), 3) for p in PHASES}
        out["wait"] = round(self._waited(), 3)
        out["total"] = round(self.clock() - self.started, 3)
        return out

    # ------------------------------------------------------------------ the file
    def document(self, phase: Optional[str] = None) -> Dict[str, object]:
        snap = self.snapshot()
        done, total = int(snap.get("done", 0)), int(snap.get("total", 0))
        now = self.clock()
        eta = None
        if phase in ("done", "failed"):
            eta = 0
        elif self._write_started is not None and total > done:
            # under a known quota, the time it needs for the rest (a paced run goes fast within a minute, then
            # waits for the next one: a rate would be wrong both ways); else the rate since the first write
            eta = snap.get("quota_eta")
            if eta is None and done > self._done_at_write:
                eta = (total - done) / ((done - self._done_at_write) / max(now - self._write_started, 1e-6))
            eta = round(eta, 1) if eta is not None else None
        return {"phase": phase or self.phase, "done": done, "total": total,
                "bulk_calls": int(snap.get("bulk_calls", 0)), "throttled": int(snap.get("throttled", 0)),
                "waited_seconds": round(float(snap.get("waited_seconds", 0.0)), 1), "eta_seconds": eta,
                "elapsed_seconds": round(now - self.started, 1), "pid": os.getpid(),
                "updated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}

    def write(self, phase: Optional[str] = None) -> None:
        """Replace the file atomically (a reader sees the old document or the new one, never half of one)."""
        if not self.path:
            return
        tmp = f"{self.path}.{os.getpid()}.tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(self.document(phase), fh)
        os.replace(tmp, self.path)

    def start(self) -> None:
        """Write the file now and then every ``interval`` seconds until ``finish``."""
        if not self.path:
            return
        self.write()

        def loop():
            while not self._stop.wait(self.interval):
                try:
                    self.write()
                except OSError:
                    pass  # a full disk must not fail the task: the next write tries again
        self._thread = threading.Thread(target=loop, name="progress_file", daemon=True)
        self._thread.start()

    def finish(self, failed: bool = False) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self.path:
            try:
                self.write("failed" if failed else "done")
            except OSError:
                pass
