"""Pure-Python short cuts for the commonest invariant shapes, so that most invariants need no
fhirpathpy evaluation.  A short cut only ever answers "the invariant holds" (True) or "don't
know" (None); on None the full FHIRPath expression is evaluated, so results never change."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

from fhir_server.paths import values_at

_CODING = r"coding\.where\(system\s*=\s*'([^']+)'\s+and\s+code\s*=\s*'([^']+)'\)\.exists\(\)"
# A.coding.where(system='S' and code='C').exists()
_P1 = re.compile(rf"^\(?\s*([A-Za-z][A-Za-z.]*)\.{_CODING}\s*\)?$")
# A.where(coding.where(system='S' and code='C').exists()).exists()
_P2 = re.compile(rf"^\(?\s*([A-Za-z][A-Za-z.]*)\.where\({_CODING}\)\.exists\(\)\s*\)?$")

Fast = Callable[[Any], "bool | None"]


def _has_coding(obj: Any, path: str, system: str, code: str) -> bool:
    for cc in values_at(obj, path):
        codings = cc.get("coding") if isinstance(cc, dict) else None
        if isinstance(codings, list) and any(
                isinstance(c, dict) and c.get("system") == system and c.get("code") == code
                for c in codings):
            return True
    return False


def _exact(expr: str) -> Fast | None:
    """A native evaluator for the whole expression, when it has a known shape."""
    expr = expr.strip()
    m = _P1.match(expr) or _P2.match(expr)
    if m:
        path, system, code = m.groups()
        return lambda obj: _has_coding(obj, path, system, code)
    return None


def _unquoted(expr: str) -> Iterator[tuple[int, str, int]]:
    """(position, character, parenthesis depth after it) for each character outside
    string literals."""
    depth, quote = 0, False
    for i, ch in enumerate(expr):
        if ch == "'":
            quote = not quote
        elif not quote:
            depth += (ch == "(") - (ch == ")")
            yield i, ch, depth


def _split_top(expr: str, op: str) -> tuple[str, str] | None:
    token = f" {op} "
    for i, ch, depth in _unquoted(expr):
        if depth == 0 and ch == " " and expr.startswith(token, i):
            return expr[:i], expr[i + len(token):]
    return None


_PLAIN_PATH = re.compile(r"[A-Za-z][A-Za-z0-9]*(?:\.[A-Za-z][A-Za-z0-9]*)*")
_PLAIN_STEPS = re.compile(r"(?:\.[A-Za-z][A-Za-z0-9]*)*")


def _emptiness_path(expr: str) -> str | None:
    """P for `P.empty()`, `P.exists().not()` and `P.where(...)[.a.b].empty()` (each true
    whenever the plain path P has no values), else None."""
    for suffix in (".exists().not()", ".empty()"):
        if expr.endswith(suffix):
            core = expr[: -len(suffix)]
            break
    else:
        return None
    if _PLAIN_PATH.fullmatch(core):
        return core
    head, sep, tail = core.partition(".where(")
    if suffix != ".empty()" or not sep or not _PLAIN_PATH.fullmatch(head):
        return None
    for i, _ch, depth in _unquoted(tail):
        if depth == -1:  # the parenthesis closing `where(`
            return head if _PLAIN_STEPS.fullmatch(tail[i + 1:]) else None
    return None


def _plain_values(obj: Any, path: str) -> list[Any] | None:
    """Values at a dotted path, or None when a step may name a choice element (`value`
    with a `valueQuantity` key): without type information that is not decided here."""
    current = [obj]
    for step in path.split("."):
        found: list[Any] = []
        for item in current:
            if not isinstance(item, dict):
                continue
            if step in item:
                value = item[step]
                found.extend(value if isinstance(value, list) else [value])
            elif any(k.startswith(step) and k[len(step):len(step) + 1].isupper()
                     for k in item):
                return None
        current = found
    return current


def _term(expr: str) -> Fast | None:
    """A native test for one `or` operand, answering True only when it surely holds."""
    expr = expr.strip()
    exact = _exact(expr)
    if exact is not None:
        return lambda obj: True if exact(obj) else None
    empty_path = _emptiness_path(expr)
    if empty_path is not None:
        return lambda obj: True if _plain_values(obj, empty_path) == [] else None
    if expr.endswith(".exists()") and _PLAIN_PATH.fullmatch(expr[: -len(".exists()")]):
        path = expr[: -len(".exists()")]
        return lambda obj: True if _plain_values(obj, path) else None
    return None


def _or_terms(expr: str) -> list[str]:
    terms = []
    rest = expr.strip()
    while (parts := _split_top(rest, "or")) is not None:
        terms.append(parts[0])
        rest = parts[1]
    return [*terms, rest]


def shortcut(expr: str) -> Fast | None:
    """A sound short cut for ``expr`` or None.  Handles a coding-existence test P,
    ``P implies X``, and ``A or B or ...`` where some operands are coding-existence,
    emptiness or existence tests of plain paths."""
    whole = _exact(expr)
    if whole is not None:
        return whole
    implies = _split_top(expr.strip(), "implies")
    if implies is not None:
        left = _exact(implies[0])
        if left is None:
            return None
        return lambda obj: True if not left(obj) else None
    terms = _or_terms(expr)
    natives = [t for t in (_term(term) for term in terms) if t is not None]
    if len(terms) < 2 or not natives:
        return None
    return lambda obj: True if any(t(obj) is True for t in natives) else None
