"""Refuse request text that no FHIR value can hold: control characters (U+0000-U+001F but
tab, line feed and carriage return) in a path, a search parameter or conditional criteria.
Nothing stored can match them, and the database must never see them (PostgreSQL cannot
even compare a text holding U+0000: a 500 before this check)."""

from __future__ import annotations

import re

from fhir_server.errors import FhirError
from fhir_server.resource_types import is_resource_type

_CONTROL = re.compile("[\\x00-\\x08\\x0b\\x0c\\x0e-\\x1f]")


def refuse_control_in_path(path: str) -> None:
    """400 when the request path (relative to the FHIR base) holds a control character."""
    if _CONTROL.search(path):
        head = next((s for s in path.split("/") if s), "")
        raise FhirError(400, "invalid", "The request path contains a control character "
                        "(U+0000-U+001F): no FHIR id, type or operation name has one",
                        expression=f"{head}.id" if is_resource_type(head) else "url")


def refuse_control_in_params(params: list[tuple[str, str]], what: str = "Search parameter"
                             ) -> None:
    """400 naming the first parameter whose name or value holds a control character."""
    for name, value in params:
        if _CONTROL.search(name) or _CONTROL.search(value):
            shown = _CONTROL.sub("?", name)
            raise FhirError(400, "invalid", f"{what} {shown!r} contains a control character "
                            "(U+0000-U+001F): no FHIR value has one", expression=shown)
