"""Reference helpers: compare literal references in relative or absolute form."""

from __future__ import annotations

import re
from typing import Any

_HISTORY = re.compile(r"/_history/[^/]+$")
_TAIL = re.compile(r"([A-Z][A-Za-z]+/[A-Za-z0-9\-.]{1,64})$")


def normalize_ref(ref: str | None, base_url: str | None = None) -> str | None:
    """`ref` without a version suffix; relative ("Type/id") when it lives under `base_url`."""
    if not ref:
        return None
    ref = _HISTORY.sub("", ref.strip())
    if base_url:
        base = base_url.rstrip("/") + "/"
        if ref.startswith(base):
            ref = ref[len(base):]
    return ref


def same_ref(a: str | None, b: str | None, base_url: str | None = None) -> bool:
    """True when both references name the same resource (ignoring version and our base)."""
    na, nb = normalize_ref(a, base_url), normalize_ref(b, base_url)
    return na is not None and na == nb


def ref_type(ref: str | None) -> str | None:
    """Resource type named by a literal reference ("Organization/1" -> "Organization")."""
    if not ref:
        return None
    match = _TAIL.search(normalize_ref(ref) or "")
    return match.group(1).split("/")[0] if match else None


def reference_of(element: Any) -> str | None:
    """`element.reference` of a Reference element (or None)."""
    if isinstance(element, dict):
        value = element.get("reference")
        return value if isinstance(value, str) else None
    return None


def resource_ref(resource: dict) -> str:
    """Relative literal reference "Type/id" of a resource dict."""
    return f"{resource.get('resourceType')}/{resource.get('id')}"
