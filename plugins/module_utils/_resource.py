# -*- coding: utf-8 -*-
# Copyright: fleet.azure_iot contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""PRIVATE to fleet.azure_iot: the one converge loop every resource follows.

    read -> plan -> (check mode: stop) -> conditional write -> on a conflict, read again and re-plan (bounded)

A resource (a device identity, a Central device, a module identity, ...) supplies only what is its own:
how to read it, its pure plan function, how to write a plan and what the answer means, and what check mode
predicts.  ``changed``, check mode and the notes come from here and nowhere else:

- ``changed`` is true when a write of this task landed, or may have landed (its answer was lost, or a retry
  met 409/412/404 after an earlier attempt reached the service) and the state now matches the plan.
- A pinned etag (the ``etag`` option) turns every conflict into a failure that names it.
- When the retries of a write are spent without an answer, the failure says ``changed`` too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, List, Optional

from ansible_collections.fleet.azure_iot.plugins.module_utils._secrets import fresh_key, sas_keys
from ansible_collections.fleet.azure_iot.plugins.module_utils._errors import (
    AmbiguousWriteError,
    EtagConflict,
    IoTApiError,
)

MAX_REPLANS = 5


@dataclass
class Written:
    """A write's answer: ``ok`` with the resulting object, or a ``conflict`` (409/412/404: re-read and re-plan)."""

    ok: bool
    obj: Optional[Any] = None
    status: Optional[int] = None
    maybe_applied: bool = False  # an earlier attempt of this request reached the service unanswered
    landed: bool = False  # a first part of the write landed before a later part met a conflict


@dataclass
class Converged:
    plan: Any
    obj: Optional[Any]
    changed: bool
    attempts: int = 1
    notes: List[str] = field(default_factory=list)
    warnings: List[str] = field(default_factory=list)  # for module.warn: what a user must see (check mode guesses)
    written: Optional[Any] = None  # the first plan this task wrote (its answer may have been lost), else None
    twin: Optional[Any] = None  # identities whose twin the task manages: the twin it leaves (``_twin.twin_after``)

    @property
    def acted(self) -> Any:
        """The plan to report: the one this task wrote, not a re-plan that found its own write already applied."""
        return self.written if self.written is not None else self.plan


class KeyIntent:
    """A key rotation is decided once per task.  The first plan that rotates records the keys it intends; every
    re-plan (after a lost answer or a conflict) then asks for exactly those keys instead of rotating again, so a
    write that landed unanswered is found applied (``swap`` is not undone, ``primary`` is not rotated five times)
    and one that did not land is sent again with the same new key.

    An identity that does not exist is created with new keys of this task (``created``), not the hub's: after a
    create whose answer was lost, an identity holding exactly those keys is this task's (no rotation follows), and
    one holding others was there before (the index did not show it, or another writer made it): it is rotated."""

    def __init__(self):
        self.keys: Optional[tuple] = None  # the keys a rotation of an existing identity puts in
        self.created: Optional[tuple] = None  # the keys this task's create carries

    def spec_for(self, spec, current=None):
        """SPEC as it must be planned against CURRENT: with the intended keys in place of the rotation once decided,
        with new keys for a create, else as declared."""
        if self.keys is not None:
            return spec.with_keys(*self.keys)
        if not spec.rotate_keys or spec.state != "present":
            return spec
        if current is None:
            if self.created is None:
                self.created = (fresh_key(), fresh_key())
            return spec.with_keys(*self.created)
        if self.created is not None:
            if sas_keys(current) == self.created:
                return spec.with_keys(*self.created)  # this task's create landed: nothing to rotate
            self.created = None  # it did not land: the identity was there before it, and is rotated
        return spec

    def record(self, spec, plan) -> None:
        if self.keys is None and spec.rotate_keys and plan.after is not None and plan.action == "update":
            self.keys = (plan.after["primary_key"], plan.after["secondary_key"])


# The error codes of a conflict in a bulk call's answer or an import job's log: the device changed since it was
# read (or an earlier attempt of this write landed): re-read and re-plan, never a failure.
CONFLICT_CODES = frozenset({"PreconditionFailed", "EtagDoesNotMatch", "GenericPreconditionFailed",
                            "DeviceAlreadyExists", "DeviceNotFound"})


def is_conflict(status: int, action: str) -> bool:
    """Whether an HTTP answer to a write of ACTION ("create", "update", "delete") is a conflict: 412 (the etag moved),
    409 to a create (it exists), 404 to an update or delete (it is gone).  The one classification every resource
    and the bulk path use."""
    return status == 412 or (status == 409 and action == "create") or (status == 404 and action in ("update", "delete"))


class Resource:
    """What one kind of resource supplies to ``converge``; ``label`` names it in messages ("device 'x'")."""

    label = "resource"

    def read(self) -> Optional[Any]:
        raise NotImplementedError

    def etag(self, current: Any) -> Optional[str]:
        return current.get("etag") if isinstance(current, dict) else None

    def plan(self, current: Optional[Any], pinned_etag: Optional[str]):
        """The pure plan (may raise PlanError); with ``pinned_etag`` the write must be conditional on it."""
        raise NotImplementedError

    def write(self, plan) -> Written:
        """Send the plan's write; return ok/conflict; raise for any other answer."""
        raise NotImplementedError

    def predict(self, current: Optional[Any], plan) -> Optional[Any]:
        """What check mode says the object will be after the plan."""
        return None if plan.action == "delete" else current


def _check_pinned(res: Resource, current, pinned: Optional[str], state_present: bool) -> None:
    if pinned is None:
        return
    want = pinned.strip('"')
    if current is None:
        if state_present:
            raise EtagConflict(f"etag: {res.label} does not exist, but an etag was expected; drop the etag option "
                               "to create it")
        return
    have = res.etag(current)
    if have != want:
        raise EtagConflict(f"etag: {res.label} has etag {have!r}, not the expected {pinned!r}: it was changed by "
                           "someone else; read it again (the matching _info module) and decide, or drop the etag "
                           "option to converge anyway")


def converge(res: Resource, *, check_mode: bool, pinned_etag: Optional[str] = None,
             state_present: bool = True, notes: Optional[List[str]] = None) -> Converged:
    notes = notes if notes is not None else []
    wrote, last_action, written = False, None, None
    others = False  # a conflict this task's own lost answers do not explain: another writer is active
    try:
        for attempt in range(1, MAX_REPLANS + 1):
            current = res.read()
            _check_pinned(res, current, pinned_etag, state_present)
            plan = res.plan(current, pinned_etag)
            if plan.action == "none" or check_mode:
                if wrote and plan.action == "none":
                    notes.append(f"an earlier attempt of this task's {last_action} was applied by the service (its "
                                 "answer was lost); the state matches: changed")
                predicted = current if plan.action == "none" else res.predict(current, plan)
                return Converged(plan, predicted, wrote or (check_mode and plan.action != "none"), attempt, notes,
                                 written=written)
            last_action = plan.action
            try:
                out = res.write(plan)
            except AmbiguousWriteError as exc:
                wrote = True
                written = written or plan
                if exc.final:
                    raise
                notes.append(f"attempt {attempt}: {exc}; re-reading")
                continue
            except IoTApiError as exc:
                if getattr(exc, "changed", False):  # a first part of this write landed before the failure
                    written = written or plan
                raise
            wrote = wrote or out.maybe_applied or out.landed
            if out.maybe_applied or out.landed or out.ok:
                written = written or plan
            if not out.ok and not out.maybe_applied:
                others = True
            if out.ok:
                return Converged(plan, out.obj, True, attempt, notes, written=written)
            if pinned_etag is not None:
                raise EtagConflict(f"etag: {res.label} changed since etag {pinned_etag!r} (HTTP {out.status}); read "
                                   "it again and decide, or drop the etag option")
            notes.append(f"attempt {attempt}: HTTP {out.status} on {plan.action}; "
                         + ("an earlier attempt may have been applied, " if out.maybe_applied else "")
                         + "re-reading and re-planning")
        if others:
            raise IoTApiError(f"{res.label} kept changing while it was being written ({MAX_REPLANS} attempts); "
                              "another writer is active: run again when it is done")
        raise IoTApiError(f"{res.label}: the answers to this task's writes were lost {MAX_REPLANS} times (network or "
                          "service faults, no other writer seen); a write may have landed: read it with the _info "
                          "module, or run again")
    except (IoTApiError, EtagConflict) as exc:
        if wrote:
            exc.changed = True  # a write of this task may have landed: the failure must not hide it
        raise
