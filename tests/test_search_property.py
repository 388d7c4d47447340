"""Property test: the SQL engine agrees with a brute-force evaluator on random data.

The brute-force side evaluates each SearchParameter's official FHIRPath expression (from
tests/data, with `resolve() is T` rewritten to a reference prefix check) over every stored
resource with fhirpathpy, and applies the FHIR matching rules in plain Python.
"""

from __future__ import annotations

import calendar
import re
import unicodedata
from datetime import datetime

import fhirpathpy
import pytest
from fhirpathpy.models import models
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fhir_server.interactions.search import search_bundle
from tests.reference_data import search_parameters
from tests.search_fixtures import codes, coding, dates, names, store, systems, wipe

BASE = "http://test.local/fhir"
PARAMS = {
    "Task": {"status": "token", "owner": "reference", "authored-on": "date", "code": "token",
             "focus": "reference"},
    "Patient": {"name": "string", "birthdate": "date", "gender": "token",
                "identifier": "token"},
    "Observation": {"code": "token", "value-quantity": "quantity", "date": "date",
                    "subject": "reference"},
}


def _expressions() -> dict[tuple[str, str], object]:
    bundle = search_parameters()
    out = {}
    for e in bundle["entry"]:
        sp = e["resource"]
        for rt, wanted in PARAMS.items():
            if sp["code"] in wanted and rt in sp["base"]:
                branches = [b.strip() for b in sp["expression"].split("|")
                            if b.strip().lstrip("(").startswith(rt + ".")]
                expr = " | ".join(branches)
                expr = re.sub(r"resolve\(\) is (\w+)", r"reference.startsWith('\1/')", expr)
                out[(rt, sp["code"])] = fhirpathpy.compile(expr, models["r4"])
    return out


EXPR = _expressions()

# -- brute-force matching ------------------------------------------------------------------


def norm(s: str) -> str:
    d = unicodedata.normalize("NFKD", s)
    return " ".join("".join(c for c in d if not unicodedata.combining(c)).casefold().split())


def drange(text: str) -> tuple[datetime, datetime]:
    parts = text.replace("Z", "").split("T")
    ymd = [int(x) for x in parts[0].split("-")]
    if len(parts) == 2:
        start = datetime.fromisoformat(text.replace("Z", "+00:00")).replace(tzinfo=None)
        return start, start.replace(microsecond=0) + (datetime(2000, 1, 1, 0, 0, 1)
                                                       - datetime(2000, 1, 1))
    if len(ymd) == 1:
        return datetime(ymd[0], 1, 1), datetime(ymd[0] + 1, 1, 1)
    if len(ymd) == 2:
        y, m = ymd
        return datetime(y, m, 1), datetime(y + (m == 12), m % 12 + 1, 1)
    y, m, d = ymd
    last = calendar.monthrange(y, m)[1]
    end = datetime(y, m, d + 1) if d < last else datetime(y + (m == 12), m % 12 + 1, 1)
    return datetime(y, m, d), end


def date_match(prefix: str, value: str, node: object) -> bool:
    if isinstance(node, dict):
        lo = drange(node["start"])[0] if node.get("start") else datetime.min
        hi = drange(node["end"])[1] if node.get("end") else datetime.max
    else:
        lo, hi = drange(str(node))
    sl, sh = drange(value)
    inside = lo >= sl and hi <= sh
    return {"eq": inside, "ne": not inside, "gt": hi > sh, "lt": lo < sl,
            "ge": hi > sh or inside, "le": lo < sl or inside, "sa": lo >= sh,
            "eb": hi <= sl}[prefix]


def token_pairs(node: object) -> list[tuple[str | None, str | None]]:
    if isinstance(node, str):
        return [(None, node)]
    if isinstance(node, dict):
        if "coding" in node:
            return [(c.get("system"), c.get("code")) for c in node["coding"]]
        if "value" in node:
            return [(node.get("system"), node["value"])]
        return [(node.get("system"), node.get("code"))]
    return []


def value_match(ptype: str, modifier: str | None, value: str, node: object) -> bool:
    if ptype == "string":
        texts = []
        if isinstance(node, dict):
            for k in ("family", "given", "text"):
                v = node.get(k)
                texts += v if isinstance(v, list) else [v] if v else []
        else:
            texts = [node]
        if modifier == "exact":
            return value in texts
        if modifier == "contains":
            return any(norm(value) in norm(t) for t in texts)
        return any(norm(t).startswith(norm(value)) for t in texts)
    if ptype == "token":
        if "|" in value:
            system, code = value.split("|", 1)
            return any((system == "" and s is None or s == system) and (not code or c == code)
                       for s, c in token_pairs(node))
        return any(c == value for _s, c in token_pairs(node))
    if ptype == "reference":
        return isinstance(node, dict) and node.get("reference") == value
    if ptype == "date":
        prefix, v = (value[:2], value[2:]) if value[:2].isalpha() else ("eq", value)
        return date_match(prefix, v, node)
    if ptype == "quantity":
        prefix, v = (value[:2], value[2:]) if value[:2].isalpha() else ("eq", value)
        q = float(node["value"])
        n = float(v)
        return {"eq": n - 0.5 <= q < n + 0.5, "gt": q > n, "lt": q < n, "ge": q >= n,
                "le": q <= n, "ne": not n - 0.5 <= q < n + 0.5}[prefix]
    raise AssertionError(ptype)


def brute_matches(resource: dict, rt: str, name: str, value: str) -> bool:
    code, _, modifier = name.partition(":")
    ptype = PARAMS[rt][code]
    nodes = EXPR[(rt, code)](resource)
    if modifier == "missing":
        return (not nodes) == (value == "true")
    hit = any(value_match(ptype, modifier or None, v, n) for v in value.split(",")
              for n in nodes)
    return not hit if modifier == "not" else hit


# -- random data ----------------------------------------------------------------------------

refs = st.sampled_from(["Organization/o1", "Organization/o2", "Patient/p1", "Practitioner/x"])


@st.composite
def task(draw, i):
    t = {"resourceType": "Task", "id": f"t{i}", "intent": "order",
         "status": draw(st.sampled_from(["requested", "accepted", "completed"]))}
    if draw(st.booleans()):
        t["owner"] = {"reference": draw(refs)}
    if draw(st.booleans()):
        t["authoredOn"] = draw(dates)
    if draw(st.booleans()):
        t["code"] = {"coding": [coding(draw(systems), draw(codes))]}
    if draw(st.booleans()):
        t["focus"] = {"reference": draw(refs)}
    return t


@st.composite
def patient(draw, i):
    p = {"resourceType": "Patient", "id": f"p{i}"}
    if draw(st.booleans()):
        p["name"] = [{"family": draw(names), "given": draw(st.lists(names, max_size=2))}]
    if draw(st.booleans()):
        p["birthDate"] = draw(dates).split("T")[0]
    if draw(st.booleans()):
        p["gender"] = draw(st.sampled_from(["male", "female", "other"]))
    if draw(st.booleans()):
        p["identifier"] = [{"system": draw(st.sampled_from(["http://s1", "http://s2"])),
                            "value": draw(codes)}]
    return p


@st.composite
def observation(draw, i):
    o = {"resourceType": "Observation", "id": f"o{i}", "status": "final",
         "code": {"coding": [coding(draw(systems), draw(codes))
                             for _ in range(draw(st.integers(1, 2)))]}}
    if draw(st.booleans()):
        o["valueQuantity"] = {"value": draw(st.integers(0, 20)), "unit": "1"}
    if draw(st.booleans()):
        o["effectiveDateTime"] = draw(dates)
    elif draw(st.booleans()):
        o["effectivePeriod"] = {"start": draw(dates)}
    if draw(st.booleans()):
        o["subject"] = {"reference": draw(refs)}
    return o


GEN = {"Task": task, "Patient": patient, "Observation": observation}


def value_for(draw, rt: str, code: str) -> tuple[str, str]:
    ptype = PARAMS[rt][code]
    mods = {"token": ["", ":not", ":missing"], "string": ["", ":exact", ":contains",
                                                          ":missing"],
            "reference": ["", ":missing"], "date": ["", ":missing"],
            "quantity": [""]}[ptype]
    mod = draw(st.sampled_from(mods))
    if mod == ":missing":
        return code + mod, draw(st.sampled_from(["true", "false"]))
    if ptype == "token":
        if code == "status":
            one = st.sampled_from(["requested", "accepted", "completed"])
        elif code == "gender":
            one = st.sampled_from(["male", "female"])
        else:
            one = st.one_of(codes, st.tuples(st.sampled_from(["http://s1", ""]), codes).map(
                "|".join), st.just("http://s2|"))
    elif ptype == "string":
        one = st.sampled_from(["elo", "Éloïse", "mar", "anne", "ann", "ri"])
    elif ptype == "reference":
        one = refs
    elif ptype == "date":
        one = st.tuples(st.sampled_from(["", "eq", "ne", "gt", "lt", "ge", "le", "sa", "eb"]),
                        dates).map("".join)
    else:
        one = st.tuples(st.sampled_from(["", "gt", "lt", "ge", "le", "ne"]),
                        st.integers(0, 20).map(str)).map("".join)
    vals = draw(st.lists(one, min_size=1, max_size=2))
    return code + mod, ",".join(vals)


@st.composite
def scenario(draw):
    rt = draw(st.sampled_from(sorted(PARAMS)))
    resources = [draw(GEN[rt](i)) for i in range(draw(st.integers(1, 12)))]
    query = [value_for(draw, rt, draw(st.sampled_from(sorted(PARAMS[rt]))))
             for _ in range(draw(st.integers(1, 2)))]
    return rt, resources, query


@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(case=scenario())
def test_sql_engine_matches_brute_force(database, case):
    rt, resources, query = case
    with database.write() as conn:
        wipe(conn)
        for r in resources:
            store(conn, r)
    with database.read() as conn:
        bundle = search_bundle(conn, rt, query + [("_count", "1000")], base_url=BASE,
                               strict=True)
    got = sorted(e["resource"]["id"] for e in bundle.get("entry", []))
    expected = sorted(r["id"] for r in resources
                      if all(brute_matches(r, rt, n, v) for n, v in query))
    assert got == expected, (query, resources)
    assert bundle["total"] == len(expected)


@pytest.mark.parametrize("sort", ["authored-on", "-authored-on", "status,-_id"])
@settings(max_examples=8, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(tasks=st.integers(1, 12).flatmap(lambda n: st.tuples(*[task(i) for i in range(n)])))
def test_sort_and_paging_match_brute_force(database, sort, tasks):
    with database.write() as conn:
        wipe(conn)
        for t in tasks:
            store(conn, t)

    def key(t):
        out = []
        for k in sort.split(","):
            desc = k.startswith("-")
            code = k.lstrip("-")
            if code == "_id":
                v = t["id"]
            elif code == "status":
                v = t["status"]
            else:
                v = drange(t["authoredOn"])[1 if desc else 0] if "authoredOn" in t else None
            out.append((v is None, _Rev(v) if desc and v is not None else v))
        return out

    expected = [t["id"] for t in sorted(tasks, key=key)]  # stable: insertion (pid) order
    got, prev_pages = [], []
    params = [("_sort", sort), ("_count", "3")]
    with database.read() as conn:
        bundle = search_bundle(conn, "Task", params, base_url=BASE, strict=True)
        while True:
            page = [e["resource"]["id"] for e in bundle.get("entry", [])]
            got += page
            prev_pages.append(page)
            nxt = [lk["url"] for lk in bundle["link"] if lk["relation"] == "next"]
            if not nxt:
                break
            cursor = nxt[0].split("_cursor=")[1]
            bundle = search_bundle(conn, "Task", params + [("_cursor", cursor)],
                                   base_url=BASE, strict=True)
        # walk back with previous links: the same pages in reverse
        back = [page]
        while True:
            prv = [lk["url"] for lk in bundle["link"] if lk["relation"] == "previous"]
            if not prv:
                break
            bundle = search_bundle(conn, "Task", params + [("_cursor", prv[0].split(
                "_cursor=")[1])], base_url=BASE, strict=True)
            back.append([e["resource"]["id"] for e in bundle.get("entry", [])])
    assert got == expected
    assert [x for p in reversed(back) for x in p] == expected


class _Rev:
    """Reverse ordering wrapper for descending sort keys."""

    def __init__(self, v):
        self.v = v

    def __lt__(self, other):
        return self.v > other.v

    def __eq__(self, other):
        return self.v == other.v
