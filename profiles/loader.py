"""Load the shipped conformance resources (StructureDefinitions, ValueSets, CodeSystems, base R4
element data) once, and answer look-ups about them."""

from __future__ import annotations

import gzip
import json
import threading
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
FHIR_SD = "http://hl7.org/fhir/StructureDefinition/"

ANY = "*"  # every code of a system is accepted (system-level include, no concept list)


class _Membership:
    """Compiled content of one ValueSet: system -> set of codes, ANY, or 'unknown' filters."""

    def __init__(self) -> None:
        self.codes: dict[str, set[str] | str] = {}
        self.filtered: set[str] = set()  # systems included through filters we cannot evaluate
        self.excluded: dict[str, set[str]] = {}

    def contains(self, system: str | None, code: str) -> bool | None:
        if system is None:  # a bare `code` element: any system of the value set
            for sys_ in self.codes:
                if self.contains(sys_, code):
                    return True
            return None if self.filtered else False
        if code in self.excluded.get(system, ()):
            return False
        found = self.codes.get(system)
        if found == ANY:
            return True
        if isinstance(found, set) and code in found:
            return True
        if system in self.filtered:
            return None
        return False


class ProfileRegistry:
    """All conformance data shipped in ``profiles/``, loaded once."""

    def __init__(self, root: Path = HERE) -> None:
        self._sds: dict[str, dict[str, Any]] = {}
        for f in sorted((root / "structuredefinitions").glob("*.json")):
            sd = json.loads(f.read_text("utf-8"))
            self._sds[sd["url"]] = sd
        self._vs: dict[str, dict[str, Any]] = {}
        self._cs: dict[str, dict[str, Any]] = {}
        for f in sorted((root / "valuesets").glob("*.json")):
            res = json.loads(f.read_text("utf-8"))
            (self._vs if res["resourceType"] == "ValueSet" else self._cs)[res["url"]] = res
        with gzip.open(root / "base" / "r4-elements.json.gz") as fh:
            base = json.load(fh)
        self.base_elements: dict[str, dict[str, Any]] = base["elements"]
        self.base_bindings: dict[str, dict[str, str]] = base["bindings"]
        self.external_types: dict[str, str] = json.loads(
            (root / "base" / "external-profile-types.json").read_text("utf-8"))
        self._members: dict[str, _Membership] = {}
        self._lock = threading.Lock()

    def add(self, resources: list[dict[str, Any]]) -> None:
        """Make more conformance resources known (the definitions a feature publishes, e.g.
        the directory's extensions); the first definition of a URL wins."""
        with self._lock:
            for res in resources:
                kind, url = res.get("resourceType"), res.get("url")
                if not isinstance(url, str):
                    continue
                if kind == "StructureDefinition":
                    self._sds.setdefault(url, res)
                elif kind == "ValueSet":
                    self._vs.setdefault(url, res)
                elif kind == "CodeSystem":
                    self._cs.setdefault(url, res)

    # -- StructureDefinitions -------------------------------------------------------------
    def get(self, url: str) -> dict[str, Any] | None:
        """The StructureDefinition with this canonical URL (a ``|version`` suffix is ignored)."""
        return self._sds.get(url.partition("|")[0])

    def all_profiles(self) -> list[dict[str, Any]]:
        """Every shipped StructureDefinition (profiles and extension definitions)."""
        return list(self._sds.values())

    def all_resources(self) -> list[dict[str, Any]]:
        """Every shipped conformance resource: StructureDefinitions, ValueSets, CodeSystems."""
        return [*self._sds.values(), *self._vs.values(), *self._cs.values()]

    def resource_profiles(self) -> dict[str, list[str]]:
        """Resource type -> canonical URLs of the resource profiles we enforce."""
        out: dict[str, list[str]] = {}
        for sd in self._sds.values():
            if sd.get("kind") == "resource":
                out.setdefault(sd["type"], []).append(sd["url"])
        return out

    def profile_type(self, url: str) -> str | None:
        """The resource/data type a profile (or core type URL) constrains, when known."""
        url = url.partition("|")[0]
        sd = self._sds.get(url)
        if sd:
            return sd["type"]
        if url in self.external_types:
            return self.external_types[url]
        if url.startswith(FHIR_SD):
            name = url[len(FHIR_SD):]
            if name in self.base_elements:
                return name
        return None

    # -- terminology ----------------------------------------------------------------------
    def valueset(self, url: str) -> dict[str, Any] | None:
        """The shipped ValueSet resource with this canonical URL."""
        return self._vs.get(url.partition("|")[0])

    def codesystem(self, url: str) -> dict[str, Any] | None:
        """The shipped CodeSystem resource with this canonical URL."""
        return self._cs.get(url.partition("|")[0])

    def has_valueset(self, url: str) -> bool:
        return url.partition("|")[0] in self._vs

    def code_in_valueset(self, system: str | None, code: str, vs_url: str) -> bool | None:
        """True/False when membership is decidable offline; None when it is not (value set not
        shipped, or the code's system is included through a filter we cannot evaluate)."""
        m = self._membership(vs_url.partition("|")[0])
        if m is None:
            return None
        return m.contains(system, code)

    def _membership(self, url: str, depth: int = 0) -> _Membership | None:
        cached = self._members.get(url)
        if cached is not None or depth > 8:
            return cached
        vs = self._vs.get(url)
        if vs is None:
            return None
        m = _Membership()
        compose = vs.get("compose", {})
        for inc in compose.get("include", []):
            self._add(m, inc, depth, exclude=False)
        for exc in compose.get("exclude", []):
            self._add(m, exc, depth, exclude=True)
        with self._lock:
            self._members[url] = m
        return m

    def _add(self, m: _Membership, inc: dict[str, Any], depth: int, exclude: bool) -> None:
        system = inc.get("system")
        if exclude:
            if system and inc.get("concept"):
                m.excluded.setdefault(system, set()).update(c["code"] for c in inc["concept"])
            return
        for sub in inc.get("valueSet", []):
            other = self._membership(sub.partition("|")[0], depth + 1)
            if other is None:
                continue
            for s, codes in other.codes.items():
                self._merge(m, s, codes)
            m.filtered |= other.filtered
            for s, codes in other.excluded.items():
                m.excluded.setdefault(s, set()).update(codes)
        if not system:
            return
        if inc.get("concept"):
            self._merge(m, system, {c["code"] for c in inc["concept"]})
        elif inc.get("filter"):
            m.filtered.add(system)
        else:
            cs = self._cs.get(system)
            if cs is not None and cs.get("content") == "complete" and cs.get("concept"):
                self._merge(m, system, _all_codes(cs.get("concept", [])))
            else:
                self._merge(m, system, ANY)

    @staticmethod
    def _merge(m: _Membership, system: str, codes: set[str] | str) -> None:
        cur = m.codes.get(system)
        if cur == ANY or codes == ANY:
            m.codes[system] = ANY
        elif cur is None:
            m.codes[system] = set(codes)
        else:
            assert isinstance(cur, set)
            cur.update(codes)


def _all_codes(concepts: list[dict[str, Any]]) -> set[str]:
    out: set[str] = set()
    for c in concepts:
        out.add(c["code"])
        out |= _all_codes(c.get("concept", []))
    return out


_REGISTRY: ProfileRegistry | None = None
_REGISTRY_LOCK = threading.Lock()


def registry() -> ProfileRegistry:
    """The process-wide registry (loaded on first use)."""
    global _REGISTRY
    if _REGISTRY is None:
        with _REGISTRY_LOCK:
            if _REGISTRY is None:
                _REGISTRY = ProfileRegistry()
    return _REGISTRY
