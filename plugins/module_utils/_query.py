# -*- coding: utf-8 -*-
# Copyright: fleet.azure_iot contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""PRIVATE to fleet.azure_iot: a WHERE clause of the IoT Hub query language, evaluated against one twin.

Why: a prune selects its candidates with a query, and the query index lags behind writes (iot-api.md §8).  Before
a prune deletes a device, the device's twin is read with GET (strongly consistent) and the same WHERE clause is
evaluated against it here: a device another job re-tagged out of the fleet moments ago is no longer selected.

``compile_where(text)`` parses the clause once (raising ``QueryError`` with the position and the fix for what it
cannot read, before any request) and returns ``match(twin) -> bool``.  The grammar is the part of the language a
selector uses: comparisons (``= != <> < > <= >=``), ``[NOT] IN [...]``, ``AND``, ``OR``, ``NOT``, parentheses,
property paths (reserved words escaped as ``[[name]]``), string literals with the documented ``\\'``, ``\\"`` and
``\\\\`` escapes, numbers, ``true``/``false``/``null``, and the functions ``IS_DEFINED``, ``IS_NULL``,
``ARRAY_CONTAINS``, ``STARTSWITH``/``STARTS_WITH``, ``ENDSWITH``/``ENDS_WITH``, ``IS_STRING``, ``IS_NUMBER``,
``IS_BOOL``, ``IS_OBJECT``.  A comparison with an undefined property is false (as in the service).
"""

from __future__ import annotations

import re
from typing import Any, Callable, List, Tuple
from ansible_collections.fleet.azure_iot.plugins.module_utils._errors import QueryError

RESERVED = frozenset("""ALL AND AS ASC AVG BY COUNT DESC DEVICES_JOBS DEVICES_MODULES DEVICES ENDS_WITH FALSE FROM
GROUP IN IS_BOOL IS_DEFINED IS_NULL IS_NUMBER IS_OBJECT IS_PRIMITIVE IS_STRING MAX MIN NOT NOT_IN NULL OR ORDER
SELECT STARTS_WITH SUM TOP TRUE WHERE""".split())

_LEX = re.compile(r"""\s*(?:(?P<s>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")|(?P<e>\[\[[^\[\]]+\]\])|(?P<n>-?\d+(?:\.\d+)?)"""
                  r"""|(?P<o><>|!=|<=|>=|=|<|>)|(?P<p>[(),\[\].])|(?P<w>[A-Za-z_$@][A-Za-z0-9_$@-]*))""")
_ESC = {"\\'": "'", '\\"': '"', "\\\\": "\\"}
_NONE = object()  # an undefined property


def _literal(raw: str, at: int) -> str:
    body, out, i = raw[1:-1], [], 0
    while i < len(body):
        if body[i] == "\\":
            pair = body[i:i + 2]
            if pair not in _ESC:
                raise QueryError(f"unknown escape {pair!r} at position {at + i + 1} (use \\' \\\" or \\\\)")
            out.append(_ESC[pair])
            i += 2
        else:
            out.append(body[i])
            i += 1
    return "".join(out)


def _tokens(text: str) -> List[Tuple[str, Any, int]]:
    out, pos, text = [], 0, text.rstrip()
    while pos < len(text):
        m = _LEX.match(text, pos)
        if not m or m.end() == pos:
            raise QueryError(f"cannot read {text[pos:pos + 20]!r} at position {pos}")
        kind, raw, at = m.lastgroup, m.group(m.lastgroup), m.start(m.lastgroup)
        if kind == "s":
            if out and out[-1][0] == "s":
                raise QueryError(f"two string literals in a row at position {at}: a quote inside a string is written "
                                 "\\' (a doubled '' is not an escape in the IoT Hub query language)")
            out.append(("s", _literal(raw, at), at))
        elif kind == "e":
            out.append(("name", raw[2:-2], at))
        elif kind == "n":
            out.append(("s", float(raw) if "." in raw else int(raw), at))
        elif kind == "w":
            out.append(("w", raw, at))
        else:
            out.append((raw, raw, at))
        pos = m.end()
    return out


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    return a == b


def _order(op: str, a: Any, b: Any) -> bool:
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (a, b))
    if not numbers and not (isinstance(a, str) and isinstance(b, str)):
        return False
    return {"<": a < b, ">": a > b, "<=": a <= b, ">=": a >= b}[op]


_FUNCS = {
    "IS_DEFINED": (1, lambda v: v is not _NONE),
    "IS_NULL": (1, lambda v: v is None),
    "IS_STRING": (1, lambda v: isinstance(v, str)),
    "IS_NUMBER": (1, lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)),
    "IS_BOOL": (1, lambda v: isinstance(v, bool)),
    "IS_OBJECT": (1, lambda v: isinstance(v, dict)),
    "ARRAY_CONTAINS": (2, lambda arr, v: isinstance(arr, list) and any(_same(x, v) for x in arr)),
    "STARTSWITH": (2, lambda s, p: isinstance(s, str) and isinstance(p, str) and s.startswith(p)),
    "ENDSWITH": (2, lambda s, p: isinstance(s, str) and isinstance(p, str) and s.endswith(p)),
}
_FUNCS["STARTS_WITH"], _FUNCS["ENDS_WITH"] = _FUNCS["STARTSWITH"], _FUNCS["ENDSWITH"]

Fn = Callable[[dict], Any]


class _Reader:
    def __init__(self, text: str):
        self.toks = _tokens(text)
        self.i = 0

    def _peek(self, k: int = 0):
        return self.toks[self.i + k] if self.i + k < len(self.toks) else (None, None, -1)

    def _word(self, word: str) -> bool:
        kind, value, _at = self._peek()
        if kind == "w" and value.upper() == word:
            self.i += 1
            return True
        return False

    def _punct(self, p: str) -> bool:
        if self._peek()[0] == p:
            self.i += 1
            return True
        return False

    def _need(self, p: str) -> None:
        if not self._punct(p):
            kind, value, at = self._peek()
            raise QueryError(f"expected {p!r} at " + (f"position {at} ({value!r})" if kind else "the end"))

    def clause(self) -> Fn:
        fn = self._or()
        kind, value, at = self._peek()
        if kind is not None:
            raise QueryError(f"unexpected {value!r} at position {at}")
        return fn

    def _or(self) -> Fn:
        parts = [self._and()]
        while self._word("OR"):
            parts.append(self._and())
        return parts[0] if len(parts) == 1 else (lambda d: any(p(d) for p in parts))

    def _and(self) -> Fn:
        parts = [self._not()]
        while self._word("AND"):
            parts.append(self._not())
        return parts[0] if len(parts) == 1 else (lambda d: all(p(d) for p in parts))

    def _not(self) -> Fn:
        if self._word("NOT"):
            inner = self._not()
            return lambda d: not inner(d)
        return self._test()

    def _test(self) -> Fn:
        if self._punct("("):
            inner = self._or()
            self._need(")")
            return inner
        left = self._operand()
        kind, op, _at = self._peek()
        if kind in ("=", "!=", "<>", "<", ">", "<=", ">="):
            self.i += 1
            right = self._operand()

            def compare(d, left=left, right=right, op=op):
                a, b = left(d), right(d)
                if a is _NONE or b is _NONE:
                    return False
                if op == "=":
                    return _same(a, b)
                if op in ("!=", "<>"):
                    return not _same(a, b)
                return _order(op, a, b)
            return compare
        negate = self._word("NOT")
        if self._word("IN"):
            values = tuple(self._list())

            def member(d):
                v = left(d)
                return v is not _NONE and any(_same(v, x) for x in values)
            return (lambda d: not member(d)) if negate else member
        if negate:
            raise QueryError("expected IN after NOT")
        return lambda d: left(d) is True

    def _list(self) -> list:
        close = "]" if self._punct("[") else None
        if close is None:
            self._need("(")
            close = ")"
        values = []
        while not self._punct(close):
            if values:
                self._need(",")
            value = self._operand()
            values.append(value({}))
        return values

    def _operand(self) -> Fn:
        kind, value, at = self._peek()
        if kind == "s":
            self.i += 1
            return lambda d: value
        if kind == "w" and value.lower() in ("true", "false", "null"):
            self.i += 1
            const = {"true": True, "false": False, "null": None}[value.lower()]
            return lambda d: const
        if kind == "w" and self._peek(1)[0] == "(":
            return self._call()
        if kind not in ("w", "name"):
            raise QueryError("expected a property or a value at " + (f"position {at} ({value!r})" if kind else "the end"))
        parts = [self._name()]
        while self._punct("."):
            parts.append(self._name())
        path = tuple(parts)

        def get(d):
            cur = d
            for part in path:
                if not isinstance(cur, dict) or part not in cur:
                    return _NONE
                cur = cur[part]
            return cur
        return get

    def _name(self) -> str:
        kind, value, at = self._peek()
        if kind == "w" and value.upper() in RESERVED:
            raise QueryError(f"{value!r} at position {at} is a reserved word; as a property name write [[{value}]]")
        if kind not in ("w", "name"):
            raise QueryError("expected a property name at " + (f"position {at} ({value!r})" if kind else "the end"))
        self.i += 1
        return value

    def _call(self) -> Fn:
        _kind, name, at = self._peek()
        self.i += 2
        fn = _FUNCS.get(name.upper())
        if fn is None:
            raise QueryError(f"function {name!r} at position {at} cannot be evaluated against a twin here; use "
                             "comparisons, IN, IS_DEFINED, IS_NULL, ARRAY_CONTAINS, STARTS_WITH or ENDS_WITH")
        arity, impl = fn
        args: List[Fn] = []
        while not self._punct(")"):
            if args:
                self._need(",")
            args.append(self._operand())
        if len(args) != arity:
            raise QueryError(f"{name} takes {arity} argument(s), not {len(args)}")
        return lambda d: impl(*[a(d) for a in args])


def compile_where(text: str) -> Callable[[dict], bool]:
    """The WHERE clause TEXT as ``match(twin) -> bool``; QueryError when it cannot be read."""
    if not isinstance(text, str) or not text.strip():
        raise QueryError("the clause is empty")
    fn = _Reader(text).clause()
    return lambda twin: bool(fn(twin))
