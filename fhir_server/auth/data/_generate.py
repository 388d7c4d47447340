"""Developer tool (not used at run time): rebuild `search_paths.json` from the R4 definitions.

Usage: python -m fhir_server.auth.data._generate ../shared/fhir-r4

The output holds, per resource type, the FHIRPath of every token and reference search
parameter and the Patient compartment parameters. The policy uses it to check granular
scopes and patient context against a resource without the search engine.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path


def _split_top(expr: str) -> list[str]:
    """Split a FHIRPath union on top-level `|`."""
    parts, depth, cur = [], 0, []
    for ch in expr:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "|" and depth == 0:
            parts.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur).strip())
    return [p for p in parts if p]


def _for_type(expr: str, res_type: str) -> str | None:
    keep = [p for p in _split_top(expr) if p.lstrip("(").startswith(res_type + ".")]
    return " | ".join(keep) or None


_RESOLVE_IS = re.compile(r"\.where\(resolve\(\) is (\w+)\)")


def _without_resolve(expr: str) -> tuple[str, str | None]:
    """Drop `.where(resolve() is T)` (fhirpathpy cannot resolve); return (expr, T)."""
    targets = set(_RESOLVE_IS.findall(expr))
    return _RESOLVE_IS.sub("", expr), (targets.pop() if len(targets) == 1 else None)


def build(r4_dir: Path) -> dict:
    bundle = json.loads((r4_dir / "search-parameters.json").read_text())
    params: dict[str, dict[str, dict[str, str]]] = {}
    for entry in bundle["entry"]:
        sp = entry["resource"]
        if sp.get("type") not in ("token", "reference") or not sp.get("expression"):
            continue
        for base in sp["base"]:
            expr = _for_type(sp["expression"], base)
            if expr:
                expr, target = _without_resolve(expr)
                spec = {"type": sp["type"], "expr": expr}
                if target:
                    spec["target"] = target
                params.setdefault(base, {})[sp["code"]] = spec
    comp = json.loads((r4_dir / "compartmentdefinition-patient.json").read_text())
    compartment = {r["code"]: r["param"] for r in comp["resource"] if r.get("param")}
    return {"params": params, "patient_compartment": compartment}


if __name__ == "__main__":
    out = Path(__file__).with_name("search_paths.json")
    out.write_text(json.dumps(build(Path(sys.argv[1])), sort_keys=True, separators=(",", ":")))
    print(f"wrote {out} ({out.stat().st_size} bytes)")
