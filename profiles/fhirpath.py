"""FHIRPath for invariants: expressions compiled once into Python closures over FHIR JSON.

The compiler covers the FHIRPath that the R4 core, US Core and SDOHCC invariants use (paths
with choice elements and primitive extensions, the existence / filtering / subsetting /
string / conversion / type functions, three-valued logic, equality, ordering of numbers,
quantities and partial dates, `%resource` / `%rootResource` / `%context` / `%ucum`,
`resolve()`, `memberOf()`). An expression it cannot compile falls back to fhirpathpy with
the same user functions, so every invariant is evaluated; `compiled_natively()` says which.

A collection is a Python list of items. An item is the JSON value itself (dict, str, bool,
int, float/Decimal), or a `Typed` wrapper when the type is known from a choice key
(`valueQuantity`) or when a primitive carries an `_element` object (id, extensions).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from typing import Any

Collection = list[Any]
Compiled = Callable[[Collection, "Env"], Collection]

UCUM = "http://unitsofmeasure.org"
CONSTANTS = {"ucum": UCUM, "sct": "http://snomed.info/sct", "loinc": "http://loinc.org"}
PRIMITIVE_TYPES = frozenset({
    "boolean", "integer", "string", "decimal", "uri", "url", "canonical", "base64Binary",
    "instant", "date", "dateTime", "time", "code", "oid", "id", "markdown", "unsignedInt",
    "positiveInt", "uuid", "xhtml"})
# FHIR primitive -> the System type it is, for `is`/`as` against System types
_SYSTEM_OF = {"boolean": "boolean", "integer": "integer", "unsignedInt": "integer",
              "positiveInt": "integer", "decimal": "decimal", "date": "date",
              "dateTime": "datetime", "instant": "datetime", "time": "time"}


class Unsupported(Exception):
    """The expression uses FHIRPath this compiler does not implement."""


class EvalError(Exception):
    """A run-time error FHIRPath defines (e.g. a singleton expected, several found)."""


@dataclass(slots=True)
class Typed:
    """An item whose FHIR type is known, or a primitive with its `_element` object."""

    value: Any
    type: str | None = None
    ext: dict | None = None


@dataclass
class Env:
    """What an evaluation sees besides its input: %resource, %rootResource, %context,
    $this / $index, and the functions that need the outside world."""

    resource: Any = None
    root: Any = None
    context: Any = None
    this: Any = None
    index: int = 0
    resolver: Callable[[str], Any] | None = None  # reference string -> resource or None
    member_of: Callable[[Any, str], bool | None] | None = None
    html_checks: Callable[[str], bool] | None = None
    variables: dict[str, Any] = field(default_factory=dict)

    def child(self, this: Any, index: int) -> Env:
        return Env(self.resource, self.root, self.context, this, index, self.resolver,
                   self.member_of, self.html_checks, self.variables)


# -- choice elements --------------------------------------------------------------------------
_CHOICES: dict[str, frozenset[str]] = {}


def set_choice_stems(choices: dict[str, list[str]]) -> None:
    """Register the R4 choice elements (stem -> allowed type codes)."""
    _CHOICES.clear()
    for stem, types in choices.items():
        _CHOICES[stem] = frozenset(t[0].upper() + t[1:] for t in types)


def _choices() -> dict[str, frozenset[str]]:
    if not _CHOICES:
        from profiles.base_data import r4_elements

        set_choice_stems(r4_elements()["choices"])
    return _CHOICES


def _type_of_suffix(suffix: str) -> str:
    lower = suffix[0].lower() + suffix[1:]
    return lower if lower in PRIMITIVE_TYPES else suffix


def unwrap(item: Any) -> Any:
    return item.value if isinstance(item, Typed) else item


# -- navigation -------------------------------------------------------------------------------
def _add(out: Collection, value: Any, ext: Any, type_: str | None) -> None:
    """Append the items of one JSON property (with its `_property` companion)."""
    if isinstance(value, list) or isinstance(ext, list):
        values = value if isinstance(value, list) else []
        exts = ext if isinstance(ext, list) else []
        for i in range(max(len(values), len(exts))):
            v = values[i] if i < len(values) else None
            e = exts[i] if i < len(exts) else None
            if v is None and not e:
                continue
            out.append(Typed(v, type_, e) if (e or type_) else v)
    elif value is not None or ext is not None:
        out.append(Typed(value, type_, ext) if (ext or type_) else value)


@lru_cache(maxsize=4096)
def choice_type(key: str) -> str | None:
    """The FHIR type of a choice property name (`valueQuantity` -> Quantity), else None."""
    choices = _choices()
    for i in range(1, len(key)):
        if key[i].isupper():
            stems = choices.get(key[:i])
            if stems and key[i:] in stems:
                return _type_of_suffix(key[i:])
    return None


def member(items: Collection, name: str, ext_name: str | None = None) -> Collection:
    """`items.name`: children called `name`, including choice keys (`valueQuantity`) and
    primitives that only carry extensions (`_birthDate`)."""
    ext_name = ext_name or "_" + name
    out: Collection = []
    for item in items:
        if item.__class__ is not dict:
            if isinstance(item, Typed):
                if not isinstance(item.value, dict):
                    if item.ext and name in ("extension", "id"):
                        _add(out, item.ext.get(name), None, None)
                    continue
                item = item.value
            else:
                continue
        value = item.get(name)
        ext = item.get(ext_name)
        if value is not None or ext is not None:
            if ext is None and value.__class__ is not list:
                out.append(value)
            else:
                _add(out, value, ext, None)
            continue
        stems = _choices().get(name)
        if stems:
            n = len(name)
            found = False
            for key in item:
                if key.startswith(name) and key[n:] in stems:
                    _add(out, item[key], item.get("_" + key), _type_of_suffix(key[n:]))
                    found = True
                elif key.startswith(ext_name) and key[n + 1:] in stems and key[1:] not in item:
                    _add(out, None, item[key], _type_of_suffix(key[n + 1:]))
                    found = True
            if found:
                continue
        if item.get("resourceType") == name:
            out.append(item)  # a leading type name (`Appointment.status`)
    return out


def children(items: Collection) -> Collection:
    out: Collection = []
    for item in items:
        if isinstance(item, Typed):
            if isinstance(item.value, dict):
                item = item.value
            else:
                if item.ext:
                    for key in ("id", "extension"):
                        _add(out, item.ext.get(key), None, None)
                continue
        if not isinstance(item, dict):
            continue
        for key, value in item.items():
            if key.startswith("_"):
                if key[1:] not in item:
                    _add(out, None, value, choice_type(key[1:]))
                continue
            if key != "resourceType":
                _add(out, value, item.get("_" + key), choice_type(key))
    return out


def descendants(items: Collection) -> Collection:
    out: Collection = []
    todo = children(items)
    while todo:
        out.extend(todo)
        todo = children(todo)
    return out


# -- values, equality, ordering ---------------------------------------------------------------
def type_name(item: Any) -> str | None:
    if isinstance(item, Typed):
        if item.type:
            return item.type
        item = item.value
    if isinstance(item, dict):
        rt = item.get("resourceType")
        return rt if isinstance(rt, str) else None
    if isinstance(item, bool):
        return "boolean"
    if isinstance(item, int):
        return "integer"
    if isinstance(item, (float, Decimal)):
        return "decimal"
    if isinstance(item, str):
        return "string"
    return None


_RESOURCE_ANCESTORS = {"Resource", "DomainResource"}


def is_type(item: Any, wanted: str) -> bool:
    wanted = wanted.split(".", 1)[1] if wanted.startswith(("FHIR.", "System.")) else wanted
    actual = type_name(item)
    if actual is None:
        return False
    if actual == wanted:
        return True
    value = unwrap(item)
    if wanted in _RESOURCE_ANCESTORS and isinstance(value, dict) and "resourceType" in value:
        return wanted == "Resource" or value["resourceType"] not in ("Bundle", "Binary",
                                                                      "Parameters")
    low = wanted.lower()
    return _SYSTEM_OF.get(actual, actual.lower()) == low and low in (
        "boolean", "integer", "decimal", "date", "datetime", "time", "string")


def _canon(value: Any) -> Any:
    """A hashable, order-independent key for equality of complex values."""
    value = unwrap(value)
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True, default=str)
    if isinstance(value, (float, Decimal)) and not isinstance(value, bool):
        return Decimal(str(value)).normalize()
    return value


def _num(value: Any) -> Decimal | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float, Decimal)):
        return Decimal(str(value))
    return None


_DT = re.compile(r"^(\d{4})(?:-(\d{2})(?:-(\d{2})(?:T(\d{2})(?::(\d{2})(?::(\d{2})(\.\d+)?)?)?"
                 r"(Z|[+-]\d{2}:\d{2})?)?)?)?$")


def _parse_dt(text: str) -> tuple[tuple, int, str | None] | None:
    """(components, precision, timezone) of a FHIR date/dateTime/instant string."""
    m = _DT.match(text)
    if not m:
        return None
    y, mo, d, h, mi, s, frac, tz = m.groups()
    parts = [int(y)]
    for v in (mo, d, h, mi, s):
        if v is None:
            break
        parts.append(int(v))
    if s is not None:
        parts[-1] = Decimal(s + (frac or ""))
    return tuple(parts), len(parts), tz


def _to_utc(parts: tuple, tz: str) -> tuple:
    y, mo, d, h, mi = (list(parts) + [1, 1, 0, 0])[:5]
    sec = parts[5] if len(parts) > 5 else Decimal(0)
    base = datetime(y, mo, d, h, mi, tzinfo=UTC)
    if tz != "Z":
        sign = 1 if tz[0] == "+" else -1
        base -= sign * timedelta(hours=int(tz[1:3]), minutes=int(tz[4:6]))
    return (base.year, base.month, base.day, base.hour, base.minute, sec)[:len(parts)]


def compare(a: Any, b: Any) -> int | None:
    """-1/0/1, or None when FHIRPath says the comparison is empty (different precision,
    incomparable units)."""
    a, b = unwrap(a), unwrap(b)
    na, nb = _num(a), _num(b)
    if na is not None and nb is not None:
        return (na > nb) - (na < nb)
    if isinstance(a, str) and isinstance(b, str):
        pa, pb = _parse_dt(a), _parse_dt(b)
        if pa and pb:
            (ca, la, ta), (cb, lb, tb) = pa, pb
            if la > 3 and lb > 3 and ta and tb:
                ca, cb = _to_utc(ca, ta), _to_utc(cb, tb)
            n = min(la, lb)
            for x, y in zip(ca[:n], cb[:n], strict=True):
                if x != y:
                    return -1 if x < y else 1
            return 0 if la == lb else None
        return (a > b) - (a < b)
    if isinstance(a, dict) and isinstance(b, dict) and "value" in a and "value" in b:
        same_unit = (a.get("code"), a.get("system")) == (b.get("code"), b.get("system")) \
            if a.get("code") or b.get("code") else a.get("unit") == b.get("unit")
        va, vb = _num(a.get("value")), _num(b.get("value"))
        if not same_unit or va is None or vb is None:
            return None
        return (va > vb) - (va < vb)
    return None


def equal(a: Any, b: Any) -> bool | None:
    a, b = unwrap(a), unwrap(b)
    if isinstance(a, str) and isinstance(b, str):
        if a == b:
            return True
        pa, pb = _parse_dt(a), _parse_dt(b)
        if pa and pb and pa[1] != pb[1]:
            c = compare(a, b)
            return None if c is None else c == 0
        return False
    na, nb = _num(a), _num(b)
    if na is not None and nb is not None:
        return na == nb
    return _canon(a) == _canon(b)


def _singleton(items: Collection) -> Any:
    if len(items) > 1:
        raise EvalError("a single value was expected, found several")
    return items[0] if items else None


def to_bool(items: Collection) -> bool | None:
    """FHIRPath singleton evaluation in a boolean context (None: empty)."""
    if not items:
        return None
    value = unwrap(_singleton(items))
    if isinstance(value, bool):
        return value
    return True


# -- the compiler -----------------------------------------------------------------------------
def _text(node: dict) -> str:
    return node.get("text") or "".join(node.get("terminalNodeText") or [])


def _ident(node: dict) -> str:
    name = _text(node)
    if name.startswith("`") and name.endswith("`"):
        name = name[1:-1]
    return name


def _string_literal(raw: str) -> str:
    body = raw[1:-1]
    escapes = {"'": "'", '"': '"', "`": "`", "\\": "\\", "/": "/", "f": "\f", "n": "\n",
               "r": "\r", "t": "\t"}
    out, i = [], 0
    while i < len(body):
        ch = body[i]
        if ch == "\\" and i + 1 < len(body):
            nxt = body[i + 1]
            if nxt == "u" and i + 5 < len(body):
                out.append(chr(int(body[i + 2:i + 6], 16)))
                i += 6
                continue
            out.append(escapes.get(nxt, nxt))
            i += 2
            continue
        out.append(ch)
        i += 1
    return "".join(out)


class Compiler:
    """Turns a fhirpathpy parse tree into nested closures."""

    def expr(self, node: dict) -> Compiled:
        kind = node.get("type")
        handler = getattr(self, f"_{kind}", None)
        if handler is None:
            raise Unsupported(f"FHIRPath node {kind}")
        return handler(node)

    # terms
    def _TermExpression(self, node: dict) -> Compiled:  # noqa: N802
        return self.term(node["children"][0])

    def term(self, node: dict) -> Compiled:
        kind = node["type"]
        if kind == "InvocationTerm":
            return self.invocation(node["children"][0], at_root=True)
        if kind == "LiteralTerm":
            return self.literal(node["children"][0])
        if kind == "ParenthesizedTerm":
            return self.expr(node["children"][0])
        if kind == "ExternalConstantTerm":
            return self.constant(node["children"][0])
        raise Unsupported(kind)

    def constant(self, node: dict) -> Compiled:
        child = node["children"][0]
        name = _ident(child) if child["type"] == "Identifier" else _string_literal(_text(child))
        if name == "resource":
            return lambda _f, env: [env.resource] if env.resource is not None else []
        if name == "rootResource":
            return lambda _f, env: [env.root] if env.root is not None else []
        if name == "context":
            return lambda _f, env: [env.context] if env.context is not None else []
        if name in CONSTANTS:
            value = CONSTANTS[name]
            return lambda _f, _e: [value]
        if name.startswith("vs-"):
            url = "http://hl7.org/fhir/ValueSet/" + name[3:]
            return lambda _f, _e: [url]
        return lambda _f, env: list(env.variables.get(name, []))

    def literal(self, node: dict) -> Compiled:
        kind = node["type"]
        raw = _text(node)
        if kind == "NullLiteral":
            return lambda _f, _e: []
        if kind == "BooleanLiteral":
            value: Any = raw == "true"
        elif kind == "StringLiteral":
            value = _string_literal(raw)
        elif kind == "NumberLiteral":
            value = Decimal(raw) if "." in raw else int(raw)
        elif kind in ("DateTimeLiteral", "DateLiteral"):
            value = raw.lstrip("@")
        elif kind == "TimeLiteral":
            value = raw.lstrip("@T")
        elif kind == "QuantityLiteral":
            qty = node["children"][0]
            number = _text(qty).split("'")[0] if qty.get("text") else qty["terminalNodeText"][0]
            unit_nodes = [c for c in qty.get("children", []) if c["type"] == "Unit"]
            unit = _text(unit_nodes[0]).strip("'") if unit_nodes else "1"
            value = {"value": Decimal(number), "code": unit, "system": UCUM, "unit": unit}
        else:
            raise Unsupported(kind)
        return lambda _f, _e: [value]

    def invocation(self, node: dict, at_root: bool) -> Compiled:
        kind = node["type"]
        if kind == "MemberInvocation":
            name = _ident(node["children"][0])
            ext_name = "_" + name
            return lambda focus, _env: member(focus, name, ext_name)
        if kind == "ThisInvocation":
            return lambda _f, env: [env.this] if env.this is not None else []
        if kind == "IndexInvocation":
            return lambda _f, env: [env.index]
        if kind == "FunctionInvocation":
            return self.function(node["children"][0])
        raise Unsupported(kind)

    def _InvocationExpression(self, node: dict) -> Compiled:  # noqa: N802
        left = self.expr(node["children"][0])
        right = self.invocation(node["children"][1], at_root=False)
        return lambda focus, env: right(left(focus, env), env)

    def _IndexerExpression(self, node: dict) -> Compiled:  # noqa: N802
        left, index = self.expr(node["children"][0]), self.expr(node["children"][1])

        def run(focus: Collection, env: Env) -> Collection:
            items = left(focus, env)
            i = unwrap(_singleton(index(focus, env)))
            return [items[i]] if isinstance(i, int) and 0 <= i < len(items) else []
        return run

    def _PolarityExpression(self, node: dict) -> Compiled:  # noqa: N802
        inner = self.expr(node["children"][0])
        sign = _text(node)

        def run(focus: Collection, env: Env) -> Collection:
            value = unwrap(_singleton(inner(focus, env)))
            if value is None:
                return []
            return [-value] if sign == "-" else [value]
        return run

    # operators
    def _binary(self, node: dict) -> tuple[Compiled, Compiled, str]:
        left, right = (self.expr(c) for c in node["children"][:2])
        return left, right, node["terminalNodeText"][0]

    def _EqualityExpression(self, node: dict) -> Compiled:  # noqa: N802
        left, right, op = self._binary(node)

        def run(focus: Collection, env: Env) -> Collection:
            a, b = left(focus, env), right(focus, env)
            if op in ("~", "!~"):
                same = _equivalent(a, b)
                return [same if op == "~" else not same]
            if not a or not b:
                return []
            if len(a) != len(b):
                result: bool | None = False
            else:
                result = True
                for x, y in zip(a, b, strict=True):
                    r = equal(x, y)
                    if r is None:
                        return []
                    if not r:
                        result = False
                        break
            return [result if op == "=" else not result]
        return run

    def _InequalityExpression(self, node: dict) -> Compiled:  # noqa: N802
        left, right, op = self._binary(node)
        test = {"<": lambda c: c < 0, "<=": lambda c: c <= 0, ">": lambda c: c > 0,
                ">=": lambda c: c >= 0}[op]

        def run(focus: Collection, env: Env) -> Collection:
            a, b = _singleton(left(focus, env)), _singleton(right(focus, env))
            if a is None or b is None:
                return []
            c = compare(a, b)
            return [] if c is None else [test(c)]
        return run

    def _AndExpression(self, node: dict) -> Compiled:  # noqa: N802
        left, right, _op = self._binary(node)

        def run(focus: Collection, env: Env) -> Collection:
            a = to_bool(left(focus, env))
            if a is False:
                return [False]
            b = to_bool(right(focus, env))
            if b is False:
                return [False]
            return [True] if a and b else []
        return run

    def _OrExpression(self, node: dict) -> Compiled:  # noqa: N802
        left, right, op = self._binary(node)
        if op == "xor":
            def run_xor(focus: Collection, env: Env) -> Collection:
                a, b = to_bool(left(focus, env)), to_bool(right(focus, env))
                return [] if a is None or b is None else [a != b]
            return run_xor

        def run(focus: Collection, env: Env) -> Collection:
            a = to_bool(left(focus, env))
            if a is True:
                return [True]
            b = to_bool(right(focus, env))
            if b is True:
                return [True]
            return [False] if a is False and b is False else []
        return run

    def _ImpliesExpression(self, node: dict) -> Compiled:  # noqa: N802
        left, right, _op = self._binary(node)

        def run(focus: Collection, env: Env) -> Collection:
            a = to_bool(left(focus, env))
            if a is False:
                return [True]
            b = to_bool(right(focus, env))
            if b is True:
                return [True]
            if a is True:
                return [] if b is None else [False]
            return [] if b is not True else [True]
        return run

    def _UnionExpression(self, node: dict) -> Compiled:  # noqa: N802
        left, right, _op = self._binary(node)
        return lambda focus, env: _distinct(left(focus, env) + right(focus, env))

    def _MembershipExpression(self, node: dict) -> Compiled:  # noqa: N802
        left, right, op = self._binary(node)

        def run(focus: Collection, env: Env) -> Collection:
            a, b = left(focus, env), right(focus, env)
            needle, pool = (a, b) if op == "in" else (b, a)
            if not needle:
                return []
            item = _singleton(needle)
            return [any(equal(item, x) for x in pool)]
        return run

    def _AdditiveExpression(self, node: dict) -> Compiled:  # noqa: N802
        left, right, op = self._binary(node)

        def run(focus: Collection, env: Env) -> Collection:
            a = unwrap(_singleton(left(focus, env)))
            b = unwrap(_singleton(right(focus, env)))
            if op == "&":
                return [("" if a is None else str(a)) + ("" if b is None else str(b))]
            if a is None or b is None:
                return []
            if isinstance(a, str) and isinstance(b, str) and op == "+":
                return [a + b]
            na, nb = _num(a), _num(b)
            if na is None or nb is None:
                raise EvalError(f"cannot apply {op} to {a!r} and {b!r}")
            return [na + nb if op == "+" else na - nb]
        return run

    def _MultiplicativeExpression(self, node: dict) -> Compiled:  # noqa: N802
        left, right, op = self._binary(node)

        def run(focus: Collection, env: Env) -> Collection:
            a = _num(unwrap(_singleton(left(focus, env))))
            b = _num(unwrap(_singleton(right(focus, env))))
            if a is None or b is None:
                return []
            if op == "*":
                return [a * b]
            if b == 0:
                return []
            if op == "/":
                return [a / b]
            if op == "div":
                return [int(a / b)]
            return [a % b]
        return run

    def _TypeExpression(self, node: dict) -> Compiled:  # noqa: N802
        inner = self.expr(node["children"][0])
        wanted = ".".join(_ident(c) for c in node["children"][1]["children"][0]["children"])
        op = node["terminalNodeText"][0]

        def run(focus: Collection, env: Env) -> Collection:
            items = inner(focus, env)
            if not items:
                return []
            if op == "is":
                return [is_type(_singleton(items), wanted)]
            return [x for x in items if is_type(x, wanted)]
        return run

    # functions
    def function(self, node: dict) -> Compiled:
        name = _ident(node["children"][0])
        params = node["children"][1]["children"] if len(node["children"]) > 1 else []
        builder = _FUNCTIONS.get(name)
        if builder is None:
            raise Unsupported(f"function {name}()")
        return builder(self, params)

    def type_arg(self, params: list[dict]) -> str:
        node = params[0]
        parts: list[str] = []

        def walk(n: dict) -> None:
            if n["type"] == "Identifier":
                parts.append(_ident(n))
            for c in n.get("children", []):
                walk(c)
        walk(node)
        if not parts:
            raise Unsupported("type argument")
        return ".".join(parts)


def _equivalent(a: Collection, b: Collection) -> bool:
    if not a and not b:
        return True
    if len(a) != len(b):
        return False

    def norm(x: Any) -> Any:
        x = unwrap(x)
        return " ".join(x.lower().split()) if isinstance(x, str) else _canon(x)
    return sorted(map(str, map(norm, a))) == sorted(map(str, map(norm, b)))


def _distinct(items: Collection) -> Collection:
    seen: set = set()
    out = []
    for x in items:
        key = _canon(x)
        if key in seen:
            continue
        seen.add(key)
        out.append(x)
    return out


# -- function table ---------------------------------------------------------------------------
def _each(c: Compiler, params: list[dict]) -> list[Compiled]:
    return [c.expr(p) for p in params]


def _iter_env(focus: Collection, env: Env):  # type: ignore[no-untyped-def]
    for i, item in enumerate(focus):
        yield item, env.child(item, i)


def _fn_exists(c: Compiler, params: list[dict]) -> Compiled:
    if not params:
        return lambda focus, _e: [bool(focus)]
    crit = c.expr(params[0])
    return lambda focus, env: [any(to_bool(crit([x], e)) for x, e in _iter_env(focus, env))]


def _fn_where(c: Compiler, params: list[dict]) -> Compiled:
    crit = c.expr(params[0])
    return lambda focus, env: [x for x, e in _iter_env(focus, env) if to_bool(crit([x], e))]


def _fn_select(c: Compiler, params: list[dict]) -> Compiled:
    proj = c.expr(params[0])

    def run(focus: Collection, env: Env) -> Collection:
        out: Collection = []
        for x, e in _iter_env(focus, env):
            out.extend(proj([x], e))
        return out
    return run


def _fn_all(c: Compiler, params: list[dict]) -> Compiled:
    crit = c.expr(params[0])
    return lambda focus, env: [all(to_bool(crit([x], e)) is True
                                   for x, e in _iter_env(focus, env))]


def _fn_iif(c: Compiler, params: list[dict]) -> Compiled:
    cond, yes = c.expr(params[0]), c.expr(params[1])
    no = c.expr(params[2]) if len(params) > 2 else (lambda _f, _e: [])

    def run(focus: Collection, env: Env) -> Collection:
        # criterion and branches are evaluated on the input collection ($this for one item)
        inner = env.child(focus[0], 0) if len(focus) == 1 else env
        return yes(focus, inner) if to_bool(cond(focus, inner)) else no(focus, inner)
    return run


def _on_string(fn: Callable[..., Any], n_args: int = 0) -> Callable[[Compiler, list[dict]],
                                                                     Compiled]:
    """A function of one string input (empty input: empty result)."""
    def build(c: Compiler, params: list[dict]) -> Compiled:
        args = _each(c, params)
        if len(args) < n_args:
            raise Unsupported("missing argument")

        def run(focus: Collection, env: Env) -> Collection:
            value = unwrap(_singleton(focus))
            if value is None:
                return []
            values = [unwrap(_singleton(a(focus, env.child(env.this, env.index))))
                      for a in args]
            if any(v is None for v in values):
                return []
            if not isinstance(value, str):
                value = str(value) if not isinstance(value, dict) else None
                if value is None:
                    return []
            result = fn(value, *values)
            return [] if result is None else [result]
        return run
    return build


def _matches(value: str, pattern: str) -> bool:
    return _regex(pattern).fullmatch(value) is not None


@lru_cache(maxsize=512)
def _regex(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern, re.S)


def _substring(value: str, start: Any, length: Any = None) -> str | None:
    if not isinstance(start, int) or start < 0 or start >= len(value):
        return None
    return value[start:] if length is None else value[start:start + int(length)]


def _to_integer(value: Any) -> int | None:
    value = unwrap(value)
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, str) and re.fullmatch(r"[+-]?\d+", value):
        return int(value)
    return None


def _fn_simple(fn: Callable[[Collection], Collection]) -> Callable[[Compiler, list[dict]],
                                                                    Compiled]:
    return lambda _c, _p: lambda focus, _e: fn(focus)


def _intersect(a: Collection, b: Collection) -> Collection:
    keys = {_canon(x) for x in b}
    return _distinct([x for x in a if _canon(x) in keys])


def _fn_type(kind: str) -> Callable[[Compiler, list[dict]], Compiled]:
    def build(c: Compiler, params: list[dict]) -> Compiled:
        wanted = c.type_arg(params)
        if kind == "is":
            return lambda focus, _e: [is_type(_singleton(focus), wanted)] if focus else []
        return lambda focus, _e: [x for x in focus if is_type(x, wanted)]
    return build


def _fn_resolve(_c: Compiler, _p: list[dict]) -> Compiled:
    def run(focus: Collection, env: Env) -> Collection:
        out: Collection = []
        for item in focus:
            value = unwrap(item)
            ref = value.get("reference") if isinstance(value, dict) else value
            if isinstance(ref, str) and env.resolver is not None:
                found = env.resolver(ref)
                if found is not None:
                    out.append(found)
        return out
    return run


def _fn_member_of(c: Compiler, params: list[dict]) -> Compiled:
    url = c.expr(params[0])

    def run(focus: Collection, env: Env) -> Collection:
        vs = unwrap(_singleton(url(focus, env)))
        if vs is None or env.member_of is None:
            return []
        out: Collection = []
        for item in focus:
            answer = env.member_of(unwrap(item), vs)
            if answer is not None:
                out.append(answer)
        return out
    return run


def _fn_html_checks(_c: Compiler, _p: list[dict]) -> Compiled:
    def run(focus: Collection, env: Env) -> Collection:
        value = unwrap(_singleton(focus))
        if not isinstance(value, str) or env.html_checks is None:
            return []
        return [env.html_checks(value)]
    return run


def _fn_has_value(_c: Compiler, _p: list[dict]) -> Compiled:
    def run(focus: Collection, _e: Env) -> Collection:
        if len(focus) != 1:
            return [False]
        value = unwrap(focus[0])
        return [value is not None and not isinstance(value, (dict, list))]
    return run


def _fn_extension(c: Compiler, params: list[dict]) -> Compiled:
    url = c.expr(params[0])

    def run(focus: Collection, env: Env) -> Collection:
        wanted = unwrap(_singleton(url(focus, env)))
        return [e for e in member(focus, "extension")
                if isinstance(unwrap(e), dict) and unwrap(e).get("url") == wanted]
    return run


def _fn_count_based(fn: Callable[[Collection, int], Collection]
                    ) -> Callable[[Compiler, list[dict]], Compiled]:
    def build(c: Compiler, params: list[dict]) -> Compiled:
        n = c.expr(params[0])
        return lambda focus, env: fn(focus, unwrap(_singleton(n(focus, env))) or 0)
    return build


def _fn_trace(_c: Compiler, _p: list[dict]) -> Compiled:
    return lambda focus, _e: focus


def _fn_not(_c: Compiler, _p: list[dict]) -> Compiled:
    def run(focus: Collection, _e: Env) -> Collection:
        b = to_bool(focus)
        return [] if b is None else [not b]
    return run


def _fn_today(_c: Compiler, _p: list[dict]) -> Compiled:
    return lambda _f, _e: [datetime.now(UTC).date().isoformat()]


def _fn_now(_c: Compiler, _p: list[dict]) -> Compiled:
    return lambda _f, _e: [datetime.now(UTC).isoformat(timespec="seconds")]


def _to_decimal(value: Any) -> Decimal | None:
    value = unwrap(value)
    try:
        return Decimal(str(value)) if not isinstance(value, (bool, dict)) else None
    except InvalidOperation:
        return None


def _to_string(value: Any) -> str | None:
    value = unwrap(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int, float, Decimal)):
        return str(value)
    return None


def _convert(fn: Callable[[Any], Any]) -> Callable[[Compiler, list[dict]], Compiled]:
    def run(focus: Collection, _e: Env) -> Collection:
        if not focus:
            return []
        result = fn(_singleton(focus))
        return [] if result is None else [result]
    return lambda _c, _p: run


_FUNCTIONS: dict[str, Callable[[Compiler, list[dict]], Compiled]] = {
    "empty": _fn_simple(lambda f: [not f]),
    "exists": _fn_exists,
    "not": _fn_not,
    "count": _fn_simple(lambda f: [len(f)]),
    "all": _fn_all,
    "allTrue": _fn_simple(lambda f: [all(unwrap(x) is True for x in f)]),
    "anyTrue": _fn_simple(lambda f: [any(unwrap(x) is True for x in f)]),
    "allFalse": _fn_simple(lambda f: [all(unwrap(x) is False for x in f)]),
    "anyFalse": _fn_simple(lambda f: [any(unwrap(x) is False for x in f)]),
    "where": _fn_where,
    "select": _fn_select,
    "first": _fn_simple(lambda f: f[:1]),
    "last": _fn_simple(lambda f: f[-1:]),
    "tail": _fn_simple(lambda f: f[1:]),
    "single": _fn_simple(lambda f: [_singleton(f)] if f else []),
    "skip": _fn_count_based(lambda f, n: f[n:]),
    "take": _fn_count_based(lambda f, n: f[:n]),
    "distinct": _fn_simple(_distinct),
    "isDistinct": _fn_simple(lambda f: [len(_distinct(f)) == len(f)]),
    "hasValue": _fn_has_value,
    "children": _fn_simple(children),
    "descendants": _fn_simple(descendants),
    "trace": _fn_trace,
    "iif": _fn_iif,
    "is": _fn_type("is"),
    "as": _fn_type("as"),
    "ofType": _fn_type("ofType"),
    "resolve": _fn_resolve,
    "memberOf": _fn_member_of,
    "htmlChecks": _fn_html_checks,
    "htmlChecks2": _fn_html_checks,
    "extension": _fn_extension,
    "today": _fn_today,
    "now": _fn_now,
    "matches": _on_string(_matches, 1),
    "startsWith": _on_string(lambda s, p: s.startswith(p), 1),
    "endsWith": _on_string(lambda s, p: s.endswith(p), 1),
    "contains": _on_string(lambda s, p: p in s, 1),
    "substring": _on_string(_substring, 1),
    "length": _on_string(len),
    "upper": _on_string(str.upper),
    "lower": _on_string(str.lower),
    "replace": _on_string(lambda s, a, b: s.replace(a, b), 2),
    "replaceMatches": _on_string(lambda s, p, r: _regex(p).sub(r, s), 2),
    "indexOf": _on_string(lambda s, p: s.find(p), 1),
    "toInteger": _convert(_to_integer),
    "toDecimal": _convert(_to_decimal),
    "toString": _convert(_to_string),
}


def _other_builder(fn: Callable[[Collection, Collection], Collection]
                   ) -> Callable[[Compiler, list[dict]], Compiled]:
    def build(c: Compiler, params: list[dict]) -> Compiled:
        other = c.expr(params[0])

        def run(focus: Collection, env: Env) -> Collection:
            # the argument starts from the same input as the function's own expression
            start = [env.this] if env.this is not None else focus
            return fn(focus, other(start, env))
        return run
    return build


_FUNCTIONS.update({
    "intersect": _other_builder(_intersect),
    "combine": _other_builder(lambda a, b: a + b),
    "union": _other_builder(lambda a, b: _distinct(a + b)),
    "exclude": _other_builder(lambda a, b: [x for x in a if _canon(x) not in
                                             {_canon(y) for y in b}]),
    "subsetOf": _other_builder(lambda a, b: [{_canon(x) for x in a} <= {_canon(y) for y in b}]),
    "supersetOf": _other_builder(lambda a, b: [{_canon(x) for x in a} >= {_canon(y)
                                                                          for y in b}]),
})


# -- public entry points ----------------------------------------------------------------------
@dataclass
class Expression:
    """A compiled invariant expression: `evaluate(focus_item, env) -> list`."""

    text: str
    native: Compiled | None
    fallback: Any = None

    def evaluate(self, focus: Any, env: Env) -> Collection:
        """Evaluate with `focus` as input, $this and %context."""
        env.context = env.this = focus
        env.index = 0
        if self.native is not None:
            return self.native([focus], env)
        return _run_fallback(self, focus, env)


def holds(result: Collection) -> bool:
    """An invariant holds unless it evaluates to false (empty counts as holding)."""
    return not result or all(unwrap(r) is not False for r in result)


@lru_cache(maxsize=4096)
def compile_expression(text: str) -> Expression:
    """Compile once; natively when possible, else through fhirpathpy (raises ValueError when
    neither can parse it)."""
    from fhirpathpy.parser import parse

    try:
        tree = parse(text)
        native = Compiler().expr(tree["children"][0])
        return Expression(text, native)
    except Unsupported:
        pass
    except Exception as exc:  # noqa: BLE001 - a parse error
        raise ValueError(f"cannot parse FHIRPath {text!r}: {exc}") from exc
    return Expression(text, None, _fallback(text))


def compiled_natively(text: str) -> bool:
    return compile_expression(text).native is not None


def _fallback(text: str) -> Any:
    from fhirpathpy import compile as fp_compile
    from fhirpathpy.models import models

    return fp_compile(text, models["r4"], {"userInvocationTable": _fallback_functions()})


@lru_cache(maxsize=1)
def _fallback_functions() -> dict[str, Any]:
    def has_value(inputs: list[Any]) -> list[bool]:
        return [len(inputs) == 1 and not isinstance(inputs[0], (dict, list))
                and inputs[0] is not None]
    return {"hasValue": {"fn": has_value, "arity": {0: []}}}


def _run_fallback(expr: Expression, focus: Any, env: Env) -> Collection:
    value = unwrap(focus)
    context = {"resource": env.resource, "rootResource": env.root, "context": value,
               "ucum": UCUM}
    return list(expr.fallback(value, context))
