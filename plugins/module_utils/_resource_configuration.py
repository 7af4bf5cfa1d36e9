# -*- coding: utf-8 -*-
# Copyright: fleet.azure_iot contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""PRIVATE to fleet.azure_iot: the configuration resource (automatic device management and IoT Edge deployments,
``/configurations/{id}``) on the shared converge loop.

Rules (iot-api-2.md §2.2-2.4): ids are lower case; ``content`` cannot change after creation (the service answers
200 and keeps the old content, so a changed content is refused here, or deleted and re-created under the same id
with ``recreate``); ``targetCondition``, ``labels``, ``priority`` and ``metrics`` are updated in place with a
read-modify-write of the whole configuration and ``If-Match`` of the quoted etag; every update carries the
content."""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional

from ansible_collections.fleet.azure_iot.plugins.module_utils._diff import changed_paths
from ansible_collections.fleet.azure_iot.plugins.module_utils._errors import ManifestError, PlanError
from ansible_collections.fleet.azure_iot.plugins.module_utils._http import error_from_response, maybe_applied
from ansible_collections.fleet.azure_iot.plugins.module_utils._iothub import IoTHubClient
from ansible_collections.fleet.azure_iot.plugins.module_utils._manifest import check_manifest, compare_form, send_form
from ansible_collections.fleet.azure_iot.plugins.module_utils._pydantic import (
    BaseModel,
    ConfigDict,
    field_validator,
    model_validator,
)
from ansible_collections.fleet.azure_iot.plugins.module_utils._resource import (
    converge,
    Converged,
    is_conflict,
    Resource,
    Written,
)

ID_RE = re.compile(r"^[a-z0-9\-+%_*!']{1,128}$")
MAX_METRICS = 5
CONTENT_KINDS = ("modulesContent", "deviceContent", "moduleContent")


class ConfigurationSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    state: str = "present"
    labels: Optional[Dict[str, str]] = None
    content: Optional[Dict[str, Any]] = None
    target_condition: Optional[str] = None
    priority: Optional[int] = None
    metrics: Optional[Dict[str, str]] = None
    recreate: bool = False

    @field_validator("id")
    @classmethod
    def _id(cls, v):
        if not ID_RE.match(v or ""):
            raise ValueError(f"{v!r} is not a valid configuration id: up to 128 lower-case letters, digits and "
                             "- + % _ * ! ' (IoT Hub: 'Configuration Id characters must be all lower-case')")
        return v

    @field_validator("priority")
    @classmethod
    def _priority(cls, v):
        if v is not None and v < 0:
            raise ValueError("must be 0 or more (the highest number wins)")
        return v

    @field_validator("metrics")
    @classmethod
    def _metrics(cls, v):
        if v is not None and len(v) > MAX_METRICS:
            raise ValueError(f"{len(v)} custom metrics; IoT Hub allows {MAX_METRICS} per configuration")
        return v

    @field_validator("content")
    @classmethod
    def _content(cls, v):
        if v is None:
            return None
        if isinstance(v.get("content"), dict):
            v = v["content"]
        kinds = [k for k in CONTENT_KINDS if v.get(k)]
        unknown = set(v) - set(CONTENT_KINDS)
        if unknown or not kinds:
            raise ValueError("must hold modulesContent (an IoT Edge deployment), deviceContent or moduleContent")
        if "deviceContent" in kinds and "modulesContent" in kinds:
            raise ValueError("deviceContent and modulesContent cannot be mixed in one configuration")
        for kind in ("deviceContent", "moduleContent"):
            for path in v.get(kind) or {}:
                if not (path == "properties.desired" or path.startswith("properties.desired.")):
                    raise ValueError(f"{kind}: path {path!r} must start with properties.desired")
        modules = v.get("modulesContent")
        if modules:
            if "$edgeAgent" not in modules:
                raise ValueError("modulesContent needs $edgeAgent")
            layered = any(k != "properties.desired" for part in modules.values() if isinstance(part, dict) for k in part)
            if not layered:  # a standard deployment is a whole manifest; a layered one sets dot paths
                try:
                    check_manifest(modules)
                except ManifestError as exc:
                    raise ValueError(str(exc)) from None
        return v

    @model_validator(mode="after")
    def _rules(self):
        if self.state not in ("present", "absent"):
            raise ValueError("state must be present or absent")
        return self


def _norm_content(content: Optional[Dict[str, Any]]) -> Optional[Dict[str, Any]]:
    """Content made comparable: a standard manifest's createOptions as JSON objects."""
    if content is None:
        return None
    out = {}
    for kind in CONTENT_KINDS:
        part = content.get(kind)
        if not part:
            continue
        if kind == "modulesContent":
            out[kind] = {name: ({k: compare_form(name, d) if k == "properties.desired" else d for k, d in paths.items()}
                                if isinstance(paths, dict) else paths) for name, paths in part.items()}
        else:
            out[kind] = part
    return out


def _send_content(content: Dict[str, Any]) -> Dict[str, Any]:
    out = copy.deepcopy(content)
    modules = out.get("modulesContent")
    if modules and all(set(p) <= {"properties.desired"} for p in modules.values() if isinstance(p, dict)):
        out["modulesContent"] = send_form(modules)
    return out


@dataclass
class ConfigurationPlan:
    id: str
    action: str  # create | update | recreate | delete | none
    changes: Dict[str, tuple] = field(default_factory=dict)
    body: Optional[Dict[str, Any]] = None
    etag: Optional[str] = None


def plan_configuration(spec: ConfigurationSpec, current: Optional[Dict[str, Any]]) -> ConfigurationPlan:
    """Desired + current -> create / update (in place) / recreate (content changed, with ``recreate``) / delete."""
    etag = (current or {}).get("etag")
    if spec.state == "absent":
        return ConfigurationPlan(spec.id, "delete" if current else "none", {"state": ("present", "absent")} if current
                                 else {}, None, etag)
    wanted = {"labels": spec.labels, "target_condition": spec.target_condition, "priority": spec.priority,
              "metrics": spec.metrics}
    api = {"labels": "labels", "target_condition": "targetCondition", "priority": "priority"}
    if current is None:
        if spec.content is None:
            raise PlanError(f"content: configuration {spec.id!r} does not exist; creating it needs content "
                            "(or content_file)")
        body = {"id": spec.id, "content": _send_content(spec.content),
                "targetCondition": spec.target_condition or "*", "priority": spec.priority or 0,
                "labels": spec.labels or {}, "metrics": {"queries": spec.metrics or {}}}
        changes = {k: (None, v) for k, v in wanted.items() if v is not None}
        changes["content"] = (None, "(new)")
        return ConfigurationPlan(spec.id, "create", changes, body, None)
    have = {"labels": current.get("labels") or {}, "target_condition": current.get("targetCondition"),
            "priority": current.get("priority", 0), "metrics": (current.get("metrics") or {}).get("queries") or {}}
    changes = {k: (have[k], v) for k, v in wanted.items() if v is not None and v != have[k]}
    if spec.content is not None and _norm_content(spec.content) != _norm_content(current.get("content")):
        paths = changed_paths(_norm_content(current.get("content")), _norm_content(spec.content))
        if not spec.recreate:
            shown = "; ".join(f"{p}: {old!r} -> {new!r}" for p, (old, new) in list(paths.items())[:10])
            raise PlanError(f"content: configuration {spec.id!r} has other content in the hub, and IoT Hub does not "
                            "change a configuration's content after creation (an update would keep the old one). "
                            "Use a new id (the usual way to roll out a deployment), or set recreate=true to delete "
                            f"and re-create it under the same id. It differs at {len(paths)} path(s): {shown}"
                            + (" ..." if len(paths) > 10 else ""))
        body = {"id": spec.id, "content": _send_content(spec.content),
                "targetCondition": spec.target_condition or current.get("targetCondition") or "*",
                "priority": spec.priority if spec.priority is not None else current.get("priority", 0),
                "labels": spec.labels if spec.labels is not None else current.get("labels") or {},
                "metrics": {"queries": spec.metrics if spec.metrics is not None else have["metrics"]}}
        changes["content"] = ({k: v[0] for k, v in paths.items()}, {k: v[1] for k, v in paths.items()})
        return ConfigurationPlan(spec.id, "recreate", changes, body, etag)
    if not changes:
        return ConfigurationPlan(spec.id, "none", {}, None, etag)
    body = {k: copy.deepcopy(v) for k, v in current.items() if k not in ("systemMetrics",)}
    for key, (_old, new) in changes.items():
        if key == "metrics":
            body["metrics"] = {"queries": new}
        else:
            body[api[key]] = new
    return ConfigurationPlan(spec.id, "update", changes, body, etag)


class ConfigurationResource(Resource):
    def __init__(self, client: IoTHubClient, spec: ConfigurationSpec, hide: Optional[Callable[[Any], None]] = None):
        self.client = client
        self.spec = spec
        self.label = f"configuration {spec.id!r}"
        self.hide = hide  # called with what the hub holds: its secrets are masked in every output
        self.checked = False  # the queries were tested by the hub (once per task)
        self.warnings: List[str] = []

    def read(self):
        current = self.client.get_configuration(self.spec.id)
        if self.hide is not None and current is not None:
            self.hide(current)
        return current

    def plan(self, current, pinned_etag):
        plan = plan_configuration(self.spec, current)
        if pinned_etag is not None and plan.etag is not None:
            plan.etag = pinned_etag.strip('"')
        if plan.action in ("create", "update", "recreate") and not self.checked:
            self.checked = True
            self._check_queries(plan)
        return plan

    def _check_queries(self, plan) -> None:
        """Before any write, in check mode too: the hub tests the target condition and the metric queries
        (testQueries: a condition it refuses fails here, naming the option), a target that matches no device is
        a warning with the count, and so is a tie in priority with an overlapping configuration of the same kind."""
        body = plan.body or {}
        target = body.get("targetCondition")
        metrics = (body.get("metrics") or {}).get("queries") or {}
        tested = target if target not in (None, "", "*") else None
        if tested is not None or metrics:
            answer = self.client.test_queries(tested, metrics)
            if answer.get("targetConditionError"):
                raise PlanError(f"target_condition: IoT Hub refuses {target!r}: {answer['targetConditionError']}; "
                                "fix the condition (for example tags.site = 'plant-7', with tags. and quotes)")
            for name, error in sorted((answer.get("customMetricQueryErrors") or {}).items()):
                if error:
                    raise PlanError(f"metrics.{name}: IoT Hub refuses the query {metrics.get(name)!r}: {error}")
        if target is None:
            return
        source = target_source(target)
        if source is None:
            self.warnings.append(f"target_condition: configuration {self.spec.id!r} has an empty target condition: "
                                 "it targets no device")
            return
        n = self.client.count(source)
        if n == 0:
            self.warnings.append(f"target_condition {target!r} of configuration {self.spec.id!r} matches no device "
                                 "now (0): the configuration targets nothing until one matches. Check the spelling "
                                 "(tags.site = 'plant-7': with tags., and the value quoted)")
        self._warn_priority_ties(body, target, source)

    def _warn_priority_ties(self, body: Dict[str, Any], target: str, source: str) -> None:
        kind = content_kind(body.get("content") or {})
        for other in self.client.list_configurations():
            if other.get("id") == self.spec.id or other.get("priority", 0) != body.get("priority", 0):
                continue
            if content_kind(other.get("content") or {}) != kind:
                continue
            other_source = target_source(other.get("targetCondition") or "")
            if other_source is None or other_source.split(" WHERE ")[0] != source.split(" WHERE ")[0]:
                continue
            both = [s.split(" WHERE ", 1)[1] for s in (source, other_source) if " WHERE " in s]
            where = " AND ".join(f"({c})" for c in both)
            n = self.client.count(source.split(" WHERE ")[0] + (f" WHERE {where}" if where else ""))
            if n:
                self.warnings.append(
                    f"priority: configuration {self.spec.id!r} and {other['id']!r} both have priority "
                    f"{body.get('priority', 0)} and {n} device(s) match both target conditions: IoT Hub applies the "
                    "one created most recently, so re-creating either changes which one wins. Give them different "
                    "priorities (see docs/edge-deployments.md)")

    def write(self, plan) -> Written:
        landed = False
        if plan.action in ("delete", "recreate"):
            r = self.client.delete_configuration(plan.id, plan.etag)
            if r.status_code not in (200, 204):
                if is_conflict(r.status_code, "delete"):
                    return Written(False, None, r.status_code, maybe_applied(r))
                raise error_from_response(r, f"delete configuration {plan.id!r}")
            if plan.action == "delete":
                return Written(True, None, r.status_code, maybe_applied(r))
            landed = True
        r = self.client.put_configuration(plan.id, plan.body, plan.etag if plan.action == "update" else None)
        if r.status_code in (200, 201):
            return Written(True, r.json(), r.status_code, maybe_applied(r), landed=landed)
        if is_conflict(r.status_code, "update" if plan.action == "update" else "create"):
            return Written(False, None, r.status_code, maybe_applied(r), landed=landed)
        raise error_from_response(r, f"{plan.action} configuration {plan.id!r}")

    def predict(self, current, plan):
        if plan.action == "delete":
            return None
        out = dict(current or {})
        out.update(plan.body or {})
        return out


def ensure_configuration(client: IoTHubClient, spec: ConfigurationSpec, *, check_mode: bool,
                         pinned_etag: Optional[str] = None, hide: Optional[Callable[[Any], None]] = None) -> Converged:
    res = ConfigurationResource(client, spec, hide)
    out = converge(res, check_mode=check_mode, pinned_etag=pinned_etag, state_present=spec.state == "present")
    out.warnings = res.warnings
    return out


def target_source(target: str) -> Optional[str]:
    """``FROM ... [WHERE ...]`` of a target condition: a device condition, ``*`` (every device) or a module
    configuration's ``FROM devices.modules WHERE ...``; None for an empty one (it targets nothing)."""
    text = (target or "").strip()
    if not text:
        return None
    if text == "*":
        return "FROM devices"
    if text.upper().startswith("FROM "):
        return text
    return f"FROM devices WHERE {text}"


def content_kind(content: Dict[str, Any]) -> str:
    """Configurations compete only with their own kind: edge deployments, device configurations, module ones."""
    return next((k for k in CONTENT_KINDS if content.get(k)), "")
