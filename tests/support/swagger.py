"""Validate emulator responses against the official IoT Hub data-plane swagger (2021-04-12).

The schema for a response is looked up in the swagger's own ``paths`` by route, method and status, so the
tests do not restate the API.  Swagger 2.0 schemas are turned into JSON Schema with three adjustments, each
what AutoRest-generated clients (the official SDKs) assume:
- every property may be null (the service returns ``"statusReason": null``, recorded in iot-api.md §1.3);
- ``{"type": "object"}`` without properties means "any JSON value" (twin tags and properties hold strings,
  numbers and objects);
- an object with declared properties admits no others (strict: the emulator must not invent fields).
"""

from __future__ import annotations

import copy
import json
import re
from functools import lru_cache
from pathlib import Path

import jsonschema

SWAGGER_PATH = Path(__file__).resolve().parents[1] / "emulator" / "data" / "iothub-service-2021-04-12.swagger.json"
DATE_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,7})?(Z|[+-]\d{2}:\d{2})?$")


@lru_cache(maxsize=1)
def swagger() -> dict:
    return json.loads(SWAGGER_PATH.read_text())


def _convert(schema):
    """Swagger 2.0 schema -> JSON Schema (walks schemas structurally, never property maps)."""
    if not isinstance(schema, dict):
        return schema
    s = {k: v for k, v in schema.items() if not k.startswith("x-") and k not in ("description", "example", "title")}
    if "$ref" in s:
        return {"$ref": s["$ref"]}
    if s.get("type") == "object" and "properties" not in s:
        return {}
    if "properties" in s:
        s["properties"] = {name: _nullable(_convert(p)) for name, p in s["properties"].items()}
        s.setdefault("additionalProperties", False)
    if isinstance(s.get("additionalProperties"), dict):
        s["additionalProperties"] = _convert(s["additionalProperties"])
    if "items" in s:
        s["items"] = _convert(s["items"])
    if "allOf" in s:
        s["allOf"] = [_convert(x) for x in s["allOf"]]
    return s


def _nullable(schema: dict) -> dict:
    if not schema:
        return schema
    if "$ref" in schema:
        return {"anyOf": [{"$ref": schema["$ref"]}, {"type": "null"}]}
    if "type" in schema and isinstance(schema["type"], str):
        s = dict(schema)
        s["type"] = [schema["type"], "null"]
        if "enum" in s:
            s["enum"] = list(s["enum"]) + [None]
        return s
    return schema


@lru_cache(maxsize=1)
def definitions() -> dict:
    return {name: _convert(copy.deepcopy(d)) for name, d in swagger()["definitions"].items()}


def response_schema(path: str, method: str, status: int) -> dict:
    op = swagger()["paths"][path][method.lower()]
    resp = op["responses"].get(str(status))
    if resp is None:
        raise AssertionError(f"the swagger documents no {status} response for {method} {path}: {list(op['responses'])}")
    schema = _convert(copy.deepcopy(resp.get("schema", {})))
    schema["definitions"] = definitions()
    return schema


_checker = jsonschema.FormatChecker()


@_checker.checks("date-time")
def _date_time(value) -> bool:
    return not isinstance(value, str) or bool(DATE_TIME.match(value))


@_checker.checks("int32")
def _int32(value) -> bool:
    return not isinstance(value, int) or -2**31 <= value < 2**31


def validate(path: str, method: str, status: int, body) -> None:
    schema = response_schema(path, method, status)
    jsonschema.Draft4Validator(schema, format_checker=_checker).validate(body)


def validate_definition(name: str, body) -> None:
    schema = {"$ref": f"#/definitions/{name}", "definitions": definitions()}
    jsonschema.Draft4Validator(schema, format_checker=_checker).validate(body)
