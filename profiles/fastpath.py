"""Pure-Python short cuts for the commonest invariant shapes, so that most invariants need no
fhirpathpy evaluation.  A short cut only ever answers "the invariant holds" (True) or "don't
know" (None); on None the full FHIRPath expression is evaluated, so results never change."""

from __future__ import annotations

import re
from collections.abc import Callable
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


def _split_top(expr: str, op: str) -> tuple[str, str] | None:
    depth, quote = 0, False
    token = f" {op} "
    for i, ch in enumerate(expr):
        if ch == "'":
            quote = not quote
        elif not quote and ch == "(":
            depth += 1
        elif not quote and ch == ")":
            depth -= 1
        elif not quote and depth == 0 and expr.startswith(token, i):
            return expr[:i], expr[i + len(token):]
    return None


def shortcut(expr: str) -> Fast | None:
    """A sound short cut for ``expr`` or None.  Handles ``P``, ``P implies X`` and ``P or X``
    where P is a coding-existence test."""
    whole = _exact(expr)
    if whole is not None:
        return whole
    for op in ("implies", "or"):
        parts = _split_top(expr.strip(), op)
        if parts is None:
            continue
        left = _exact(parts[0])
        if left is None:
            return None
        if op == "implies":
            return lambda obj: True if not left(obj) else None
        return lambda obj: True if left(obj) else None
    return None
