"""Exact FHIR decimals in JSON trees.

FHIR decimals are arbitrary-precision and their lexical form is significant (``0.10`` states
two digits of precision). JSON parsers turn them into binary floats, which keeps the value
for most inputs but not the lexical form, and loses digits for long values
(``12345678901234567890.5``).

The approach used by the format layer: a decimal read from XML becomes a ``FhirDecimal``, a
``float`` subclass that remembers its text. It compares and computes like the float, so code
that reads numbers keeps working, and it serialises back to its exact text:

* to XML: ``json_to_xml`` writes ``FhirDecimal.text`` (plain floats are written with
  ``repr``, the shortest text that reads back to the same float);
* to JSON with orjson: pass ``default=json_default`` (orjson refuses float subclasses
  otherwise, it never silently drops the text); ``orjson.dumps(tree, default=json_default)``
  writes ``0.10`` verbatim through ``orjson.Fragment``;
* from JSON: ``json.loads(text, parse_float=FhirDecimal)`` keeps the lexical form too.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import orjson


class FhirDecimal(float):
    """A float that carries the exact lexical form of a FHIR decimal in ``text``."""

    __slots__ = ("text",)
    text: str

    def __new__(cls, text: str | float | int) -> FhirDecimal:
        lexical = text if isinstance(text, str) else repr(text)
        obj = super().__new__(cls, lexical)
        obj.text = lexical
        return obj

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return self.text

    def __reduce__(self) -> tuple[type[FhirDecimal], tuple[str]]:
        return (FhirDecimal, (self.text,))

    def __deepcopy__(self, memo: dict[int, Any]) -> FhirDecimal:
        return self

    def __copy__(self) -> FhirDecimal:
        return self


def json_default(obj: Any) -> Any:
    """``default`` hook for ``orjson.dumps`` writing FhirDecimal values verbatim."""
    if isinstance(obj, FhirDecimal):
        return orjson.Fragment(obj.text)
    raise TypeError(f"Type is not JSON serializable: {type(obj).__name__}")


def decimal_text(value: Any) -> str | None:
    """The FHIR lexical form of a JSON decimal value, or None when it is not a number."""
    if isinstance(value, bool):
        return None
    if isinstance(value, FhirDecimal):
        return value.text
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            return None
        return repr(value)
    if isinstance(value, Decimal) and value.is_finite():
        return str(value)
    return None
