"""The one converge loop (_resource.converge), over a stand-in resource: a lost answer is a change, re-plans are
bounded, a pinned etag turns every conflict into a failure, and check mode writes nothing."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from ansible_collections.fleet.azure_iot.plugins.module_utils._errors import AmbiguousWriteError, EtagConflict, IoTApiError
from ansible_collections.fleet.azure_iot.plugins.module_utils._resource import (
    MAX_REPLANS,
    Resource,
    Written,
    converge,
    is_conflict,
)


@dataclass
class Plan:
    action: str
    value: int = 0


class Counter(Resource):
    """A value in a store with an etag; the plan sets it to WANT.  ``answers`` scripts what each write does."""

    label = "counter 'c'"

    def __init__(self, want, value=0, answers=()):
        self.want, self.value, self.etag_n = want, value, 1
        self.answers = list(answers)  # per write: "ok", "lost" (lands, answer lost), "lost-final", "conflict",
        self.writes = 0               # "moved" (another writer changes it first, then a conflict)

    def read(self):
        return {"value": self.value, "etag": str(self.etag_n)}

    def plan(self, current, pinned_etag):
        return Plan("none") if current["value"] == self.want else Plan("update", self.want)

    def _land(self, value):
        self.value, self.etag_n = value, self.etag_n + 1

    def write(self, plan):
        self.writes += 1
        answer = self.answers.pop(0) if self.answers else "ok"
        if answer == "ok":
            self._land(plan.value)
            return Written(True, self.read())
        if answer in ("lost", "lost-final"):
            self._land(plan.value)
            exc = AmbiguousWriteError("update counter 'c': connection dropped; the write may have been applied")
            exc.final = answer == "lost-final"
            raise exc
        if answer == "moved":
            self._land(self.value + 100)  # another writer
            return Written(False, None, 412)
        return Written(False, None, 412)  # "conflict"


def test_a_write_that_lands_is_changed_and_a_rerun_is_not():
    res = Counter(want=5)
    out = converge(res, check_mode=False)
    assert out.changed and res.value == 5 and res.writes == 1 and out.acted.action == "update"
    again = converge(res, check_mode=False)
    assert not again.changed and res.writes == 1 and again.plan.action == "none"


def test_a_lost_answer_whose_write_landed_is_changed_with_a_note():
    res = Counter(want=5, answers=["lost"])
    out = converge(res, check_mode=False)
    assert out.changed and res.writes == 1 and res.value == 5
    assert out.acted.action == "update"  # the plan this task wrote, not the re-plan that found it applied
    assert any("answer was lost" in n for n in out.notes), out.notes


def test_spent_retries_on_a_write_fail_and_say_changed():
    res = Counter(want=5, answers=["lost-final"])
    with pytest.raises(AmbiguousWriteError) as err:
        converge(res, check_mode=False)
    assert err.value.changed is True


def test_another_writer_is_replanned_until_the_bound_then_named():
    res = Counter(want=5, answers=["moved"] * (MAX_REPLANS + 3))
    with pytest.raises(IoTApiError) as err:
        converge(res, check_mode=False)
    assert res.writes == MAX_REPLANS and "another writer is active" in str(err.value)
    assert not getattr(err.value, "changed", False)  # none of this task's writes landed


def test_a_conflict_then_success_replans_once():
    res = Counter(want=5, answers=["moved", "ok"])
    out = converge(res, check_mode=False)
    assert out.changed and res.value == 5 and res.writes == 2 and out.attempts == 2


def test_lost_answers_every_time_are_reported_as_such_and_changed():
    res = Counter(want=5)
    res.plan = lambda current, pinned: Plan("update", 5)  # never converges: every write's answer is lost
    res.answers = ["lost"] * MAX_REPLANS
    with pytest.raises(IoTApiError) as err:
        converge(res, check_mode=False)
    assert "were lost" in str(err.value) and err.value.changed is True


def test_a_pinned_etag_that_moved_fails_before_any_write():
    res = Counter(want=5)
    with pytest.raises(EtagConflict) as err:
        converge(res, check_mode=False, pinned_etag='"7"')
    assert res.writes == 0 and "has etag '1'" in str(err.value) and "drop the etag option" in str(err.value)


def test_a_pinned_etag_turns_a_conflict_into_a_failure():
    res = Counter(want=5, answers=["conflict"])
    with pytest.raises(EtagConflict):
        converge(res, check_mode=False, pinned_etag='"1"')
    assert res.writes == 1


def test_a_pinned_etag_on_a_missing_resource_is_refused_for_state_present():
    res = Counter(want=5)
    res.read = lambda: None
    with pytest.raises(EtagConflict, match="does not exist"):
        converge(res, check_mode=False, pinned_etag="1", state_present=True)


def test_check_mode_writes_nothing_and_predicts():
    res = Counter(want=5)
    out = converge(res, check_mode=True)
    assert out.changed and res.writes == 0 and res.value == 0
    assert not converge(Counter(want=0), check_mode=True).changed


@pytest.mark.parametrize("status,action,conflict", [
    (412, "update", True), (412, "delete", True), (409, "create", True), (409, "update", False),
    (404, "update", True), (404, "delete", True), (404, "create", False), (400, "update", False),
])
def test_one_conflict_classification(status, action, conflict):
    assert is_conflict(status, action) is conflict
