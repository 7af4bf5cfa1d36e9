# -*- coding: utf-8 -*-
# Copyright: fleet.azure_iot contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""PRIVATE to fleet.azure_iot: pacing requests under the hub's per-minute quotas instead of bouncing off 429s.

IoT Hub counts registry operations (each device of a bulk call once) and query pages per minute per unit
(iot-api.md §6; S1: 100 operations and 20 pages per unit, S3: 5,000 and 1,000).  A ``Budget`` keeps a sliding
window of what was sent in the last minute and makes a caller wait until its cost fits, so that a fleet spreads
its calls over the minutes the quota needs.  The quota is the one the user states (``hub_sku``, ``hub_units``),
or is learnt from the first 429: what went through in the minute before it is what the hub allows.

A stated quota is used in full, and a bulk call may be cut to what is left of the minute (``take``): S1 with two
units sends 200 devices a minute, not two calls of 100 and then a wait.  On a window that starts empty, N
operations at Q per minute then need 60 x (ceil(N / Q) - 1) seconds plus a second of slack per minute (the
quota floor of docs/emulator.md).  A learnt quota is paced a little under what went through, and reported never
above the figure that met the last 429.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Dict, Optional

WINDOW_SECONDS = 60.0
SLACK_SECONDS = 1.0  # the hub's window starts when a request arrives, a little after it was sent
SHARE = 0.95  # pace a learnt quota a little under what went through (a stated one is used in full)
RECOVERY = 1.5  # a learnt limit grows by half per quiet minute
SKU_QUOTAS = {  # per minute per unit: (registry operations, query pages)
    "F1": (100, 20), "B1": (100, 20), "S1": (100, 20), "B2": (100, 20), "S2": (100, 20),
    "B3": (5000, 1000), "S3": (5000, 1000),
}


class WallWait:
    """The wall-clock seconds during which at least one caller waited: concurrent callers waiting at the same
    time count once, so the figure never exceeds the run's duration."""

    def __init__(self, clock=time.monotonic):
        self.clock = clock
        self.seconds = 0.0
        self._waiting = 0
        self._since = 0.0
        self._lock = threading.Lock()

    def begin(self) -> None:
        with self._lock:
            if self._waiting == 0:
                self._since = self.clock()
            self._waiting += 1

    def total(self) -> float:
        """The seconds so far, a wait still under way included (the progress file reads it while a call waits)."""
        with self._lock:
            return self.seconds + (self.clock() - self._since if self._waiting else 0.0)

    def end(self) -> None:
        with self._lock:
            self._waiting -= 1
            if self._waiting == 0:
                self.seconds += self.clock() - self._since


class Budget:
    """One quota (registry operations, or query pages): wait until ``cost`` fits in the last minute."""

    def __init__(self, per_minute: Optional[float], clock=time.monotonic, sleep=time.sleep, floor: float = 0.0,
                 wall: Optional[WallWait] = None):
        self.limit = float(per_minute) if per_minute else None  # None: unknown until a 429 teaches it
        self.stated = bool(per_minute)  # the user's figure is trusted: a 429 under it is retried, not learnt from
        self.met: Optional[float] = None  # a learnt quota: what had gone through when the last 429 came
        self.floor = floor  # the smallest quota any hub has: a learnt one is never lower
        self.clock, self.sleep = clock, sleep
        self.sent: deque = deque()  # (time, cost)
        self.wall = wall or WallWait(clock)  # shared by a Pacer's budgets: a wait for either counts once
        self.throttled = 0
        self._learnt_at: Optional[float] = None  # when the learnt limit last changed
        self._grown = False  # the learnt limit has grown at least once (a 429 after that settles it)
        self._settled = False  # a grown limit met a 429: the hub's quota is known, growing again would overshoot
        self._lock = threading.Lock()

    def _recover(self, now: float) -> None:
        """A learnt limit grows by half for every full window without a 429: one 429 that was a blip (or another
        job that has finished) does not slow the rest of a long run for good.  Once a grown limit meets a 429,
        the hub's quota is known and the limit stays (growing again would run into the same 429s each minute)."""
        if self._learnt_at is None or self.limit is None or self._settled:
            return
        while now - self._learnt_at >= WINDOW_SECONDS + SLACK_SECONDS:
            self.limit *= RECOVERY
            self._learnt_at += WINDOW_SECONDS + SLACK_SECONDS
            self._grown = True

    def _used(self, now: float) -> float:
        while self.sent and self.sent[0][0] <= now - WINDOW_SECONDS - SLACK_SECONDS:
            self.sent.popleft()
        return sum(cost for _sent_at, cost in self.sent)

    @property
    def waited(self) -> float:
        """Wall-clock seconds spent waiting for the quota (for this budget, and the other of its Pacer), a wait
        still under way included."""
        return self.wall.total()

    def _delay(self, cost: float, now: float) -> float:
        """Seconds until COST fits in the window (0: it fits now).  Called with the lock held."""
        self._recover(now)
        used = self._used(now)
        if self.limit is None or used + cost <= self.limit or not self.sent:
            return 0.0
        # wait until enough of the oldest entries leave the window
        free_needed = used + cost - self.limit
        freed, until = 0.0, now
        for t, c in self.sent:
            freed += c
            until = t + WINDOW_SECONDS + SLACK_SECONDS
            if freed >= free_needed:
                break
        return max(0.05, until - now)

    def delay_for(self, cost: float) -> float:
        """Seconds until COST would fit, without waiting (a retry weighs it against its retry budget)."""
        with self._lock:
            return self._delay(cost, self.clock())

    def eta(self, count: int) -> Optional[float]:
        """Seconds until COUNT more operations could all have been sent under the quota (None: no quota known)."""
        with self._lock:
            if self.limit is None:
                return None
            if count <= 0:
                return 0.0
            first = min(count, self.limit)
            wait = self._delay(first, self.clock())
            minutes = -(-(count - first) // self.limit)
            return wait + minutes * (WINDOW_SECONDS + SLACK_SECONDS)

    def _admit(self, decide) -> tuple:
        """Wait until DECIDE(now) -> (count, delay) gives no delay, then count COUNT as sent; return (count, the
        seconds waited).  The one waiting loop of ``acquire`` and ``take`` (a wait counts once on the wall clock)."""
        waited = 0.0
        while True:
            with self._lock:
                now = self.clock()
                count, delay = decide(now)
                if not delay:
                    self.sent.append((now, count))
                    if waited:
                        self.wall.end()
                    return count, waited
                if not waited:
                    self.wall.begin()
            self.sleep(delay)
            waited += delay

    def acquire(self, cost: float) -> float:
        """Block until COST fits under the quota, then count it; return the seconds waited."""
        return self._admit(lambda now: (cost, self._delay(cost, now)))[1]

    def take(self, most: int) -> int:
        """A call that can be cut (a bulk call of MOST devices): block until at least one operation fits, then
        count and return how many go now (MOST, or what is left of the minute's quota).  The caller sends that
        many and leaves the rest for its next call, so the minute's budget is used, not left idle because a
        whole call of 100 no longer fits."""
        def decide(now):
            self._recover(now)
            room = most if self.limit is None else int(self.limit - self._used(now))
            if room >= 1 or not self.sent:
                return max(1, min(most, room)), 0.0
            return 0, self._delay(1, now)
        return self._admit(decide)[0]

    def on_throttled(self, cost: float = 0) -> None:
        """A 429 for a call of COST.  The refused call did not count at the hub: it leaves the window (counting
        it would teach a quota above the hub's).  Under a stated quota the 429 is counted and retried (with the
        usual backoff), never learnt from: the user's figure stands.  Otherwise the hub's quota is what went
        through in the last minute, at least the smallest quota any hub has; a later 429 can lower it, and quiet
        windows let it grow back."""
        with self._lock:
            self.throttled += 1
            for i in range(len(self.sent) - 1, -1, -1):
                if cost and self.sent[i][1] == cost:
                    del self.sent[i]
                    break
            if self.stated:
                return
            now = self.clock()
            self._recover(now)
            used = max(self._used(now), self.floor)
            if used > 0 and (self.limit is None or used * SHARE < self.limit):
                self.limit = used * SHARE
            self.met = used
            self._settled = self._settled or self._grown
            self._learnt_at = now

    def per_minute(self) -> Optional[int]:
        """The quota this budget paced by, per minute: the stated one, or the learnt one (never above the figure
        that met the last 429, even after quiet minutes let the pacing grow); None while unknown."""
        if self.limit is None:
            return None
        if self.stated:
            return round(self.limit)
        learnt = self.limit / SHARE
        return round(min(learnt, self.met) if self.met is not None else learnt)


class Pacer:
    """The budgets of one task: registry operations and query pages."""

    def __init__(self, sku: Optional[str] = None, units: int = 1, clock=time.monotonic, sleep=time.sleep):
        reg, pages = SKU_QUOTAS[sku.upper()] if sku else (None, None)
        least_reg, least_pages = SKU_QUOTAS["S1"]  # one unit of the smallest tiers
        wall = WallWait(clock)
        self.registry = Budget(reg * units if reg else None, clock, sleep, floor=least_reg, wall=wall)
        self.query = Budget(pages * units if pages else None, clock, sleep, floor=least_pages, wall=wall)

    def report(self) -> Dict[str, object]:
        return {
            "registry_operations_per_minute": self.registry.per_minute(),
            "query_pages_per_minute": self.query.per_minute(),
            "waited_seconds": round(self.registry.waited, 1),  # one wall clock for both budgets
            "throttled_responses": self.registry.throttled + self.query.throttled,
        }
