"""Developer tool: convert the FSH subset used by the Gravity SDOHCC profiles into
StructureDefinition JSON (differentials) and build the shipped base-R4 and terminology data.

Run from the repository root (reads ../shared, writes profiles/*):

    .venv/bin/python -m profiles.devtools.fsh_convert

It understands the rule forms the IG uses: cardinality and flags (``1..1 MS``), ``only`` type and
Reference restrictions, ``= value`` (pattern) and ``= value (exactly)`` (fixed), ``from VS
(strength)``, ``contains`` (incl. ``URL named name`` extensions), ``obeys``, ``^slicing``
caret rules and the ``SliceReferenceOnProfile`` rule set.  Other caret rules (documentation) are
ignored.  The product never imports this module.
"""

from __future__ import annotations

import gzip
import json
import re
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared"
FSH = SHARED / "gravity" / "fsh-3.0.0" / "input" / "fsh"
OUT_SD = REPO / "profiles" / "structuredefinitions"
OUT_VS = REPO / "profiles" / "valuesets"
OUT_BASE = REPO / "profiles" / "base"
# US Core 7.0.0 StructureDefinitions shipped as published by HL7 (JSON from HL7/US-Core,
# see profiles/SOURCES.md), not generated: kept when the folder is rewritten, and read here
# so the base data and value sets they need are built with the rest.
OFFICIAL_SDS = ("us-core-careteam.json", "us-core-documentreference.json")

SDOH = "http://hl7.org/fhir/us/sdoh-clinicalcare"
USCORE = "http://hl7.org/fhir/us/core"
FHIR_SD = "http://hl7.org/fhir/StructureDefinition/"

# Names used in the FSH that are defined outside the IG (US Core 7.0.0, SDC, THO, core R4).
EXTERNAL_NAMES: dict[str, str] = {
    "USCorePatientProfile": f"{USCORE}/StructureDefinition/us-core-patient",
    "USCoreOrganizationProfile": f"{USCORE}/StructureDefinition/us-core-organization",
    "USCorePractitionerProfile": f"{USCORE}/StructureDefinition/us-core-practitioner",
    "USCorePractitionerRoleProfile": f"{USCORE}/StructureDefinition/us-core-practitionerrole",
    "USCoreLocationProfile": f"{USCORE}/StructureDefinition/us-core-location",
    "USCoreGoalProfile": f"{USCORE}/StructureDefinition/us-core-goal",
    "USCoreServiceRequestProfile": f"{USCORE}/StructureDefinition/us-core-servicerequest",
    "USCoreObservationScreeningAssessmentProfile":
        f"{USCORE}/StructureDefinition/us-core-observation-screening-assessment",
    "USCoreSimpleObservationProfile": f"{USCORE}/StructureDefinition/us-core-simple-observation",
    "DetailedRace": f"{USCORE}/ValueSet/detailed-race",
    "DetailedEthnicity": f"{USCORE}/ValueSet/detailed-ethnicity",
    "USCoreObservationSexualOrientationProfile":
        f"{USCORE}/StructureDefinition/us-core-observation-sexual-orientation",
    "USCoreEncounterProfile": f"{USCORE}/StructureDefinition/us-core-encounter",
    "USCoreDocumentReferenceProfile": f"{USCORE}/StructureDefinition/us-core-documentreference",
    "USCoreQuestionnaireResponseProfile":
        f"{USCORE}/StructureDefinition/us-core-questionnaireresponse",
    "USCoreRelatedPersonProfile": f"{USCORE}/StructureDefinition/us-core-relatedperson",
    "USCoreCareTeam": f"{USCORE}/StructureDefinition/us-core-careteam",
    "USCoreCarePlanProfile": f"{USCORE}/StructureDefinition/us-core-careplan",
    "SDCQuestionnaireResponse":
        "http://hl7.org/fhir/uv/sdc/StructureDefinition/sdc-questionnaireresponse",
    "BackportSubscription":
        "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-subscription",
    "ConditionAssertedDate": f"{FHIR_SD}condition-assertedDate",
    # value sets
    "USCoreProcedureCodes": f"{USCORE}/ValueSet/us-core-procedure-code",
    "USCoreConditionCodes": f"{USCORE}/ValueSet/us-core-condition-code",
    "USCoreSurveyCodes": f"{USCORE}/ValueSet/us-core-survey-codes",
    "USCoreGoalCodes": f"{USCORE}/ValueSet/us-core-goal-description",
    "USCoreProblemOrHealthConcern": f"{USCORE}/ValueSet/us-core-problem-or-health-concern",
    "USCoreScreeningAssessmentConditionCategory":
        f"{USCORE}/ValueSet/us-core-screening-assessment-condition-category",
    "ConditionClinicalStatusCodes": "http://hl7.org/fhir/ValueSet/condition-clinical",
    "ConditionVerificationStatus": "http://hl7.org/fhir/ValueSet/condition-ver-status",
    "EventStatus": "http://hl7.org/fhir/ValueSet/event-status",
    "LOINCCodes": "http://hl7.org/fhir/ValueSet/observation-codes",
    "CareTeamMemberFunction": "http://cts.nlm.nih.gov/fhir/ValueSet/2.16.840.1.113762.1.4.1099.30",
    # code systems
    "ConditionCategoryCodes": "http://terminology.hl7.org/CodeSystem/condition-category",
    "SDOHCCCodeSystemTemporaryCodes": f"{SDOH}/CodeSystem/SDOHCC-CodeSystemTemporaryCodes",
}

# Profiles to emit (FSH name); the personal-characteristics profiles are out of scope.
WANTED = {
    "SDOHCCServiceRequest", "SDOHCCTaskForReferralManagement", "SDOHCCTaskForPatient",
    "SDOHCCConsent", "SDOHCCCondition", "SDOHCCGoal", "SDOHCCProcedure",
    "SDOHCCObservationScreeningResponse", "SDOHCCObservationAssessment",
    "SDOHCCObservationProgramEnrollmentStatus", "SDOHCCHealthcareService",
    "SDOHCCHealthcareServiceForReferralManagement", "SDOHCCLocation", "SDOHCCPractitionerRole",
    "SDOHCCGroup", "SDOHCCExtensionConditionAsserter",
    "SDOHCCExtensionHealthcareServiceCapacityStatus",
    "SDOHCCExtensionHealthcareServiceTelecomAppointment",
    # personal characteristics (race, ethnicity, sexual orientation, gender identity,
    # pronouns, recorded sex): the 2.3.0 examples claim them
    "SDOHCCObservationPersonalCharacteristic", "SDOHCCObservationRaceOMB",
    "SDOHCCObservationEthnicityOMB", "SDOHCCObservationSexualOrientation",
    "SDOHCCObservationGenderIdentity", "SDOHCCObservationPersonalPronouns",
    "SDOHCCObservationRecordedSexGender",
}

HEADER = re.compile(r"^(Profile|Extension|Invariant|Parent|Id|Title|Description|Severity|"
                    r"Expression|XPath|Alias|ValueSet|CodeSystem|Instance|InstanceOf|Usage|"
                    r"RuleSet|Logical|Mapping|Source|Target)\s*:\s*(.*)$")
CARD = re.compile(r"^(\d*)\.\.(\d+|\*)?$")
FLAGS = {"MS", "SU", "?!", "TU", "N", "D"}


def strip_comments(text: str) -> str:
    """Remove /* */ blocks and // line comments (not the // inside URLs)."""
    out: list[str] = []
    i, n, in_str = 0, len(text), False
    while i < n:
        ch = text[i]
        if in_str:
            out.append(ch)
            if ch == "\\" and i + 1 < n:
                out.append(text[i + 1])
                i += 1
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
            out.append(ch)
        elif text.startswith("//", i) and (i == 0 or text[i - 1] != ":"):
            while i < n and text[i] != "\n":
                i += 1
            continue
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            i = n if end < 0 else end + 2
            continue
        else:
            out.append(ch)
        i += 1
    return "".join(out)


def logical_lines(text: str) -> list[str]:
    """Join continuation lines (multi-line ``contains``) onto their rule."""
    out: list[str] = []
    for raw in strip_comments(text).splitlines():
        line = raw.rstrip()
        if not line.strip():
            continue
        s = line.strip()
        if s.startswith("*") or HEADER.match(s) or not out:
            out.append(s)
        else:
            out[-1] += " " + s
    return out


class Catalog:
    """Maps FSH names/aliases to canonical URLs and keeps parsed entities."""

    def __init__(self) -> None:
        self.aliases: dict[str, str] = {}
        self.names: dict[str, str] = dict(EXTERNAL_NAMES)
        self.invariants: dict[str, dict[str, str]] = {}
        self.entities: list[dict[str, Any]] = []

    def url(self, name: str) -> str:
        name = name.strip()
        base, _, _version = name.partition("|")
        if base in self.aliases:
            return self.aliases[base].partition("|")[0]
        if base in self.names:
            return self.names[base]
        if base.startswith(("http://", "https://", "urn:")):
            return base
        if base in base_names():
            return FHIR_SD + base  # a core resource or datatype name
        raise KeyError(f"unknown FSH name {name!r}")

    def scan(self, text: str) -> None:
        """First pass: aliases, entity names/ids, invariants."""
        current: dict[str, Any] | None = None
        for line in logical_lines(text):
            m = HEADER.match(line)
            if not m:
                if current is not None:
                    current["rules"].append(line[1:].strip())
                continue
            key, value = m.group(1), m.group(2).strip()
            if key == "Alias":
                alias, _, target = value.partition("=")
                self.aliases[alias.strip()] = target.strip()
            elif key in ("Profile", "Extension", "Invariant", "ValueSet", "CodeSystem",
                         "Instance", "RuleSet", "Logical", "Mapping"):
                current = {"kind": key, "name": value, "rules": [], "id": value}
                self.entities.append(current)
            elif current is not None:
                current[key.lower()] = value.strip('"')
        for ent in self.entities:
            kind, ident = ent["kind"], ent.get("id", ent["name"])
            if kind in ("Profile", "Extension"):
                self.names.setdefault(ent["name"], f"{SDOH}/StructureDefinition/{ident}")
                self.names.setdefault(ident, self.names[ent["name"]])
            elif kind == "ValueSet":
                self.names.setdefault(ent["name"], f"{SDOH}/ValueSet/{ident}")
                self.names.setdefault(ident, f"{SDOH}/ValueSet/{ident}")
            elif kind == "CodeSystem":
                self.names.setdefault(ent["name"], f"{SDOH}/CodeSystem/{ident}")
            elif kind == "Invariant":
                inv = {"key": ent["name"], "severity": ent.get("severity", "#error").lstrip("#"),
                       "human": ent.get("description", ""), "expression": ent.get("expression", "")}
                for rule in ent["rules"]:  # "* severity = #error" style
                    k, _, v = rule.partition("=")
                    k, v = k.strip(), v.strip()
                    if k == "severity":
                        inv["severity"] = v.lstrip("#")
                    elif k == "expression":
                        inv["expression"] = v.strip('"')
                    elif k == "description":
                        inv["human"] = v.strip('"')
                inv["expression"] = inv["expression"].replace("\n", " ").strip()
                self.invariants[ent["name"]] = inv


_BASE_NAMES: set[str] = set()


def base_names() -> set[str]:
    """Names of every R4 resource and datatype (for bare FSH type names)."""
    if not _BASE_NAMES:
        for f in ("profiles-types.json", "profiles-resources.json"):
            data = json.loads((SHARED / "fhir-r4" / f).read_text("utf-8"))
            _BASE_NAMES.update(e["resource"]["id"] for e in data["entry"]
                               if e["resource"].get("resourceType") == "StructureDefinition")
    return _BASE_NAMES


def fsh_path_to_id(root: str, path: str) -> str:
    """``input[AdditionalContent].value[x]`` -> ``Task.input:AdditionalContent.value[x]``."""
    if path in (".", ""):
        return root
    parts = []
    for seg in re.findall(r"[^.\[]+(?:\[[^\]]*\])*", path):
        m = re.match(r"^([^\[]+)((?:\[[^\]]*\])*)$", seg)
        assert m, seg
        name, brackets = m.group(1), m.group(2)
        slices = re.findall(r"\[([^\]]*)\]", brackets)
        out = name
        for s in slices:
            out += "[x]" if s == "x" else f":{s}"
        choice = re.match(r"^([a-z][A-Za-z]*?)([A-Z][A-Za-z]*)$", name)
        parts.append(out)
        if choice and name not in CHOICE_EXEMPT and choice.group(1) in CHOICE_ROOTS:
            parts[-1] = f"{choice.group(1)}[x]:{name}" + out[len(name):]
    return root + "." + ".".join(parts)


# Choice-type shortcuts appearing in the FSH (valueQuantity -> value[x]:valueQuantity).
CHOICE_ROOTS = {"value", "effective", "onset", "abatement", "performed", "occurrence", "source"}
CHOICE_EXEMPT = {"valueSet"}


def parse_value(cat: Catalog, raw: str) -> tuple[str, Any]:
    """Return (FHIR type suffix, value) for an FSH assignment value."""
    raw = raw.strip()
    if raw in ("true", "false"):
        return "Boolean", raw == "true"
    if raw.startswith('"'):
        return "String", raw.strip('"')
    if re.fullmatch(r"-?\d+", raw):
        return "Integer", int(raw)
    if "#" in raw:
        system, _, code = raw.partition("#")
        code = code.split()[0].strip('"')
        if not system:
            return "Code", code
        return "CodeableConcept", {"coding": [{"system": cat.url(system), "code": code}]}
    raise ValueError(f"unsupported value {raw!r}")


def split_top(text: str, sep: str) -> list[str]:
    """Split on ``sep`` outside parentheses."""
    out, depth, cur, i = [], 0, "", 0
    while i < len(text):
        ch = text[i]
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if depth == 0 and text.startswith(sep, i):
            out.append(cur)
            cur = ""
            i += len(sep)
            continue
        cur += ch
        i += 1
    out.append(cur)
    return [o.strip() for o in out if o.strip()]


class ProfileBuilder:
    """Accumulates differential elements for one profile."""

    def __init__(self, cat: Catalog, ent: dict[str, Any], base_types: dict[str, str]) -> None:
        self.cat = cat
        self.ent = ent
        parent = ent.get("parent", "Extension" if ent["kind"] == "Extension" else "")
        self.parent_url = cat.url(parent)
        ptype = parent.partition("|")[0]
        self.type = base_types.get(self.parent_url) or ptype
        self.root = self.type
        self.elements: dict[str, dict[str, Any]] = {}
        self.disc_index: dict[str, int] = {}

    def el(self, path: str) -> dict[str, Any]:
        eid = fsh_path_to_id(self.root, path)
        if eid not in self.elements:
            plain = re.sub(r":[^.]+", "", eid)
            e: dict[str, Any] = {"id": eid, "path": plain}
            last = eid.rsplit(".", 1)[-1]
            if ":" in last:
                e["sliceName"] = last.split(":", 1)[1]
            self.elements[eid] = e
        return self.elements[eid]

    def apply(self, rule: str) -> None:
        if rule.startswith("insert "):
            m = re.match(r"insert SliceReferenceOnProfile\((.+)\)", rule)
            if m:
                e = self.el(m.group(1).strip())
                e["slicing"] = {"discriminator": [{"type": "profile", "path": "resolve()"}],
                                "rules": "open"}
            return
        if rule.startswith("obeys ") or " obeys " in rule:
            path, _, keys = rule.partition("obeys")
            e = self.el(path.strip() or ".")
            for key in split_top(keys, " and "):
                inv = dict(self.cat.invariants[key.strip()])
                inv["source"] = self.cat.url(self.ent["name"])
                e.setdefault("constraint", []).append(inv)
            return
        m = re.match(r"^(\S+)\s+\^(\S+)\s*=\s*(.+)$", rule)
        if m:
            self._caret(m.group(1), m.group(2), m.group(3).strip())
            return
        if rule.startswith("^"):
            return
        m = re.match(r"^(\S+)\s+contains\s+(.+)$", rule)
        if m:
            self._contains(m.group(1), m.group(2))
            return
        m = re.match(r"^(\S+)\s+only\s+(.+)$", rule)
        if m:
            self._only(m.group(1), m.group(2))
            return
        m = re.match(r"^(\S+)\s+from\s+(\S+)\s*(?:\((\w+)\))?$", rule)
        if m:
            e = self.el(m.group(1))
            e["binding"] = {"strength": m.group(3) or "required",
                            "valueSet": self.cat.url(m.group(2))}
            return
        m = re.match(r"^(\S+)\s+=\s+(.+?)(\s+\(exactly\))?$", rule)
        if m:
            suffix, value = parse_value(self.cat, m.group(2))
            e = self.el(m.group(1))
            if suffix == "CodeableConcept" and self._is_coding(e["path"]):
                suffix, value = "Coding", value["coding"][0]
            e[("fixed" if m.group(3) else "pattern") + suffix] = value
            return
        parts = rule.split()
        path, rest = parts[0], parts[1:]
        e = self.el(path)
        for tok in rest:
            if CARD.match(tok):
                lo, _, hi = tok.partition("..")
                if lo:
                    e["min"] = int(lo)
                if hi:
                    e["max"] = hi
            elif tok == "MS":
                e["mustSupport"] = True
            elif tok in FLAGS:
                continue
            else:
                raise ValueError(f"cannot parse rule {rule!r}")

    def _is_coding(self, path: str) -> bool:
        return path.endswith(".coding") or path.endswith("Coding")

    def _caret(self, path: str, key: str, value: str) -> None:
        e = self.el(path)
        value = value.strip()
        m = re.match(r"^slicing\.discriminator(?:\[(\d+|=|\+)\])?\.(type|path)$", key)
        if m:
            disc = e.setdefault("slicing", {}).setdefault("discriminator", [])
            idx = m.group(1)
            pos = self.disc_index.get(e["id"], -1)
            if idx == "+" or (idx and idx.isdigit() and int(idx) >= len(disc)) or not disc:
                disc.append({})
                pos = len(disc) - 1
            elif idx and idx.isdigit():
                pos = int(idx)
            self.disc_index[e["id"]] = pos
            disc[pos][m.group(2)] = value.lstrip("#").strip('"')
        elif key == "slicing.rules":
            e.setdefault("slicing", {})["rules"] = value.lstrip("#")
        elif key == "mustSupport":
            e["mustSupport"] = value == "true"

    def _contains(self, path: str, items: str) -> None:
        base = self.el(path)
        is_ext = path.endswith("extension") or path.endswith("modifierExtension")
        if is_ext and "slicing" not in base:
            base["slicing"] = {"discriminator": [{"type": "value", "path": "url"}],
                               "rules": "open"}
        for item in split_top(items, " and "):
            toks = item.split()
            if "named" in toks:
                i = toks.index("named")
                ext_url, name, rest = self.cat.url(toks[0]), toks[i + 1], toks[i + 2:]
            else:
                ext_url, name, rest = None, toks[0], toks[1:]
            slice_path = f"{path}[{name}]"
            e = self.el(slice_path)
            if ext_url:
                e["type"] = [{"code": "Extension", "profile": [ext_url]}]
                self.el(f"{slice_path}.url")["fixedUri"] = ext_url
            elif is_ext:  # sub-extension of a complex extension: the url is the slice name
                self.el(f"{slice_path}.url")["fixedUri"] = name
            self.apply(" ".join([slice_path, *rest]) if rest else slice_path + " 0..*")

    def _only(self, path: str, spec: str) -> None:
        e = self.el(path)
        types: list[dict[str, Any]] = []
        for part in split_top(spec, " or "):
            m = re.match(r"^Reference\((.+)\)$", part)
            if m:
                targets = [self.cat.url(t) for t in split_top(m.group(1), " or ")]
                types.append({"code": "Reference", "targetProfile": targets})
            else:
                name = part.strip()
                url = self.cat.url(name)
                if url.startswith(FHIR_SD):
                    types.append({"code": url[len(FHIR_SD):]})
                else:
                    types.append({"code": name, "profile": [url]})
        e["type"] = types

    def to_sd(self) -> dict[str, Any]:
        ent = self.ent
        kind = ent["kind"]
        ident = ent.get("id", ent["name"])
        elements = sorted(self.elements.values(), key=lambda x: list(self.elements).index(x["id"]))
        root = {"id": self.root, "path": self.root}
        if self.root in self.elements:
            root = self.elements[self.root]
            elements = [e for e in elements if e["id"] != self.root]
        url = self.cat.url(ent["name"])
        sd = {
            "resourceType": "StructureDefinition",
            "id": ident,
            "url": url,
            "version": "7.0.0" if url.startswith(USCORE) else "3.0.0" if SDOH in url else "1.1.0",
            "name": ent["name"],
            "title": ent.get("title", ent["name"]),
            "status": "active",
            "description": ent.get("description", ""),
            "fhirVersion": "4.0.1",
            "kind": "complex-type" if kind == "Extension" else "resource",
            "abstract": False,
            "type": "Extension" if kind == "Extension" else self.type,
            "baseDefinition": self.parent_url,
            "derivation": "constraint",
            "differential": {"element": [root, *elements]},
        }
        if kind == "Extension":
            sd["context"] = _contexts(ent["rules"])
        return sd


def _contexts(rules: list[str]) -> list[dict[str, str]]:
    """The `^context.type` / `^context.expression` caret rules of an Extension (sdf-5 needs
    at least one context)."""
    contexts: list[dict[str, str]] = []
    for rule in rules:
        m = re.match(r"^\^context(\[(\+|=|\d+)\])?\.(type|expression)\s*=\s*(.+)$", rule)
        if not m:
            continue
        if not contexts or (m.group(2) == "+" ) or (m.group(3) in contexts[-1]):
            contexts.append({})
        contexts[-1][m.group(3)] = m.group(4).strip().lstrip("#").strip('"')
    return contexts or [{"type": "element", "expression": "Element"}]


def build_profiles() -> list[dict[str, Any]]:
    """Parse the IG FSH plus our US Core/backport/SDC essentials and return the SDs."""
    cat = Catalog()
    files = sorted(FSH.glob("*.fsh")) + sorted((FSH / "invariants").glob("*.fsh"))
    files += sorted((FSH / "profiles").glob("*.fsh")) + sorted((FSH / "extensions").glob("*.fsh"))
    files += sorted((FSH / "valuesets").glob("*.fsh")) + sorted((FSH / "codesystems").glob("*.fsh"))
    files.append(Path(__file__).with_name("uscore7.fsh"))
    for f in files:
        cat.scan(f.read_text(encoding="utf-8"))
    # Profiles declare in-file invariants after the profile (us-core-7); scan order is fine
    # because rules are applied only after every file was scanned.
    base_types: dict[str, str] = {}
    ordered = [e for e in cat.entities if e["kind"] in ("Profile", "Extension")]
    wanted = [e for e in ordered
              if e["name"] in WANTED or e["name"] in EXTERNAL_NAMES]
    # parents before children, to know each profile's type
    out: list[dict[str, Any]] = []
    pending = list(wanted)
    while pending:
        progressed = False
        for ent in list(pending):
            parent = ent.get("parent", "Extension")
            purl = cat.url(parent)
            if not purl.startswith(FHIR_SD) and purl not in base_types:
                continue
            b = ProfileBuilder(cat, ent, base_types)
            for rule in ent["rules"]:
                b.apply(rule)
            sd = b.to_sd()
            base_types[sd["url"]] = sd["type"]
            out.append(sd)
            pending.remove(ent)
            progressed = True
        if not progressed:
            raise RuntimeError(f"unresolved parents: {[p['name'] for p in pending]}")
    return out


def main() -> int:
    from profiles.devtools import build_data

    sds = build_profiles()
    OUT_SD.mkdir(parents=True, exist_ok=True)
    for old in OUT_SD.glob("*.json"):
        if old.name not in OFFICIAL_SDS:
            old.unlink()
    for sd in sds:
        sd = build_data.no_empty_strings(sd)  # FHIR forbids "" (omit the element instead)
        (OUT_SD / f"{sd['id']}.json").write_text(json.dumps(sd, indent=1) + "\n", "utf-8")
    official = [json.loads((OUT_SD / name).read_text("utf-8")) for name in OFFICIAL_SDS]
    build_data.build_base(sds + official, OUT_BASE)
    build_data.build_terminology(sds + official, OUT_VS)
    print(f"wrote {len(sds)} StructureDefinitions")
    return 0


def write_gz(path: Path, data: Any) -> None:
    """Write compact gzip'd JSON (deterministic)."""
    raw = json.dumps(data, separators=(",", ":"), sort_keys=True).encode()
    with gzip.GzipFile(path, "wb", mtime=0) as fh:
        fh.write(raw)


if __name__ == "__main__":
    sys.exit(main())
