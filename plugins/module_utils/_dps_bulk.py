# -*- coding: utf-8 -*-
# Copyright: fleet.azure_iot contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""PRIVATE to fleet.azure_iot: many individual enrollments converged through the DPS's bulk operation
(dps_enrollment_bulk).

    validate every entry (before any request) -> read: up to DIRECT_READS enrollments one by one (GET), more with a
    query of the instance (pages) -> plan each (``plan_enrollment``, the plan dps_enrollment uses) -> after a
    query, GET each one the plan would write (the query is not trusted for a write) and plan again -> write:
    creates with ``mode: create`` and updates with ``mode: updateIfMatchETag`` (each
    carrying the etag read), at most 10 per call; deletes one by one with If-Match -> the items that met a
    conflict (409 to a create, 412, 404) are read and planned again (bounded) -> the rest of the per-item errors
    are ``failed_enrollments``; the other items are applied.

A bulk call is safe to repeat (a create that landed meets 409 per item, an update 412), so a lost answer is
re-sent, and whatever it did is found by the re-read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from ansible_collections.fleet.azure_iot.plugins.module_utils._dps import BULK_MAX, DpsClient
from ansible_collections.fleet.azure_iot.plugins.module_utils._dps_enrollment import (
    EnrollmentPlan,
    EnrollmentSpec,
)
from ansible_collections.fleet.azure_iot.plugins.module_utils._errors import SpecError
from ansible_collections.fleet.azure_iot.plugins.module_utils._http import error_from_response, maybe_applied
from ansible_collections.fleet.azure_iot.plugins.module_utils._resource import MAX_REPLANS, is_conflict
from ansible_collections.fleet.azure_iot.plugins.module_utils._resource_dps_enrollment import plan_with_keys

ENTRY_EXTRA = ("capabilities",)  # entry keys that are not EnrollmentSpec options (capabilities.iot_edge)
DIRECT_READS = 20  # up to this many declared enrollments are read with GETs instead of a query of the instance


def parse_entries(entries: Any) -> List[EnrollmentSpec]:
    """Every entry of ``enrollments`` checked (unknown keys, types, rules, duplicates); all problems at once,
    each naming the entry by its index and registration id."""
    if not isinstance(entries, list):
        raise SpecError([("enrollments", "must be a list of dictionaries")])
    problems: List[Tuple[str, str]] = []
    specs: List[EnrollmentSpec] = []
    seen: Dict[str, int] = {}
    allowed = (set(EnrollmentSpec.OPTIONS) - {"iot_edge", "rotate_keys"}) | set(ENTRY_EXTRA)
    for i, entry in enumerate(entries):
        label = f"enrollments[{i}]"
        if not isinstance(entry, dict):
            problems.append((label, "must be a dictionary with the options of dps_enrollment"))
            continue
        rid = entry.get("registration_id")
        if isinstance(rid, str):
            label += f" ({rid})"
        unknown = sorted(set(entry) - allowed)
        if "rotate_keys" in unknown:
            problems.append((label, "rotate_keys is a deliberate action on one enrollment: use dps_enrollment"))
            unknown.remove("rotate_keys")
        if unknown:
            problems.append((label, f"unknown options {', '.join(unknown)}"))
            continue
        caps = entry.get("capabilities")
        if caps is not None and (not isinstance(caps, dict) or set(caps) != {"iot_edge"}):
            problems.append((label, "capabilities takes iot_edge (a boolean)"))
            continue
        values = {k: v for k, v in entry.items() if k != "capabilities"}
        if caps is not None:
            values["iot_edge"] = caps["iot_edge"]
        try:
            spec = EnrollmentSpec(**values)
        except SpecError as exc:
            problems += [(f"{label}.{o}" if o else label, m) for o, m in exc.problems]
            continue
        key = spec.registration_id.lower()
        if key in seen:
            problems.append((label, f"registration_id is declared twice (also enrollments[{seen[key]}]; ids are "
                                    "case-insensitive)"))
            continue
        seen[key] = i
        specs.append(spec)
    if problems:
        raise SpecError(problems)
    return specs


@dataclass
class BulkOutcome:
    created: List[str] = field(default_factory=list)
    updated: List[str] = field(default_factory=list)
    deleted: List[str] = field(default_factory=list)
    unchanged: List[str] = field(default_factory=list)
    failed: List[Dict[str, Any]] = field(default_factory=list)
    plans: Dict[str, EnrollmentPlan] = field(default_factory=dict)
    notes: List[str] = field(default_factory=list)
    maybe_written: bool = False  # a write whose answer was lost (it may have landed)
    bulk_calls: int = 0
    seen_keys: set = field(default_factory=set)

    @property
    def changed(self) -> bool:
        return bool(self.created or self.updated or self.deleted or self.maybe_written)


class BulkEnrollments:
    """The converge loop of dps_enrollment_bulk (see the module docstring)."""

    def __init__(self, client: DpsClient, specs: List[EnrollmentSpec], check_mode: bool):
        self.client, self.specs, self.check_mode = client, specs, check_mode
        self.out = BulkOutcome()

    def _plan(self, spec: EnrollmentSpec, current: Optional[Dict[str, Any]]) -> EnrollmentPlan:
        return plan_with_keys(self.client, spec, current, self.out.seen_keys)

    def run(self) -> BulkOutcome:
        by_id = {s.item_id.lower(): s for s in self.specs}
        # A few enrollments are read one by one (consistent reads: no second read before a write); more are listed
        # with a query (pages of 100, however many enrollments the instance holds) and re-read before a write.
        direct = len(by_id) <= DIRECT_READS
        if direct:
            read = {key: self.client.get(spec.item_id) for key, spec in by_id.items()}
        else:
            read = {e["registrationId"].lower(): e for e in self.client.query() if e["registrationId"].lower() in by_id}
        pending, first = [], {}
        for key, spec in by_id.items():
            plan = self._plan(spec, read.get(key))
            if plan.action == "none":
                self.out.unchanged.append(spec.item_id)
                self.out.plans[spec.item_id] = plan
            else:
                pending.append(spec)
                first[key] = plan
        for attempt in range(1, MAX_REPLANS + 1):
            if not pending:
                break
            plans = []
            for spec in pending:  # the query is not trusted for a write: read it again, consistently
                key = spec.item_id.lower()
                plan = first.pop(key) if direct and key in first else self._plan(spec, self.client.get(spec.item_id))
                self.out.plans[spec.item_id] = plan
                if plan.action == "none":
                    self.out.unchanged.append(spec.item_id)
                else:
                    plans.append((spec, plan))
            if self.check_mode:
                self._record(plans)
                return self.out
            conflicts = self._write(plans)
            if conflicts:
                self.out.notes.append(f"round {attempt}: {len(conflicts)} enrollments changed since they were read "
                                      "(or an earlier attempt landed); re-reading and re-planning them")
            pending = conflicts
        for spec in pending:
            self.out.failed.append({"registrationId": spec.item_id, "errorCode": None, "operation": "converge",
                                    "errorStatus": f"kept changing while it was written ({MAX_REPLANS} rounds)"})
        self._settle()
        return self.out

    def _record(self, plans) -> None:
        """Check mode: what the real run would write."""
        for spec, plan in plans:
            {"create": self.out.created, "update": self.out.updated, "delete": self.out.deleted}[plan.action].append(
                spec.item_id)

    def _settle(self) -> None:
        done = set(self.out.created) | set(self.out.updated) | set(self.out.deleted) | {
            f["registrationId"] for f in self.out.failed}
        self.out.unchanged = sorted(set(self.out.unchanged) - done)

    def _write(self, plans) -> List[EnrollmentSpec]:
        conflicts: List[EnrollmentSpec] = []
        for mode, action, bucket in (("create", "create", self.out.created),
                                     ("updateIfMatchETag", "update", self.out.updated)):
            batch = [(s, p) for s, p in plans if p.action == action]
            for start in range(0, len(batch), BULK_MAX):
                chunk = batch[start:start + BULK_MAX]
                items = [dict(p.body, etag=p.etag) if action == "update" else p.body for _s, p in chunk]
                r = self.client.bulk(mode, items)
                self.out.bulk_calls += 1
                if maybe_applied(r):
                    self.out.maybe_written = True
                if r.status_code != 200:
                    raise error_from_response(r, f"bulk {mode} of {len(items)} enrollments")
                answer = r.json()
                errors = {str(e.get("registrationId", "")).lower(): e for e in answer.get("errors") or []}
                if not answer.get("isSuccessful") and not errors:
                    raise error_from_response(r, f"bulk {mode}: the service answered isSuccessful false without "
                                                 "per-item errors")
                for spec, _plan in chunk:
                    err = errors.get(spec.item_id.lower())
                    if err is None:
                        bucket.append(spec.item_id)
                    elif is_conflict(_family(err.get("errorCode")), action):
                        conflicts.append(spec)
                    else:
                        self.out.failed.append({"registrationId": spec.item_id, "errorCode": err.get("errorCode"),
                                                "errorStatus": err.get("errorStatus"), "operation": mode})
        for spec, plan in plans:
            if plan.action != "delete":
                continue
            r = self.client.delete(spec.item_id, plan.etag)
            if maybe_applied(r):
                self.out.maybe_written = True
            if r.status_code == 204:
                self.out.deleted.append(spec.item_id)
            elif is_conflict(r.status_code, "delete"):
                conflicts.append(spec)
            else:
                err = error_from_response(r, f"delete enrollment {spec.item_id!r}")
                self.out.failed.append({"registrationId": spec.item_id, "errorCode": err.code,
                                        "errorStatus": err.service_message, "operation": "delete"})
        return conflicts


def _family(code: Any) -> int:
    """The HTTP status of a six-digit DPS error code (409201 -> 409)."""
    try:
        return int(str(code)[:3])
    except ValueError:
        return 0
