"""Configurations (automatic device management and IoT Edge deployments) and setting the modules of one edge
device: ``/configurations/{id}``, ``GET /configurations``, ``POST /configurations/testQueries`` and
``POST /devices/{id}/applyConfigurationContent`` (iot-api-2.md §2).

Recorded: create answers 200 with ``ETag: "MQ=="`` (base64 of a per-configuration counter from 1), the body
etag unquoted, ``systemMetrics.queries`` filled from the target condition, ``GET /configurations`` a bare array.
Documented: ``content`` and ``id`` cannot be updated, ``targetCondition``, ``labels``, ``priority`` and ``metrics``
can; at most 100 configurations per hub and 5 custom metrics; configuration writes are throttled to 20 per
minute per unit.  PEER (unconfirmed, the strict side taken): lower-case ids ``[a-z0-9-+%_*!']{1,128}``, an
update with changed content answers 200 and keeps the old content, an update without content is 400, If-Match
must be quoted, ``deviceContent``/``moduleContent`` keys start with ``properties.desired``, ``modulesContent``
needs ``$edgeAgent`` and cannot be mixed with ``deviceContent``, ``testQueries`` rejects ``*``.
"""

from __future__ import annotations

import base64
import copy
import re
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from . import query as _query
from . import twins as _twins
from .errors import ApiError, bad_request, not_found
from .common import document_secrets, etag_matches, is_wildcard, now_iso
from .modules import apply_module_twin, check_module_id, create_module_for_content

ID_RE = re.compile(r"^[a-z0-9\-+%_*!']{1,128}$")
MAX_CONFIGURATIONS = 100
MAX_CUSTOM_METRICS = 5
CONTENT_KINDS = ("deviceContent", "modulesContent", "moduleContent")


def _etag(counter: int) -> str:
    return base64.b64encode(str(counter).encode()).decode()


MODULE_TARGET_PREFIX = "FROM DEVICES.MODULES WHERE "


def target_query(cond: str, count: bool = False) -> str | None:
    """The query a target condition stands for: a device condition, or (module configurations) a condition in the
    form ``FROM devices.modules WHERE <condition>`` (what the CLI requires for moduleContent); ``*`` is every device,
    and an empty condition (the CLI's default) targets nothing: None."""
    head = "SELECT COUNT() AS n" if count else "SELECT *"
    text = cond.strip()
    if not text:
        return None
    if text == "*":
        return f"{head} FROM devices"
    if " ".join(text.split()[:3]).upper() + " " == MODULE_TARGET_PREFIX:
        return f"{head} {text}"
    return f"{head} FROM devices WHERE {text}"


def check_target_condition(cond: Any) -> None:
    """Recorded (the CLI's live tests): an empty condition is accepted and read back as ""."""
    if not isinstance(cond, str):
        raise bad_request("targetCondition must be a query condition, '*' or \"\"")
    text = target_query(cond)
    if text is not None:
        _query.parse(text)


def check_content(content: Any) -> dict:
    if not isinstance(content, dict) or not any(content.get(k) for k in CONTENT_KINDS):
        raise ApiError(400, "InvalidConfigurationContent", "content needs deviceContent, modulesContent or moduleContent")
    unknown = set(content) - set(CONTENT_KINDS)
    if unknown:
        raise ApiError(400, "InvalidConfigurationContent", f"content has unknown parts {sorted(unknown)}")
    if content.get("deviceContent") and content.get("modulesContent"):
        raise ApiError(400, "InvalidConfigurationContent", "deviceContent and modulesContent cannot be mixed")
    for kind in ("deviceContent", "moduleContent"):
        for path in (content.get(kind) or {}):
            if not (path == "properties.desired" or path.startswith("properties.desired.")):
                raise ApiError(400, "InvalidConfigurationContent",
                               f"{kind} path {path!r} must start with properties.desired")
    modules = content.get("modulesContent")
    if modules is not None:
        if not isinstance(modules, dict) or "$edgeAgent" not in modules:
            raise ApiError(400, "InvalidConfigurationContent", "modulesContent needs $edgeAgent")
        for name, paths in modules.items():
            if not isinstance(paths, dict):
                raise ApiError(400, "InvalidConfigurationContent", f"modulesContent.{name} must be an object")
            for path in paths:
                if not (path == "properties.desired" or path.startswith("properties.desired.")):
                    raise ApiError(400, "InvalidConfigurationContent",
                                   f"modulesContent.{name} path {path!r} must start with properties.desired")
    return content


def _system_queries(cfg_id: str, target: str, edge: bool) -> dict:
    text = target.strip()
    if text.upper().startswith("FROM "):
        targeted = f"select deviceId {text}"
    else:
        targeted = "select deviceId from devices" + ("" if text == "*" else f" where {text or 'false'}")
        if edge:  # an edge deployment targets IoT Edge devices only
            targeted = ("select deviceId from devices where capabilities.iotEdge = true"
                        + ("" if text == "*" else f" and {text or 'false'}"))
    queries = {"targetedCount": targeted,
               "appliedCount": f"select deviceId from devices where configurations.[[{cfg_id}]].status = 'Applied'"}
    if edge:
        base = "select deviceId from devices.modules where moduleId = '$edgeAgent' and configurations.[[%s]]" % cfg_id
        queries["reportedSuccessfulCount"] = f"{base}.status = 'Applied' and properties.desired.$version = properties.reported.lastDesiredVersion"
        queries["reportedFailedCount"] = f"{base}.status = 'Applied' and properties.reported.lastDesiredStatus.code != 200"
    return queries


class ConfigurationStore:
    def __init__(self, registry):
        self.reg = registry
        self.items: dict[str, dict] = {}
        self.counters: dict[str, int] = {}
        self.ready_at: dict[str, float] = {}  # configuration id -> when automatic device management applies it
        self.changes = 0
        self.adm = None  # adm.Adm, wired by app.py: applies configurations to twins

    def reset(self) -> None:
        self.items.clear()
        self.counters.clear()
        self.ready_at.clear()
        self.changes += 1

    def dump(self) -> dict:
        return {"items": self.items, "counters": self.counters}

    def load(self, data: dict) -> None:
        self.items.update(data.get("items", {}))
        self.counters.update(data.get("counters", {}))

    def _count(self, target: str, edge: bool = False) -> int:
        text = target_query(target, count=True)
        if text is None:
            return 0
        if edge and " FROM devices" in text and "devices.modules" not in text:  # a deployment targets edge devices
            text = text.replace(" FROM devices WHERE ", " FROM devices WHERE capabilities.iotEdge = true AND (", 1) + ")" \
                if " WHERE " in text else text + " WHERE capabilities.iotEdge = true"
        items, _token, _kind = self.reg.query(text, None, None)
        return items[0]["n"]

    def render(self, cfg: dict) -> dict:
        """The stored configuration with its metrics evaluated now: targetedCount from its target condition, and
        appliedCount from the twins automatic device management applied it to (adm.py)."""
        if self.adm is not None:
            self.adm.tick()
        out = copy.deepcopy(cfg)
        try:
            n = self._count(cfg["targetCondition"], edge=bool(cfg["content"].get("modulesContent")))
        except ApiError:
            n = 0
        applied = sum(1 for statuses in self.reg.twin_configurations.values() if statuses.get(cfg["id"]) == "Applied")
        out["systemMetrics"]["results"] = {"targetedCount": n, "appliedCount": applied}
        results = {}
        for name, q in (cfg["metrics"].get("queries") or {}).items():
            try:
                items, _t, _k = self.reg.query(q, 1000, None)
                results[name] = len(items)
            except ApiError:
                results[name] = 0
        out["metrics"]["results"] = results
        return out

    def put(self, cfg_id: str, body: Any, if_match: str | None) -> dict:
        if not ID_RE.match(cfg_id or ""):
            raise bad_request(f"Configuration id {cfg_id!r} is invalid: Configuration Id characters must be all "
                              "lower-case (letters, digits, - + % _ * ! ')")
        if not isinstance(body, dict):
            raise bad_request("The request body must be a JSON object", code="IotHubFormatError")
        if body.get("id") not in (None, cfg_id):
            raise bad_request(f"id {body.get('id')!r} in the body does not match {cfg_id!r} in the request")
        existing = self.items.get(cfg_id)
        create_only = if_match is None or if_match.strip() in ("", '""')
        if create_only:
            if existing is not None:
                raise ApiError(409, "ConfigurationAlreadyExists", f"Configuration {cfg_id!r} already exists")
            if len(self.items) >= MAX_CONFIGURATIONS:
                raise ApiError(400, "TooManyConfigurations",
                               f"An IoT hub holds at most {MAX_CONFIGURATIONS} configurations")
        else:
            if existing is None:
                raise ApiError(404, "ConfigurationNotFound", cfg_id)
            value = if_match.strip()
            if not is_wildcard(value):
                if not (len(value) >= 2 and value[0] == value[-1] == '"'):
                    raise ApiError(409, "ConfigurationAlreadyExists", "If-Match must be a quoted etag")  # PEER
                if not etag_matches(value, existing["etag"]):
                    raise ApiError(412, "PreconditionFailed", "PreconditionFailed")
        content = body.get("content")
        if content is None:
            raise ApiError(400, "InvalidConfigurationContent", "content is required, on updates too")
        check_content(content)
        target = body.get("targetCondition") if body.get("targetCondition") is not None else "*"
        check_target_condition(target)
        labels = body.get("labels")  # recorded: a configuration created without labels reads back labels: null
        if labels is not None and (not isinstance(labels, dict)
                                   or not all(isinstance(k, str) and isinstance(v, str) for k, v in labels.items())):
            raise bad_request("labels must map strings to strings")
        priority = body.get("priority", 0)
        if not isinstance(priority, int) or isinstance(priority, bool) or priority < 0:
            raise bad_request("priority must be a non-negative integer")
        queries = ((body.get("metrics") or {}).get("queries")) or {}
        if not isinstance(queries, dict) or len(queries) > MAX_CUSTOM_METRICS:
            raise bad_request(f"Up to {MAX_CUSTOM_METRICS} custom metrics can be defined per configuration")
        for name, q in queries.items():  # recorded: not parsed here ("select *" is accepted); testQueries checks them
            if not isinstance(q, str):
                raise bad_request(f"metric {name!r} must be a query")
        now = now_iso()
        counter = self.counters.get(cfg_id, 0) + 1
        self.counters[cfg_id] = counter
        kept_content = existing["content"] if existing else copy.deepcopy(content)  # content is immutable (PEER)
        cfg = {
            "id": cfg_id, "schemaVersion": body.get("schemaVersion"), "labels": copy.deepcopy(labels),
            "content": kept_content, "targetCondition": target,
            "createdTimeUtc": existing["createdTimeUtc"] if existing else now, "lastUpdatedTimeUtc": now,
            "priority": priority,
            "systemMetrics": {"results": {}, "queries": _system_queries(cfg_id, target,
                                                                          bool(kept_content.get("modulesContent")))},
            "metrics": {"results": {}, "queries": copy.deepcopy(queries)},
            "etag": _etag(counter),
        }
        self.items[cfg_id] = cfg
        self.changes += 1
        if existing is None or existing["targetCondition"] != target or existing["priority"] != priority:
            self.ready_at[cfg_id] = time.time() + (self.adm.delay_s if self.adm is not None else 0.0)
        return self.render(cfg)

    def get(self, cfg_id: str) -> dict:
        cfg = self.items.get(cfg_id)
        if cfg is None:
            raise ApiError(404, "ConfigurationNotFound", cfg_id)
        return self.render(cfg)

    def delete(self, cfg_id: str, if_match: str | None) -> None:
        cfg = self.items.get(cfg_id)
        if cfg is None:
            raise ApiError(404, "ConfigurationNotFound", cfg_id)
        if if_match and not is_wildcard(if_match) and not etag_matches(if_match, cfg["etag"]):
            raise ApiError(412, "PreconditionFailed", "PreconditionFailed")
        del self.items[cfg_id]
        self.counters.pop(cfg_id, None)  # a configuration created again under this id starts at "1" again
        self.ready_at.pop(cfg_id, None)
        self.changes += 1
        for statuses in self.reg.twin_configurations.values():
            statuses.pop(cfg_id, None)

    def test_queries(self, body: Any) -> dict:
        if not isinstance(body, dict):
            raise bad_request("The body must be a JSON object")
        out = {"targetConditionError": "", "customMetricQueryErrors": {}}
        cond = body.get("targetCondition")
        if cond is not None:
            if str(cond).strip() == "*":
                out["targetConditionError"] = "'*' is not a query condition"  # PEER: testQueries rejects it
            else:
                try:
                    check_target_condition(cond)
                except ApiError as err:
                    out["targetConditionError"] = err.message
        for name, q in (body.get("customMetricQueries") or {}).items():
            try:
                _query.parse(q)
                out["customMetricQueryErrors"][name] = ""
            except ApiError as err:
                out["customMetricQueryErrors"][name] = err.message
        return out


def apply_content(reg, device_id: str, body: Any) -> None:
    """POST /devices/{id}/applyConfigurationContent: the full properties.desired of $edgeAgent, $edgeHub and of every
    module listed in modulesContent, whose identity and twin the hub creates when it does not exist yet (the CLI's
    live tests list it right after set-modules, iot-api-2.md §2.6).  CHOICE: such an identity has
    ``managedBy`` of the ``apply_content_managed_by`` knob ("IotEdge" by default, the edge agent's own marker;
    ``null`` plays a hub that leaves it unset) and SAS keys."""
    dev = reg.devices.get(device_id)
    if dev is None:
        raise not_found(device_id)
    if not dev["capabilities"]["iotEdge"]:
        raise bad_request(f"Device {device_id!r}: Not an Azure IoT Edge device")
    if not isinstance(body, dict) or not isinstance(body.get("modulesContent"), dict):
        raise ApiError(400, "InvalidConfigurationContent", "ModulesContent is required")
    if body.get("moduleContent"):
        raise ApiError(400, "InvalidConfigurationContent", "ModuleContent is not applicable")
    modules = body["modulesContent"]
    for name in ("$edgeAgent", "$edgeHub"):
        if not isinstance((modules.get(name) or {}).get("properties.desired"), dict):
            raise ApiError(400, "InvalidConfigurationContent", f"modulesContent.{name} needs properties.desired")
    for name, parts in modules.items():
        desired = (parts or {}).get("properties.desired")
        if not isinstance(desired, dict):
            raise ApiError(400, "InvalidConfigurationContent", f"modulesContent.{name} needs properties.desired")
        if name not in reg.modules.get(device_id, {}):
            check_module_id(name)
        _twins.check_section("properties.desired", desired, allow_null=False)
    for name, parts in modules.items():  # validated as a whole: nothing is applied when one part is refused
        if name not in reg.modules.get(device_id, {}):
            create_module_for_content(reg, device_id, name)
        apply_module_twin(reg, device_id, name, None, parts["properties.desired"], "replace")
    reg.edge_content[device_id] = copy.deepcopy(modules)


def routes(emu) -> list:
    reg = emu.registry
    store = emu.configurations
    emu.register_secrets("document_secrets", lambda: document_secrets([c["content"] for c in store.items.values()]))
    emu.register_secrets("document_secrets", lambda: document_secrets(reg.edge_content))

    @emu.hub_route("/configurations", ["GET"], "configurations")
    async def configurations(request: Request) -> Response:
        emu.guard(request, "RegistryRead", kind="configurations")
        # "top ... Value will be overridden if greater than the maximum": a bare array, no paging (recorded)
        return emu.json([store.render(c) for _i, c in sorted(store.items.items())])

    @emu.hub_route("/configurations/testQueries", ["POST"], "test_queries")
    async def test_queries(request: Request) -> Response:
        emu.guard(request, "RegistryRead", kind=None)
        return emu.json(store.test_queries(await emu.read_json(request)))

    @emu.hub_route("/configurations/{cfg_id}", ["GET", "PUT", "DELETE"], "configuration")
    async def configuration(request: Request) -> Response:
        cfg_id = request.path_params["cfg_id"]
        if request.method == "GET":
            emu.guard(request, "RegistryRead", kind=None)
            cfg = store.get(cfg_id)
            return emu.json(cfg, etag=cfg["etag"])
        emu.guard(request, "RegistryWrite", kind="configurations")
        emu.stats.configuration_writes += 1
        if request.method == "PUT":
            cfg = store.put(cfg_id, await emu.read_json(request), request.headers.get("if-match"))
            emu.persist()
            return emu.json(cfg, etag=cfg["etag"])
        store.delete(cfg_id, request.headers.get("if-match"))
        emu.persist()
        return Response(status_code=204, headers={"Content-Length": "0"})

    @emu.hub_route("/devices/{device_id}/applyConfigurationContent", ["POST"], "apply_content")
    async def apply(request: Request) -> Response:
        emu.guard(request, "RegistryWrite+ServiceConnect", kind=None)
        body = await emu.read_json(request)
        apply_content(reg, request.path_params["device_id"], body)
        emu.stats.twin_writes += 1
        emu.stats.apply_content_calls += 1
        emu.persist()
        return Response(status_code=204, headers={"Content-Length": "0"})

    return [configurations, test_queries, configuration, apply]
