"""Reading `$referral-metrics` answers in tests: groups by dimension, figures by name."""

from __future__ import annotations

import csv
import importlib.util
import io
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def synthetic_population() -> ModuleType:
    """examples/synthetic_population.py as a module (the examples folder is no package)."""
    name = "synthetic_population"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
        module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
        sys.modules[name] = module
        spec.loader.exec_module(module)  # type: ignore[union-attr]
    return sys.modules[name]


def value_of(part: dict) -> Any:
    """The value[x] of a Parameters part (a Quantity gives its value)."""
    value = next((v for k, v in part.items() if k.startswith("value")), None)
    return value["value"] if isinstance(value, dict) and "value" in value else value


def groups(parameters: dict, dimension: str) -> dict[str, dict]:
    """The groups of one dimension by key (reference, code or display)."""
    out = {}
    for param in parameters.get("parameter") or []:
        if param.get("name") != "group":
            continue
        parts = param["part"]
        if value_of(parts[0]) != dimension:
            continue
        key = parts[1].get("valueCode") or parts[1].get("valueReference", {}).get(
            "reference") or parts[1].get("valueReference", {}).get("display")
        out[key] = flatten(parts)
    return out


def flatten(parts: list[dict]) -> dict[str, Any]:
    """A group's parts as figures: scalars by name; `outcome.completed`, `funnel.sent`,
    `funnel.sent.lost`, `duration.accept.median`, `stalled.stalled-not-accepted`,
    `screening.phq-9.responseRate`, `status.requested`, reasons as lists."""
    out: dict[str, Any] = {}
    for part in parts:
        name, sub = part["name"], part.get("part")
        if sub is None:
            out[name] = value_of(part)
            continue
        named = {p["name"]: p for p in sub}
        if name in ("status", "outcome"):
            out[f"{name}.{value_of(named['code'])}"] = value_of(named["count"])
        elif name == "funnel":
            stage = value_of(named["stage"])
            out[f"funnel.{stage}"] = value_of(named["count"])
            if "lost" in named:
                out[f"funnel.{stage}.lost"] = value_of(named["lost"])
        elif name == "duration":
            measure = value_of(named["measure"])
            for p in sub:
                if p["name"] == "bucket":
                    b = {q["name"]: q for q in p["part"]}
                    out[f"duration.{measure}.{value_of(b['code'])}"] = value_of(b["count"])
                elif p["name"] != "measure":
                    out[f"duration.{measure}.{p['name']}"] = value_of(p)
        elif name == "stalled":
            out[f"stalled.{value_of(named['clock'])}"] = value_of(named["count"])
        elif name == "screening":
            instrument = value_of(named["instrument"])
            for p in sub[1:]:
                out[f"screening.{instrument}.{p['name']}"] = value_of(p)
        else:  # rejectionReason, cancellationReason
            out.setdefault(name, []).append((value_of(named["reason"]),
                                             value_of(named["count"])))
    return out


def csv_rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))
