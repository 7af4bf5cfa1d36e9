"""The WHERE-clause evaluator a prune uses to re-check a candidate against its GET twin: it must select exactly the
twins the hub's query selects (judged here against the emulator's query engine on random twins and clauses), and
refuse what it cannot read before any request."""

from __future__ import annotations

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from ansible_collections.fleet.azure_iot.plugins.module_utils._errors import QueryError
from ansible_collections.fleet.azure_iot.plugins.module_utils._query import compile_where

TWIN = {"deviceId": "s-1", "status": "enabled", "tags": {"fleet": "A", "site": "it's", "n": 3, "on": True},
        "capabilities": {"iotEdge": False}, "parentScopes": ["ms-azure-iot-edge://gw-1"],
        "properties": {"desired": {"x": {"y": 1.5}}}}


@pytest.mark.parametrize("clause, expected", [
    ("tags.fleet = 'A'", True),
    ("tags.fleet = 'B'", False),
    ("tags.fleet != 'B' AND tags.n >= 3", True),
    ("tags.site = 'it\\'s'", True),
    ("tags.missing = 'A'", False),
    ("tags.missing != 'A'", False),  # a comparison with an undefined property is false
    ("NOT (tags.fleet = 'A')", False),
    ("tags.fleet IN ['B', 'A']", True),
    ("tags.fleet NOT IN ['B', 'A']", False),
    ("is_defined(tags.on) AND tags.on = true", True),
    ("array_contains(parentScopes, 'ms-azure-iot-edge://gw-1')", True),
    ("STARTS_WITH(deviceId, 's-') OR tags.fleet = 'B'", True),
    ("properties.desired.x.y > 1", True),
    ("capabilities.iotEdge = false", True),
    ("tags.on = 'true'", False),
])
def test_clauses(clause, expected):
    assert compile_where(clause)(TWIN) is expected


@pytest.mark.parametrize("clause, fragment", [
    ("tags.site = 'it''s'", "\\'"),
    ("tags.group = 'a'", "[[group]]"),
    ("tags.fleet = ", "the end"),
    ("tags.fleet = 'A' AND", "the end"),
    ("soundex(tags.fleet) = 1", "cannot be evaluated"),
    ("tags.fleet = 'a\\q'", "unknown escape"),
    ("", "empty"),
])
def test_refused_with_the_fix(clause, fragment):
    with pytest.raises(QueryError, match=None) as err:
        compile_where(clause)
    assert fragment in str(err.value)


def test_escaped_reserved_word():
    assert compile_where("tags.[[group]] = 'g'")({"tags": {"group": "g"}})


# ------------------------------------------------------------------ the same answers as the hub's engine
VALUES = st.one_of(st.sampled_from(["A", "B", "it's", ""]), st.integers(-2, 2), st.booleans(), st.none())
PATHS = st.sampled_from(["tags.fleet", "tags.n", "tags.missing", "status", "capabilities.iotEdge",
                         "properties.desired.x"])


def _lit(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "null"
    if isinstance(v, str):
        return "'" + v.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return str(v)


atoms = st.one_of(
    st.builds(lambda p, op, v: f"{p} {op} {_lit(v)}", PATHS, st.sampled_from(["=", "!=", "<", ">=", "<>"]), VALUES),
    st.builds(lambda p, vs, neg: f"{p} {'NOT IN' if neg else 'IN'} [{', '.join(_lit(v) for v in vs)}]",
              PATHS, st.lists(VALUES, max_size=3), st.booleans()),
    st.builds(lambda f, p: f"{f}({p})", st.sampled_from(["is_defined", "is_null"]), PATHS),
    st.builds(lambda p, v: f"startswith({p}, {_lit(v)})", PATHS, st.sampled_from(["A", "i", ""])),
)
clauses = st.recursive(atoms, lambda inner: st.one_of(
    st.builds(lambda a, b, op: f"({a}) {op} ({b})", inner, inner, st.sampled_from(["AND", "OR"])),
    st.builds(lambda a: f"NOT ({a})", inner)), max_leaves=6)
twins = st.fixed_dictionaries({
    "deviceId": st.just("d"), "status": st.sampled_from(["enabled", "disabled"]),
    "capabilities": st.fixed_dictionaries({"iotEdge": st.booleans()}),
    "tags": st.dictionaries(st.sampled_from(["fleet", "n"]), VALUES, max_size=2),
    "properties": st.fixed_dictionaries({"desired": st.dictionaries(st.just("x"), VALUES, max_size=1)})})


@settings(max_examples=300, deadline=None)
@given(clause=clauses, twin=twins)
@example(clause="tags.fleet >= false", twin={"deviceId": "d", "status": "enabled", "capabilities": {"iotEdge": False},
                                             "tags": {"fleet": 0}, "properties": {"desired": {}}})  # once disagreed
def test_selects_what_the_emulator_query_engine_selects(clause, twin):
    engine = pytest.importorskip("iot_emulator.query")
    hub = engine.parse("SELECT * FROM devices WHERE " + clause).where
    assert compile_where(clause)(twin) is bool(hub(twin)), clause
