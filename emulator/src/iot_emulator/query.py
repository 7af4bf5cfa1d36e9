"""A subset of the IoT Hub query language, enough for the registry's clients.

Supported (case-insensitive keywords)::

    SELECT * | COUNT() AS alias | path [AS alias], ... FROM devices [WHERE condition]

Conditions: ``=``, ``!=``, ``<>``, ``<``, ``>``, ``<=``, ``>=``, ``[NOT] IN [..]`` (or ``(..)``),
``AND``, ``OR``, ``NOT``, parentheses, and the functions ``array_contains(path, value)``,
``is_defined(path)``, ``is_null(path)``, ``startswith(path, 'x')``, ``endswith(path, 'x')``.
Literals: single- or double-quoted strings with the documented escapes ``\\'``, ``\\"`` and ``\\\\`` (a doubled
quote is not an escape: ``'it''s'`` is refused), numbers, ``true``, ``false``, ``null``.
Property names that are reserved words (``group``, ``select``, ``count``, ...) must be escaped as ``[[group]]``.
Anything else is a 400 ``ArgumentInvalid``, as the service rejects a query it cannot parse.

The query area in one file (a little over 500 lines, on purpose): the language above, the eventually consistent
index the queries read (``QueryIndex``: a write shows after ``--query-lag-s`` or ``query_lag_queries``), paging with
continuation tokens (``QueryStore.query``) and the route.  Split, each part would import the others.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import hashlib
import json
import re
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable

from starlette.requests import Request
from starlette.responses import Response

from .errors import bad_request

_TOKEN = re.compile(
    r"""
    \s*(?:
      (?P<str>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")
    | (?P<escaped>\[\[[^\[\]]+\]\])
    | (?P<num>-?\d+(?:\.\d+)?)
    | (?P<op><>|!=|<=|>=|=|<|>)
    | (?P<punct>[(),\[\]*.])
    | (?P<ident>[A-Za-z_$@][A-Za-z0-9_$@-]*)
    )""",
    re.VERBOSE,
)

_UNDEFINED = object()
_ESCAPES = {"\\'": "'", '\\"': '"', "\\\\": "\\"}
# The query language's reserved words (the same engine's list as Azure Digital Twins' query reference): as a
# property name they must be escaped with [[ ]].
RESERVED = frozenset("""ALL AND AS ASC AVG BY COUNT DESC DEVICES_JOBS DEVICES_MODULES DEVICES ENDS_WITH FALSE FROM
GROUP IN IS_BOOL IS_DEFINED IS_NULL IS_NUMBER IS_OBJECT IS_PRIMITIVE IS_STRING MAX MIN NOT NOT_IN NULL OR ORDER
SELECT STARTS_WITH SUM TOP TRUE WHERE""".split())


def _unescape(raw: str, pos: int) -> str:
    out, i = [], 1
    while i < len(raw) - 1:
        if raw[i] == "\\":
            pair = raw[i:i + 2]
            if pair not in _ESCAPES:
                raise bad_request(f"Syntax error in query at position {pos + i}: unknown escape {pair!r} "
                                  "(use \\\' \\\" or \\\\)")
            out.append(_ESCAPES[pair])
            i += 2
        else:
            out.append(raw[i])
            i += 1
    return "".join(out)


@dataclass
class Token:
    kind: str
    value: Any
    text: str


def tokenize(text: str) -> list[Token]:
    pos = 0
    out: list[Token] = []
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise bad_request(f"Syntax error in query at position {pos}: {text[pos:pos + 20]!r}")
        pos = m.end()
        kind = m.lastgroup
        raw = m.group(kind)
        if kind == "str":
            out.append(Token("str", _unescape(raw, m.start(kind)), raw))
        elif kind == "escaped":
            out.append(Token("ident", raw[2:-2], raw))
        elif kind == "num":
            out.append(Token("num", float(raw) if "." in raw else int(raw), raw))
        else:
            out.append(Token(kind, raw, raw))
    return out


@dataclass
class Query:
    select: list  # ["*"] or [("path", [..], alias)] or [("count", alias)]
    source: str
    where: Callable[[dict], bool] | None

    @property
    def is_star(self) -> bool:
        return self.select == ["*"]

    @property
    def is_count(self) -> bool:
        return len(self.select) == 1 and self.select[0][0] == "count"

    def project(self, doc: dict) -> dict:
        if self.is_star:
            return doc
        out = {}
        for _, path, alias in self.select:
            value = _get(doc, path)
            if value is not _UNDEFINED:
                out[alias] = value
        return out


def _get(doc: Any, path: list[str]) -> Any:
    cur = doc
    for part in path:
        if isinstance(cur, dict) and part in cur:
            cur = cur[part]
        else:
            return _UNDEFINED
    return cur


class _Parser:
    def __init__(self, tokens: list[Token]):
        self.toks = tokens
        self.i = 0

    def peek(self, offset: int = 0) -> Token | None:
        j = self.i + offset
        return self.toks[j] if j < len(self.toks) else None

    def kw(self, word: str) -> bool:
        t = self.peek()
        if t is not None and t.kind == "ident" and t.value.upper() == word:
            self.i += 1
            return True
        return False

    def expect_kw(self, word: str) -> None:
        if not self.kw(word):
            raise bad_request(f"Syntax error in query: expected {word}")

    def punct(self, p: str) -> bool:
        t = self.peek()
        if t is not None and t.kind == "punct" and t.value == p:
            self.i += 1
            return True
        return False

    def expect_punct(self, p: str) -> None:
        if not self.punct(p):
            t = self.peek()
            raise bad_request(f"Syntax error in query: expected {p!r} near {t.text if t else 'end of query'!r}")

    def ident(self, property_name: bool = False) -> str:
        t = self.peek()
        if t is None or t.kind != "ident":
            raise bad_request(f"Syntax error in query: expected a name near {t.text if t else 'end of query'!r}")
        if property_name and not t.text.startswith("[[") and t.value.upper() in RESERVED:
            raise bad_request(f"Syntax error in query: {t.value!r} is a reserved word; as a property name, escape "
                              f"it as [[{t.value}]]")
        self.i += 1
        return t.value

    def path(self, property_name: bool = True) -> list[str]:
        if property_name:
            self._qualifier()
        parts = [self.ident(property_name)]
        while self.punct("."):
            parts.append(self.ident(property_name))
        return parts

    def _qualifier(self) -> None:
        """Skip a collection qualifier in front of a property path: ``devices.deviceId``, ``devices.modules.moduleId``
        (the CLI's help and live tests query ``FROM devices.modules WHERE devices.deviceId = 'X'``).  ``devices`` is
        reserved only there; escaped (``[[devices]]``) it is a property name."""
        def plain(offset: int, word: str) -> bool:
            t, nxt = self.peek(offset), self.peek(offset + 1)
            return (t is not None and t.kind == "ident" and not t.text.startswith("[[") and t.value.lower() == word
                    and nxt is not None and nxt.kind == "punct" and nxt.value == ".")
        if plain(0, "devices"):
            self.i += 2
            if plain(0, "modules"):
                self.i += 2

    # query := SELECT list FROM source [WHERE expr]
    def query(self) -> Query:
        self.expect_kw("SELECT")
        select: list = []
        if self.punct("*"):
            select = ["*"]
        else:
            while True:
                t = self.peek()
                if t is not None and t.kind == "ident" and t.value.upper() == "COUNT" and self._is_call():
                    self.i += 1
                    self.expect_punct("(")
                    self.expect_punct(")")
                    alias = "$1"
                    if self.kw("AS"):
                        alias = self.ident()
                    select.append(("count", None, alias))
                else:
                    p = self.path()
                    alias = p[-1]
                    if self.kw("AS"):
                        alias = self.ident(property_name=True)
                    select.append(("path", p, alias))
                if not self.punct(","):
                    break
            if any(s[0] == "count" for s in select) and len(select) > 1:
                raise bad_request("COUNT() cannot be combined with other projections in this query")
        self.expect_kw("FROM")
        source = ".".join(self.path(property_name=False)).lower()
        if source not in ("devices", "devices.modules"):
            raise bad_request(f"Query source {source!r} is not supported; use FROM devices or FROM devices.modules")
        where = None
        if self.kw("WHERE"):
            where = self.expr()
        if self.peek() is not None:
            raise bad_request(f"Syntax error in query near {self.peek().text!r}")
        return Query(select, source, where)

    def _is_call(self) -> bool:
        nxt = self.peek(1)
        return nxt is not None and nxt.kind == "punct" and nxt.value == "("

    def expr(self):
        left = self.and_expr()
        while self.kw("OR"):
            right = self.and_expr()
            left = (lambda a, b: lambda d: a(d) or b(d))(left, right)
        return left

    def and_expr(self):
        left = self.not_expr()
        while self.kw("AND"):
            right = self.not_expr()
            left = (lambda a, b: lambda d: a(d) and b(d))(left, right)
        return left

    def not_expr(self):
        if self.kw("NOT"):
            inner = self.not_expr()
            return lambda d: not inner(d)
        return self.comparison()

    def comparison(self):
        if self.punct("("):
            inner = self.expr()
            self.expect_punct(")")
            return inner
        left = self.operand()
        t = self.peek()
        if t is not None and t.kind == "op":
            self.i += 1
            right = self.operand()
            return _compare(t.value, left, right)
        negate = False
        if self.kw("NOT"):
            negate = True
            if not (self.peek() and self.peek().kind == "ident" and self.peek().value.upper() == "IN"):
                raise bad_request("Syntax error in query: expected IN after NOT")
        if self.kw("IN"):
            values = self.literal_list()

            def _in(d, left=left, values=values):
                v = left(d)
                return v is not _UNDEFINED and any(_eq(v, x) for x in values)
            return (lambda d: not _in(d)) if negate else _in
        # A bare boolean operand (e.g. a function call)
        return lambda d: left(d) is True

    def literal_list(self) -> list:
        close = "]" if self.punct("[") else None
        if close is None:
            self.expect_punct("(")
            close = ")"
        values = []
        if not self.punct(close):
            while True:
                values.append(self.literal())
                if self.punct(close):
                    break
                self.expect_punct(",")
        return values

    def literal(self):
        t = self.peek()
        if t is None:
            raise bad_request("Syntax error in query: expected a value at end of query")
        if t.kind in ("str", "num"):
            self.i += 1
            return t.value
        if t.kind == "ident" and t.value.lower() in ("true", "false", "null"):
            self.i += 1
            return {"true": True, "false": False, "null": None}[t.value.lower()]
        raise bad_request(f"Syntax error in query: expected a value near {t.text!r}")

    def operand(self):
        t = self.peek()
        if t is None:
            raise bad_request("Syntax error in query: unexpected end of query")
        if t.kind in ("str", "num") or (t.kind == "ident" and t.value.lower() in ("true", "false", "null")):
            v = self.literal()
            return lambda d: v
        if t.kind == "ident" and self._is_call():
            return self.call()
        p = self.path()
        return lambda d: _get(d, p)

    def call(self):
        name = self.ident().lower()
        self.expect_punct("(")
        args = []
        if not self.punct(")"):
            while True:
                args.append(self.operand())
                if self.punct(")"):
                    break
                self.expect_punct(",")
        fn = _FUNCTIONS.get(name)
        if fn is None:
            raise bad_request(f"Function {name!r} is not supported in queries")
        arity, impl = fn
        if len(args) != arity:
            raise bad_request(f"Function {name} takes {arity} argument(s)")
        return lambda d: impl(*[a(d) for a in args])


def _eq(a, b) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    return a == b


def _compare(op: str, left, right):
    def cmp(d):
        a, b = left(d), right(d)
        if a is _UNDEFINED or b is _UNDEFINED:
            return False
        if op == "=":
            return _eq(a, b)
        if op in ("!=", "<>"):
            return not _eq(a, b)
        if type(a) is not type(b) and not (isinstance(a, (int, float)) and isinstance(b, (int, float))):
            return False
        if isinstance(a, bool) or isinstance(b, bool) or a is None:
            return False  # booleans have no order, not even against numbers (0 >= false is no match)
        return {"<": a < b, ">": a > b, "<=": a <= b, ">=": a >= b}[op]
    return cmp


def _array_contains(arr, value):
    return isinstance(arr, list) and any(_eq(x, value) for x in arr)


_FUNCTIONS = {
    "array_contains": (2, _array_contains),
    "is_defined": (1, lambda v: v is not _UNDEFINED),
    "is_null": (1, lambda v: v is None),
    "startswith": (2, lambda s, p: isinstance(s, str) and isinstance(p, str) and s.startswith(p)),
    "endswith": (2, lambda s, p: isinstance(s, str) and isinstance(p, str) and s.endswith(p)),
}


def parse(text: str) -> Query:
    if not isinstance(text, str) or not text.strip():
        raise bad_request("The query is empty", code="ArgumentNull")
    return _Parser(tokenize(text)).query()


DEFAULT_PAGE = 100  # iot-api-2.md §7: "a page size (up to 100)" (2018 docs); --max-page-size changes it

MAX_QUERY_CHARS = 8192  # a query's maximum length


class QueryIndex:
    """The query store: eventually consistent with the registry (§3.2).

    Writes are recorded with their time; a query sees the writes older than ``lag`` seconds, so a device
    created a moment ago is missing from the results and a device deleted a moment ago is a "ghost".
    ``lag_queries`` (a test knob) holds a write back until that many more queries were answered too: a lag that
    ends at a chosen request of a task instead of at a wall-clock time.
    """

    def __init__(self, lag: float = 0.0):
        self.lag = lag
        self.lag_queries = 0
        self.queries = 0  # queries answered so far
        # id -> the twin document as compact JSON text: a million devices' documents as dicts held the emulator at
        # 8.8 GB; as text they take a fifth of that, and a query decodes only the documents it reads
        self.visible: dict[str, str] = {}
        self.pending: deque = deque()
        self._sorted: list[str] | None = None

    def record(self, device_id: str, doc: dict | None, at: float) -> None:
        text = None if doc is None else json.dumps(doc, separators=(",", ":"))
        self.pending.append((at, self.queries, device_id, text))
        self.settle(time.time())  # what is due moves to the index now: a million writes between two queries
        # would otherwise wait in PENDING, every version of every document

    def doc(self, device_id: str) -> dict:
        """The indexed document of DEVICE_ID (a fresh dict: the caller may change it)."""
        return json.loads(self.visible[device_id])

    def put(self, device_id: str, doc: dict) -> None:
        """Index DOC at once (a loaded state file)."""
        self.visible[device_id] = json.dumps(doc, separators=(",", ":"))
        self._sorted = None

    def clear(self) -> None:
        self.visible.clear()
        self.pending.clear()
        self._sorted = None

    def settle(self, now: float) -> None:
        """Called once per query request, before it is answered."""
        cutoff = now - self.lag
        while self.pending and (self.lag <= 0 or self.pending[0][0] <= cutoff) \
                and self.queries - self.pending[0][1] >= self.lag_queries:
            _, _, device_id, doc = self.pending.popleft()
            if doc is None:
                if self.visible.pop(device_id, None) is not None:
                    self._sorted = None
            else:
                if device_id not in self.visible:
                    self._sorted = None
                self.visible[device_id] = doc

    def ordered_ids(self) -> list[str]:
        if self._sorted is None:
            self._sorted = sorted(self.visible)
        return self._sorted


class QueryStore:
    """The query store (iot-api.md §3.2, iot-api-2.md §7): eventually consistent indexes of the twins."""

    PERSISTED = ()  # what it owns that a state file keeps
    CLEARED = ("index", "module_index")  # what a reset empties

    def init_state(self, query_lag_s: float) -> None:
        self.index = QueryIndex(query_lag_s)  # device id -> device twin doc (devices)
        self.module_index = QueryIndex(query_lag_s)  # "deviceId/moduleId" -> module twin doc (devices.modules)
        self.max_page_size = DEFAULT_PAGE  # --max-page-size

    def after_load(self) -> None:
        for device_id in self.devices:  # a loaded state is indexed at once
            self.index.put(device_id, self._twin_doc(device_id))
            for module_id in self.modules.get(device_id, {}):
                self.module_index.put(f"{device_id}/{module_id}", self.module_twin_doc(device_id, module_id))

    def query(self, text: Any, max_items: int | None, continuation: str | None) -> tuple[list, str | None, str]:
        """POST /devices/query (§3.2).  Returns (items, next continuation or None, item type)."""
        if isinstance(text, str) and len(text) > MAX_QUERY_CHARS:
            raise bad_request(f"The query is {len(text)} characters long; the maximum is {MAX_QUERY_CHARS}")
        q = parse(text)
        index = self.module_index if q.source == "devices.modules" else self.index
        index.settle(time.time())
        index.queries += 1
        # §7: clamp to 1..max page size; a missing or invalid value means the maximum, never a 4xx.
        page = self.max_page_size if not max_items or max_items < 1 else min(max_items, self.max_page_size)
        qhash = hashlib.sha256(text.encode()).hexdigest()[:12]
        after = None
        if continuation:
            try:
                state = json.loads(base64.urlsafe_b64decode(continuation.encode()))
                if state["q"] != qhash:
                    raise ValueError
                after = state["after"]
            except (ValueError, KeyError, TypeError, binascii.Error):
                raise bad_request("The continuation token is invalid for this query") from None
        ids = index.ordered_ids()
        if q.is_count:
            n = len(ids) if q.where is None else sum(1 for d in ids if q.where(index.doc(d)))
            return [{q.select[0][2]: n}], None, "Raw"
        start = 0
        if after is not None:
            start = bisect.bisect_right(ids, after)
        items, last = [], None
        i = start
        while i < len(ids) and len(items) < page:
            doc = index.doc(ids[i])
            if q.where is None or q.where(doc):
                items.append(q.project(doc))
                last = ids[i]
            i += 1
        more = i < len(ids) and (q.where is None or any(q.where(index.doc(d)) for d in ids[i:]))
        token = None
        if more and last is not None:
            token = base64.urlsafe_b64encode(json.dumps({"q": qhash, "after": last}).encode()).decode()
        return items, token, ("Twin" if q.is_star else "Raw")


def routes(emu) -> list:
    reg = emu.registry

    @emu.hub_route("/devices/query", ["POST"], "query")
    async def query(request: Request) -> Response:
        # The security doc: ServiceConnect runs queries; an SDK sample says RegistryRead (§9.6): --query-right.
        emu.guard(request, emu.settings.query_right, kind="query")
        body = await emu.read_json(request)
        if not isinstance(body, dict) or "query" not in body:
            raise bad_request('The body must be {"query": "..."}', code="ArgumentNull")
        try:
            max_items = int(request.headers.get("x-ms-max-item-count") or 0)
        except ValueError:
            max_items = 0  # §7: an invalid value means the maximum, never a 4xx
        items, token, item_type = reg.query(body["query"], max_items, request.headers.get("x-ms-continuation"))
        emu.stats.query_pages += 1
        headers = {"x-ms-item-type": item_type}
        if token:
            headers["x-ms-continuation"] = token
        return emu.json(items, headers=headers)

    return [query]
