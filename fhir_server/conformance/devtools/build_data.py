"""Developer tool: build the kit's shipped data from the Gravity IG material in ../shared.

Run from the repository root:

    .venv/bin/python -m fhir_server.conformance.devtools.build_data

Writes `fhir_server/conformance/data/requirements.json` (the IG's narrative conformance
statements: key, conformance verbs, text) and `data/capabilitystatements/*.json.gz` (the
actor CapabilityStatements). The CapabilityStatement JSON in ../shared was converted from FSH
by a simple reader, so this tool re-reads the FSH instance of each actor and refuses to write
when the expectations it finds (resources, profiles, interactions, search parameters,
includes, operations, with their SHALL/SHOULD/MAY) differ from the JSON. The kit never
imports this module.
"""

from __future__ import annotations

import gzip
import json
import re
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[3]
SHARED = REPO.parent / "shared" / "gravity"
DATA = Path(__file__).resolve().parents[1] / "data"
ACTORS = ("ReferralSource", "CoordinationPlatform", "ReferralRecipient")
EXPECTATION = "http://hl7.org/fhir/StructureDefinition/capabilitystatement-expectation"
PRIMITIVE_LISTS = {"supportedProfile", "searchInclude", "searchRevInclude", "format"}
SEGMENT = re.compile(r"^([A-Za-z_][\w-]*)(?:\[(\d+|=|\+)\])?$")


def build_requirements() -> dict[str, Any]:
    """The Requirements resource reduced to what the kit reports."""
    source = json.loads((SHARED / "official" / "Requirements-fromNarrative.json").read_text())
    statements = []
    for st in source["statement"]:
        shall_not = any(e.get("valueBoolean") for e in st.get("extension", [])
                        if e["url"].endswith("requirements-statementshallnot"))
        statements.append({"key": st["key"], "label": st.get("label", ""),
                           "conformance": st.get("conformance") or (
                               ["SHALL-NOT"] if shall_not else []),
                           "text": st["requirement"]})
    return {"url": source["url"], "version": "3.0.0", "statements": statements}


def _split(path: str) -> list[str]:
    return path.split(".")


def fsh_instance(path: Path) -> dict[str, Any]:
    """Assignment rules (`* a[+].b = value`) of one FSH instance as a JSON-like tree."""
    root: dict[str, Any] = {}
    last: dict[str, int] = {}
    for raw in path.read_text().splitlines():
        if not raw.startswith("* ") or " = " not in raw:
            continue
        lhs, rhs = raw[2:].split(" = ", 1)
        node: Any = root
        prefix = ""
        segments = _split(lhs.strip())
        for n, seg in enumerate(segments):
            m = SEGMENT.match(seg)
            if m is None:
                raise ValueError(f"cannot read FSH path {lhs!r}")
            name, index = m.group(1), m.group(2)
            prefix = f"{prefix}.{name}"
            key = prefix
            if index == "+":
                last[key] = last.get(key, -1) + 1
            elif index == "=":
                last.setdefault(key, 0)
            else:
                last[key] = int(index or 0) if index is not None else last.get(key, 0) \
                    if name not in PRIMITIVE_LISTS and index is None and key in last else 0
            i = last[key]
            prefix = f"{prefix}[{i}]"
            final = n == len(segments) - 1
            if name in PRIMITIVE_LISTS and not final:
                # `supportedProfile.extension...`: the primitive's own extension (`_name`)
                lst = node.setdefault(f"_{name}", [])
            else:
                lst = node.setdefault(name, [])
            while len(lst) <= i:
                lst.append({} if not (final and name in PRIMITIVE_LISTS) else None)
            if final:
                lst[i] = _value(rhs.strip())
            else:
                if lst[i] is None:
                    lst[i] = {}
                node = lst[i]
    return root


def _value(raw: str) -> Any:
    if raw.startswith('"'):
        return json.loads(raw.split('" ', 1)[0] + '"' if not raw.endswith('"') else raw)
    if raw.startswith("#"):
        return raw[1:]
    if "#" in raw:
        return raw.rsplit("#", 1)[1]
    if raw in ("true", "false"):
        return raw == "true"
    return raw


def _exp(node: dict | None) -> str:
    for ext in (node or {}).get("extension", []) or []:
        if ext.get("url") == EXPECTATION:
            return ext.get("valueCode", "-")
    return "-"


def expectations(cs: dict[str, Any], fsh: bool) -> list[tuple]:
    """A comparable projection of the expectations (FSH tree or CapabilityStatement JSON)."""
    out: list[tuple] = []
    for rest in cs.get("rest", []):
        mode = rest["mode"][0] if fsh else rest["mode"]
        for res in rest.get("resource", []):
            rtype = res["type"][0] if fsh else res["type"]
            out.append((mode, rtype, "resource", "", _exp(res)))
            profiles = res.get("supportedProfile", []) or []
            marks = res.get("_supportedProfile", []) or []
            for i, prof in enumerate(profiles):
                out.append((mode, rtype, "profile", prof, _exp(marks[i] if i < len(marks)
                                                                else None)))
            includes = res.get("searchInclude", []) or []
            imarks = res.get("_searchInclude", []) or []
            for i, inc in enumerate(includes):
                out.append((mode, rtype, "include", inc, _exp(imarks[i] if i < len(imarks)
                                                               else None)))
            for kind, field, label in (("interaction", "interaction", "code"),
                                       ("searchParam", "searchParam", "name"),
                                       ("operation", "operation", "name")):
                for item in res.get(field, []) or []:
                    value = item[label][0] if fsh and isinstance(item[label], list) \
                        else item[label]
                    out.append((mode, rtype, kind, value, _exp(item)))
    return sorted(out)


def _normalise_fsh(tree: dict[str, Any]) -> dict[str, Any]:
    """Unwrap the one-element lists the FSH reader makes for scalar elements."""
    def walk(node: Any, key: str = "") -> Any:
        if isinstance(node, dict):
            return {k: walk(v, k) for k, v in node.items()}
        if isinstance(node, list):
            items = [walk(v, key) for v in node]
            return items
        return node
    return walk(tree)


def check_against_fsh(actor: str, cs: dict[str, Any]) -> list[str]:
    """Differences between the derived JSON and the FSH instance (empty when they agree)."""
    fsh_path = SHARED / "fsh-3.0.0" / "input" / "fsh" / "instances" / f"SDOHCC-{actor}.fsh"
    tree = _normalise_fsh(fsh_instance(fsh_path))
    from_fsh = set(expectations(_flatten_scalars(tree), fsh=False))
    from_json = set(expectations(cs, fsh=False))
    return [f"only in FSH: {x}" for x in sorted(from_fsh - from_json)] + \
        [f"only in JSON: {x}" for x in sorted(from_json - from_fsh)]


def _flatten_scalars(node: Any, key: str = "") -> Any:
    """FSH tree → JSON shape: lists of length 1 for non-repeating elements become scalars."""
    repeating = {"rest", "resource", "interaction", "searchParam", "operation", "extension",
                 "supportedProfile", "_supportedProfile", "searchInclude", "_searchInclude",
                 "searchRevInclude", "format", "referencePolicy", "service", "coding"}
    if isinstance(node, dict):
        return {k: _flatten_scalars(v, k) for k, v in node.items()}
    if isinstance(node, list):
        items = [_flatten_scalars(v, key) for v in node]
        if key not in repeating and len(items) == 1:
            return items[0]
        return items
    return node


def main() -> int:
    (DATA / "capabilitystatements").mkdir(parents=True, exist_ok=True)
    problems: list[str] = []
    for actor in ACTORS:
        path = SHARED / "derived-from-fsh" / f"CapabilityStatement-SDOHCC-{actor}.json"
        cs = json.loads(path.read_text())
        diffs = check_against_fsh(actor, cs)
        problems += [f"{actor}: {d}" for d in diffs]
        out = DATA / "capabilitystatements" / f"SDOHCC-{actor}.json.gz"
        with gzip.open(out, "wt", encoding="utf-8", compresslevel=9) as fh:
            json.dump(cs, fh, separators=(",", ":"), sort_keys=True)
        print(f"{actor}: {len(expectations(cs, fsh=False))} expectations, FSH "
              f"{'agrees' if not diffs else 'DIFFERS'}")
    if problems:
        print("\n".join(problems), file=sys.stderr)
        return 1
    (DATA / "requirements.json").write_text(
        json.dumps(build_requirements(), indent=1, ensure_ascii=False) + "\n")
    print(f"requirements.json: {len(build_requirements()['statements'])} statements")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
