# -*- coding: utf-8 -*-
# Copyright: fleet.azure_iot contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""PRIVATE to fleet.azure_iot: every error the collection raises on purpose, in one hierarchy.

    FleetError
    +-- InputError          the task's options cannot work; raised before the first write, the message names the
    |   |                   option and the fix (``run_module`` reports it as is)
    |   +-- SpecError       option validation (pydantic-shaped ``errors()``; reported as "Invalid input: ...")
    |   +-- PlanError       the declared state cannot be reached from the hub's state (topology, twin limits, ...)
    |   +-- ManifestError   a deployment manifest the IoT Edge runtime would refuse
    |   +-- QueryError      a WHERE clause that cannot be read
    |   +-- AuthError       connection options (connection string, key, host)
    +-- ServiceError        what the service answered, or failed to answer
    |   +-- IoTApiError     an error answer, or a request that could not be completed (status, code, request id)
    |   |   +-- AmbiguousWriteError   a write that may have landed (lost answer): re-read before deciding
    |   |   +-- AuthorizationError    401/403: the credential lacks a right
    |   |   +-- JobFailed             an import or export job that ended failed or cancelled
    |   +-- EtagConflict    the resource changed since the etag the user pinned
    +-- ModuleFailure       a failure with structured details for fail_json (a partial result)

Any of them may carry ``changed = True``: a write of the task may have landed before it was raised.
"""

from __future__ import annotations

import sys
from typing import Any, Dict, List, Optional, Tuple


class FleetError(Exception):
    """An error this collection raises on purpose (anything else is reported as unexpected)."""

    changed = False


# --------------------------------------------------------------------------------------------- input branch
class InputError(FleetError, ValueError):
    """The task's options cannot work; nothing was written because of it.  The message names the option."""


class SpecError(InputError):
    """Invalid declared state: one (option, problem) pair per problem.  ``errors()`` has the shape of pydantic's,
    so that ``format_validation_error`` formats both alike."""

    def __init__(self, problems: List[Tuple[str, str]]):
        super().__init__("; ".join(f"{o}: {m}" if o else m for o, m in problems))
        self.problems = problems

    def errors(self) -> List[Dict[str, Any]]:
        return [{"loc": (o,) if o else (), "msg": m, "type": "value_error"} for o, m in self.problems]


class PlanError(InputError):
    """The declared state cannot be reached from the current one; the message names the option."""


class ManifestError(InputError):
    """A manifest the IoT Edge runtime would refuse; the message names the place in it."""


class QueryError(InputError):
    """A query clause that cannot be read; the message says where and how to fix it."""


class AuthError(InputError):
    """Connection options that cannot work (a malformed connection string or key)."""


# ------------------------------------------------------------------------------------------- service branch
class ServiceError(FleetError):
    """What the service answered (or did not)."""


class IoTApiError(ServiceError):
    """An error answer of IoT Hub or IoT Central, or a request that could not be completed."""

    def __init__(self, message: str, status: Optional[int] = None, code: Optional[str] = None,
                 service_message: Optional[str] = None, request_id: Optional[str] = None, attempts: int = 1):
        super().__init__(message)
        self.status = status
        self.code = code
        self.service_message = service_message
        self.request_id = request_id
        self.attempts = attempts

    def to_dict(self) -> dict:
        return {"status": self.status, "code": self.code, "message": self.service_message,
                "request_id": self.request_id, "attempts": self.attempts}


class AmbiguousWriteError(IoTApiError):
    """A write that may or may not have been applied (lost answer, 5xx): re-read before deciding.

    ``final`` is set when the retries are spent: the caller cannot re-read either and must report the task
    as failed *and* changed (the write may have landed)."""

    final = False


class AuthorizationError(IoTApiError):
    """401/403: the credential lacks a right (never retried; a bulk run stops at the first refused call)."""


class JobFailed(IoTApiError):
    """An import or export job that ended failed or cancelled."""


class EtagConflict(ServiceError):
    """The resource changed since the etag the user pinned."""


# ------------------------------------------------------------------------------------------------- reporting
class ModuleFailure(FleetError):
    """A failure to report with fail_json: a message plus structured details (a partial result)."""

    def __init__(self, msg: str, **details):
        super().__init__(msg)
        self.details = details


def format_validation_error(exc, prefix: str = "") -> str:
    """One line per problem, each naming the option; never echoes the rejected value (it may be a key)."""
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err.get("loc", ()) if p != "__root__")
        msg = err.get("msg", "invalid")
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, "):]
        if err.get("type") == "extra_forbidden":
            msg = "is not a known option"
        elif err.get("type") == "literal_error":
            msg = "must be one of " + str(err.get("ctx", {}).get("expected", ""))
        name = f"{prefix}{loc}" if loc else prefix.rstrip(".")
        if name and not msg.startswith(loc or "\0"):
            lines.append(f"{name}: {msg}")
        else:
            lines.append(msg)
    return "; ".join(lines)


def input_error_types() -> tuple:
    """The exceptions that mean "invalid option values": SpecError, and pydantic's ValidationError once a module
    that uses pydantic (IoT Central, configurations) has loaded it.  Identity specs do not import pydantic: the
    argument spec has already checked the options' types, and a task should not pay for it."""
    pyd = sys.modules.get("pydantic")
    return (SpecError, pyd.ValidationError) if pyd is not None else (SpecError,)
