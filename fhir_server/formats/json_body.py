"""Reading a JSON request body strictly and safely.

RFC 8259 JSON in UTF-8 (a leading byte-order mark is ignored, as RFC 8259 allows), with the
checks FHIR needs and a hostile client must not get around:

* a key repeated in one object is an error (FHIR JSON forbids it; "last wins" hides data);
* `NaN`, `Infinity` and unpaired surrogates (`"\\ud800"`) are not JSON and are refused;
* a number has at most `max_number_digits` significant digits and a decimal exponent within
  `max_number_exponent`, so it is a finite double and reads back from storage unchanged;
* objects and arrays nest at most `max_depth` deep (deeper trees would exhaust the stack
  of every recursive reader after the parser);
* a resource has no `null` member (FHIR JSON uses null only inside arrays of primitives);
  a JSON Patch document may (`"value": null`), its result may not.

Numbers keep their text when a float would not reproduce it (`12.50`, `1e-3`, 19-digit
integers): they become `FhirDecimal`, written back verbatim (see `decimals.py`).
Every problem is a `BodyError` naming the element as a FHIRPath expression.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from fhir_server.formats.decimals import FhirDecimal

BOM = b"\xef\xbb\xbf"
# A \uD800-\uDFFF escape: only then can a parsed string hold an unpaired surrogate.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
_LONGEST_EXACT_INT = 18  # digits an int may have and still fit in 64 bits


@dataclass(frozen=True)
class BodyLimits:
    """Limits on the shape of a request body (settings: FHIR_SERVER_MAX_JSON_DEPTH,
    FHIR_SERVER_MAX_NUMBER_DIGITS, FHIR_SERVER_MAX_NUMBER_EXPONENT)."""

    max_depth: int = 64
    max_number_digits: int = 32
    max_number_exponent: int = 300


class BodyError(ValueError):
    """A body that is not acceptable JSON, with the FHIRPath of the offending element."""

    def __init__(self, message: str, expression: str, code: str = "structure") -> None:
        super().__init__(message)
        self.message = message
        self.expression = expression
        self.code = code


class _Duplicate(Exception):
    def __init__(self, key: str) -> None:
        self.key = key


class _BadNumber(Exception):
    def __init__(self, text: str, why: str) -> None:
        self.text = text
        self.why = why


class _Found(Exception):
    """Raised at a bad node; each enclosing level adds its key on the way out."""

    def __init__(self, why: str) -> None:
        self.why = why
        self.path: list[str | int] = []


def parse_json_body(data: bytes, limits: BodyLimits, root: str = "Resource", *,
                    null_members: bool = False) -> Any:
    """Parse a request body; `root` names the top of expressions when the body has no
    resourceType; `null_members` allows `"key": null` (JSON Patch). Raises BodyError."""
    if data.startswith(BOM):
        data = data[len(BOM):]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BodyError(f"The body is not UTF-8: {exc}", root) from exc
    try:
        tree = json.loads(text, object_pairs_hook=_object, parse_float=_number_reader(limits),
                          parse_int=_int_reader(limits), parse_constant=_constant)
    except _Duplicate as dup:
        raise BodyError(f"Key '{dup.key}' appears twice in one object",
                        _locate(_duplicate_path, text, root)) from None
    except _BadNumber as bad:
        raise BodyError(f"Number {bad.text[:40]} is out of range: {bad.why}",
                        _locate(_number_path, text, root, bad.text), "value") from None
    except RecursionError:
        raise BodyError(f"The body nests deeper than {limits.max_depth} levels", root) from None
    except ValueError as exc:
        raise BodyError(f"Malformed JSON: {exc}", root) from None
    name = _root_name(tree, root)
    try:
        _check_shape(tree, limits.max_depth, null_members)
    except _Found as found:
        raise BodyError(found.why, format_path(name, found.path)) from None
    if _SURROGATE_ESCAPE.search(data):
        _check_strings(tree, name)
    return tree


def check_tree(tree: Any, limits: BodyLimits, root: str = "Resource") -> None:
    """The depth, null and number checks for a tree built another way (XML, a patch)."""
    name = _root_name(tree, root)
    try:
        _check_shape(tree, limits.max_depth, False)
        _check_numbers(tree, limits)
    except _Found as found:
        raise BodyError(found.why, format_path(name, found.path),
                        "value" if "number" in found.why.lower() else "structure") from None


def format_path(root: str, path: list[str | int]) -> str:
    """`Patient` + ['name', 0, 'given'] -> `Patient.name[0].given`."""
    out = root
    for key in path:
        out += f"[{key}]" if isinstance(key, int) else f".{key}"
    return out


def _root_name(tree: Any, fallback: str) -> str:
    if isinstance(tree, dict) and isinstance(tree.get("resourceType"), str) \
            and tree["resourceType"].isalnum():
        return tree["resourceType"]
    return fallback


# -- parser hooks ------------------------------------------------------------------------
def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _Duplicate(key)
            seen.add(key)
    return obj


def _constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def number_problem(text: str, limits: BodyLimits) -> str | None:
    """Why the number `text` is out of range, or None."""
    try:
        value = Decimal(text)
    except InvalidOperation:
        return "not a number"
    if not value.is_finite():
        return "not finite"
    digits = len(value.as_tuple().digits)
    if digits > limits.max_number_digits:
        return f"more than {limits.max_number_digits} significant digits"
    if value and abs(value.adjusted()) > limits.max_number_exponent:
        return f"its exponent is beyond ±{limits.max_number_exponent}"
    return None


def _number_reader(limits: BodyLimits):  # type: ignore[no-untyped-def]
    def read(text: str) -> float:
        if len(text) > 20 or "e" in text or "E" in text:
            why = number_problem(text, limits)
            if why:
                raise _BadNumber(text, why)
        value = float(text)
        return value if repr(value) == text else FhirDecimal(text)
    return read


def _int_reader(limits: BodyLimits):  # type: ignore[no-untyped-def]
    def read(text: str) -> int | float:
        digits = len(text.lstrip("-"))
        if digits <= _LONGEST_EXACT_INT:
            return int(text)
        why = number_problem(text, limits)
        if why:
            raise _BadNumber(text, why)
        return FhirDecimal(text)  # exact text kept; storage and orjson take any size
    return read


# -- tree checks ---------------------------------------------------------------------------
def _check_shape(node: Any, left: int, null_members: bool, depth: int = 1) -> None:
    """Nesting at most `left` levels; no null object member unless `null_members`."""
    if depth > left:
        raise _Found(f"The body nests deeper than {left} levels")
    is_object = type(node) is dict
    items = node.items() if is_object else enumerate(node) if type(node) is list else ()
    for key, value in items:
        kind = type(value)
        try:
            if kind is dict or kind is list:
                _check_shape(value, left, null_members, depth + 1)
            elif value is None and is_object and not null_members:
                raise _Found("null is not a FHIR JSON value (leave the element out)")
        except _Found as found:
            found.path.insert(0, key)
            raise


def _check_numbers(node: Any, limits: BodyLimits) -> None:
    items = node.items() if isinstance(node, dict) else enumerate(node) \
        if isinstance(node, list) else ()
    for key, value in items:
        try:
            if isinstance(value, (dict, list)):
                _check_numbers(value, limits)
            elif isinstance(value, (int, float)) and not isinstance(value, bool):
                text = value.text if isinstance(value, FhirDecimal) else repr(value)
                why = number_problem(text, limits)
                if why:
                    raise _Found(f"Number {text[:40]} is out of range: {why}")
        except _Found as found:
            found.path.insert(0, key)
            raise


def _check_strings(node: Any, root: str) -> None:
    """Refuse unpaired surrogates (they cannot be stored or sent as UTF-8)."""
    def visit(value: Any, path: list[str | int]) -> None:
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise BodyError("A string holds an unpaired UTF-16 surrogate",
                                format_path(root, path), "value") from None
        elif isinstance(value, dict):
            for k, v in value.items():
                visit(k, path)
                visit(v, [*path, k])
        elif isinstance(value, list):
            for i, v in enumerate(value):
                visit(v, [*path, i])
    visit(node, [])


# -- locating an error the fast parser could not place (error path only) --------------
class _Marked(dict):
    """An object that repeated a key (the second parse keeps it to find its path)."""

    duplicate = ""


def _locate(how: Any, text: str, root: str, *args: Any) -> str:
    """The expression `how` finds in `text`; `root` when the body is too deep to search."""
    try:
        return how(text, root, *args)
    except (RecursionError, ValueError):
        return root


def _duplicate_path(text: str, root: str) -> str:
    def mark(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        try:
            return _object(pairs)
        except _Duplicate as dup:
            marked = _Marked(pairs)
            marked.duplicate = dup.key
            return marked
    tree = json.loads(text, object_pairs_hook=mark, parse_constant=_constant)
    name = _root_name(tree, root)
    path = _find(tree, lambda n: isinstance(n, _Marked))
    if path is None:
        return name
    node: Any = tree
    for key in path:
        node = node[key]
    return format_path(name, [*path, node.duplicate])


def _number_path(text: str, root: str, number: str) -> str:
    tree = json.loads(text, parse_float=str, parse_int=str, parse_constant=_constant)
    name = _root_name(tree, root)
    path = _find(tree, lambda n: n == number)
    return format_path(name, path) if path is not None else name


def _find(node: Any, wanted: Any) -> list[str | int] | None:
    """The path of the first node (depth first) for which `wanted` is true."""
    if wanted(node):
        return []
    items = node.items() if isinstance(node, dict) else enumerate(node) \
        if isinstance(node, list) else ()
    for key, value in items:
        found = _find(value, wanted)
        if found is not None:
            return [key, *found]
    return None
