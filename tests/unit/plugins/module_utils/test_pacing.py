"""Pacing under the hub's quotas, with a fake clock (no sleeps)."""

from __future__ import annotations

import pytest

from ansible_collections.fleet.azure_iot.plugins.module_utils._pacing import Budget, Pacer, WallWait


class FakeClock:
    def __init__(self):
        self.now = 0.0
        self.slept = []

    def clock(self):
        return self.now

    def sleep(self, seconds):
        self.slept.append(seconds)
        self.now += seconds


class FakeHub:
    """The emulator's throttle: a sliding 60-second window that starts empty; a call over the quota is refused
    (429) and does not count."""

    def __init__(self, fake, per_minute, latency=0.2):
        self.fake, self.per_minute, self.latency = fake, per_minute, latency
        self.window = []  # (arrival, cost)
        self.refused = 0

    def call(self, cost):
        arrival = self.fake.now + self.latency / 2
        self.window = [(t, c) for t, c in self.window if t > arrival - 60]
        self.fake.now += self.latency
        if sum(c for _t, c in self.window) + cost > self.per_minute:
            self.refused += 1
            return False
        self.window.append((arrival, cost))
        return True


def bulk_apply(pacer, hub, devices, batch=100):
    """What iothub_device_bulk's writer does: cut each call to the room left (take), send, and on a 429 tell the
    budget and retry the same call once there is room (acquire)."""
    rest, calls = devices, []
    while rest:
        count = pacer.registry.take(min(batch, rest))
        while not hub.call(count):
            pacer.registry.on_throttled(count)
            hub.fake.now += 1  # the retry's backoff
            pacer.registry.acquire(count)
        calls.append(count)
        rest -= count
    return calls


def floor_seconds(devices, per_minute):
    """The least wall time the emulator's throttle allows (docs/emulator.md)."""
    return 60 * (-(-devices // per_minute) - 1)


@pytest.mark.parametrize("sku, units, devices", [("S1", 1, 300), ("S1", 2, 300), ("S1", 10, 3000),
                                                 ("S3", 1, 20000), ("S1", 3, 1000)])
def test_a_stated_quota_is_filled_and_the_apply_ends_within_1_1_times_the_floor(sku, units, devices):
    fake = FakeClock()
    pacer = Pacer(sku, units, clock=fake.clock, sleep=fake.sleep)
    quota = {"S1": 100, "S3": 5000}[sku] * units
    hub = FakeHub(fake, quota)
    calls = bulk_apply(pacer, hub, devices)
    floor = floor_seconds(devices, quota)
    assert sum(calls) == devices
    assert hub.refused == 0  # paced under the quota, never over it
    assert floor <= fake.now <= 1.1 * floor + 1  # the +1: the last call's own time, on a floor of 0
    report = pacer.report()
    assert report["registry_operations_per_minute"] == quota and report["throttled_responses"] == 0


def test_a_call_is_cut_to_what_is_left_of_the_minute():
    fake = FakeClock()
    pacer = Pacer("S1", 3, clock=fake.clock, sleep=fake.sleep)  # 300 a minute
    hub = FakeHub(fake, 300)
    calls = bulk_apply(pacer, hub, 500, batch=120)
    assert calls[:3] == [120, 120, 60]  # the third call is cut to the room left, not postponed a minute
    assert hub.refused == 0 and sum(calls) == 500


@pytest.mark.parametrize("quota, devices", [(200, 300), (1000, 3000), (100, 450)])
def test_a_learnt_quota_is_never_reported_above_the_hubs(quota, devices):
    """Unstated, the first 429 teaches the quota: the refused call did not count at the hub, and the figure
    reported is never above what went through (it was 300 on an S1 x 2 hub, whose quota is 200)."""
    fake = FakeClock()
    pacer = Pacer(clock=fake.clock, sleep=fake.sleep)
    hub = FakeHub(fake, quota)
    calls = bulk_apply(pacer, hub, devices)
    assert sum(calls) == devices and hub.refused >= 1
    fake.now += 10 * 61  # quiet minutes let the pacing grow, never the figure reported
    pacer.registry.take(1)
    report = pacer.report()
    assert report["registry_operations_per_minute"] <= quota
    assert report["throttled_responses"] == hub.refused


def test_a_stated_quota_spreads_calls_over_the_minutes_it_needs():
    fake = FakeClock()
    pacer = Pacer("S1", 10, clock=fake.clock, sleep=fake.sleep)  # 1,000 registry operations per minute
    for _call in range(30):  # 3,000 devices in bulk calls of 100
        pacer.registry.acquire(100)
        fake.now += 0.1  # each call takes a little time
    floor = floor_seconds(3000, 1000)
    assert fake.now <= 1.1 * floor  # within 1.1 x the quota floor
    assert pacer.registry.waited > 60  # it did wait, rather than run into 429s
    assert pacer.report()["registry_operations_per_minute"] == 1000


def test_never_more_than_the_quota_in_any_minute():
    fake = FakeClock()
    budget = Budget(500, clock=fake.clock, sleep=fake.sleep)
    times = []
    for _call in range(40):
        budget.acquire(50)
        times.append(fake.now)
        fake.now += 0.5
    for t in times:
        in_window = sum(50 for u in times if t - 60 < u <= t)
        assert in_window <= 500


def test_the_quota_is_learnt_from_the_first_429():
    fake = FakeClock()
    budget = Budget(None, clock=fake.clock, sleep=fake.sleep)
    for _call in range(10):
        assert budget.acquire(100) == 0  # unknown: no pacing
        fake.now += 1
    budget.on_throttled()  # 1,000 went through in the last minute
    assert budget.limit == pytest.approx(950)
    budget.acquire(100)
    assert budget.waited > 0 and budget.throttled == 1
    budget.on_throttled()  # a second 429 never raises the learnt quota
    assert budget.limit <= 950


def test_a_single_call_larger_than_the_quota_still_goes():
    fake = FakeClock()
    budget = Budget(50, clock=fake.clock, sleep=fake.sleep)
    assert budget.acquire(100) == 0  # an empty window always admits one call


def test_a_stated_quota_is_not_lowered_by_a_429():
    fake = FakeClock()
    pacer = Pacer("S1", 10, clock=fake.clock, sleep=fake.sleep)
    pacer.registry.acquire(100)
    pacer.registry.on_throttled()  # another job on the same hub: retried, the user's figure stands
    assert pacer.registry.limit == pytest.approx(1000) and pacer.registry.throttled == 1
    assert pacer.report()["throttled_responses"] == 1


def test_a_learnt_quota_is_never_below_one_s1_unit():
    fake = FakeClock()
    pacer = Pacer(clock=fake.clock, sleep=fake.sleep)
    pacer.registry.acquire(10)
    pacer.registry.on_throttled()  # only 10 went through: a blip, or another job; no hub allows less than 100
    assert pacer.registry.limit == pytest.approx(95)
    pacer.query.on_throttled()
    assert pacer.query.limit == pytest.approx(19)


def test_a_learnt_quota_grows_back_after_quiet_minutes_and_falls_at_the_next_429():
    fake = FakeClock()
    budget = Budget(None, clock=fake.clock, sleep=fake.sleep, floor=100)
    budget.acquire(200)
    budget.on_throttled()
    assert budget.limit == pytest.approx(190)
    fake.now += 61.5  # one quiet window
    budget.acquire(1)
    assert budget.limit == pytest.approx(285)
    fake.now += 3 * 61  # three more
    budget.acquire(1)
    assert budget.limit == pytest.approx(285 * 1.5 ** 3)
    budget.on_throttled()  # a 429 again: back to what went through in the last minute (at least the floor)
    assert budget.limit == pytest.approx(100 * 0.95)
    fake.now += 5 * 61  # a grown limit met a 429: the quota is known, and quiet minutes no longer raise it
    budget.acquire(1)
    assert budget.limit == pytest.approx(100 * 0.95)


def test_after_a_429_nothing_more_goes_until_the_minute_that_tripped_it_has_passed():
    fake = FakeClock()
    budget = Budget(None, clock=fake.clock, sleep=fake.sleep, floor=100)
    budget.acquire(500)
    budget.on_throttled()  # learnt: 475 per minute, and 500 already sent in this one
    times = []
    for _call in range(10):
        budget.acquire(100)
        times.append(fake.now)
        fake.now += 0.1
    assert min(times) >= 60  # the next call waits for the 500 to leave the window
    for t in times:  # and no later minute carries more than the learnt quota (grown by half after a quiet one)
        assert sum(100 for u in times if t - 60 < u <= t) <= 475 * 1.5


def test_waits_that_overlap_count_once():
    """Concurrent bulk calls wait for the same quota at the same time: the reported wait is wall-clock time,
    never more than the run lasted (the benchmark had reported 670 s of waiting in a 186 s run)."""
    fake = FakeClock()
    wall = WallWait(fake.clock)
    wall.begin()          # t=0: a first call waits
    fake.now = 1.0
    wall.begin()          # t=1: a second one too
    fake.now = 5.0
    wall.end()            # t=5: the first goes
    fake.now = 6.0
    wall.end()            # t=6: the second goes
    fake.now = 10.0
    wall.begin()          # t=10: a lone wait of 2 s
    fake.now = 12.0
    wall.end()
    assert wall.seconds == pytest.approx(8.0)


def test_a_pacer_reports_one_wall_clock_for_both_quotas():
    fake = FakeClock()
    pacer = Pacer("S1", 1, clock=fake.clock, sleep=fake.sleep)
    pacer.registry.acquire(95)
    pacer.query.acquire(19)
    pacer.registry.acquire(10)  # waits about a minute
    pacer.query.acquire(5)      # no wait: the registry wait let the query window pass too
    assert pacer.report()["waited_seconds"] == pytest.approx(sum(fake.slept), abs=0.1)
    assert pacer.registry.waited == pacer.query.waited


def test_eta_counts_the_minutes_the_quota_needs():
    fake = FakeClock()
    pacer = Pacer("S1", 2, clock=fake.clock, sleep=fake.sleep)  # 200 a minute
    assert Pacer(clock=fake.clock, sleep=fake.sleep).registry.eta(100) is None  # unknown quota: no estimate
    pacer.registry.take(100)
    pacer.registry.take(100)
    fake.now = 4
    assert pacer.registry.eta(100) == pytest.approx(57)  # the minute's 200 are spent: wait for the window
    assert pacer.registry.eta(500) == pytest.approx(57 + 2 * 61)
    assert pacer.registry.eta(0) == 0
