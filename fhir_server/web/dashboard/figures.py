"""The dashboard's tables, read from a `$referral-metrics` answer (pure: Parameters in,
tables out). One table model feeds the page and its CSV download, so the two always show
the same cells, and every cell is the API's figure, only formatted: counts as they are
("<11" and "suppressed" included), rates as percentages with the API's precision, durations
in the API's hours.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from fhir_server.web.charts import Bar

NOT_SHOWN = "—"
ORGANIZATION_VIEWS = {"owner": "receiving organization", "requester": "referring organization",
                      "category": "service category", "service": "service",
                      "priority": "priority", "month": "month", "week": "week"}
EQUITY_VIEWS = {"age-band": "age band", "sex": "sex", "race": "race",
                "ethnicity": "ethnicity", "language": "preferred language",
                "coverage": "coverage"}
OUTCOME_VIEWS = {"owner": "receiving organization", "category": "service category",
                 "service": "service"}
STAGES = (("sent", "Sent"), ("accepted", "Accepted"), ("started", "Care started"),
          ("completed", "Completed"))
BUCKETS = (("under-4h", "Under 4 hours"), ("4-24h", "4 to 24 hours"), ("1-3d", "1 to 3 days"),
           ("3-7d", "3 to 7 days"), ("1-2w", "1 to 2 weeks"), ("2-4w", "2 to 4 weeks"),
           ("4w-plus", "4 weeks or more"))
MEASURES = (("accept", "Time to accept"), ("first-service", "Time to first service"),
            ("completion", "Time to completion"))
CLOCKS = (("stalled-not-accepted", "Not accepted in time"),
          ("stalled-not-started", "Accepted but not started in time"),
          ("stalled-no-progress", "In care without progress"))
INSTRUMENTS = (("phq-9", "PHQ-9"), ("gad-7", "GAD-7"))


# -- reading the answer --------------------------------------------------------------------
def _value(part: dict) -> Any:
    value = next((v for k, v in part.items() if k.startswith("value")), None)
    return value["value"] if isinstance(value, dict) and "value" in value else value


@dataclass
class Group:
    """One group of the answer: its figures by name (see `read_group`)."""

    dimension: str
    key: str
    name: str
    figures: dict[str, Any] = field(default_factory=dict)

    def get(self, name: str) -> Any:
        return self.figures.get(name)


def read_group(parts: list[dict]) -> Group:
    """A `group` parameter: scalars by name; `funnel.sent`, `funnel.sent.lost`,
    `outcome.redirected`, `duration.accept.median`, `duration.accept.under-4h`,
    `stalled.stalled-not-accepted`, `screening.phq-9.responseRate`."""
    figures: dict[str, Any] = {}
    key = ""
    for part in parts:
        name, sub = part["name"], part.get("part")
        if name == "key":
            ref = part.get("valueReference") or {}
            key = part.get("valueCode") or ref.get("reference") or ref.get("display") or ""
            continue
        if sub is None:
            figures[name] = _value(part)
            continue
        named = {p["name"]: p for p in sub}
        if name in ("status", "outcome"):
            figures[f"{name}.{_value(named['code'])}"] = _value(named["count"])
        elif name == "funnel":
            stage = _value(named["stage"])
            figures[f"funnel.{stage}"] = _value(named["count"])
            if "lost" in named:
                figures[f"funnel.{stage}.lost"] = _value(named["lost"])
        elif name == "duration":
            measure = _value(named["measure"])
            for p in sub:
                if p["name"] == "bucket":
                    bucket = {q["name"]: q for q in p["part"]}
                    figures[f"duration.{measure}.{_value(bucket['code'])}"] = _value(
                        bucket["count"])
                elif p["name"] != "measure":
                    figures[f"duration.{measure}.{p['name']}"] = _value(p)
        elif name == "stalled":
            figures[f"stalled.{_value(named['clock'])}"] = _value(named["count"])
        elif name == "screening":
            instrument = _value(named["instrument"])
            for p in sub[1:]:
                figures[f"screening.{instrument}.{p['name']}"] = _value(p)
    return Group(str(figures.get("dimension") or ""), key, str(figures.get("name") or key),
                 figures)


def read_answer(parameters: dict) -> dict[str, list[Group]]:
    """The groups of each dimension, in the API's order."""
    out: dict[str, list[Group]] = {}
    for param in (parameters or {}).get("parameter") or []:
        if param.get("name") == "group":
            group = read_group(param.get("part") or [])
            out.setdefault(group.dimension, []).append(group)
    return out


def threshold_of(parameters: dict) -> int | None:
    for param in (parameters or {}).get("parameter") or []:
        if param.get("name") == "smallCellThreshold":
            return int(param["valueInteger"])
    return None


# -- formatting ------------------------------------------------------------------------------
def count(value: Any) -> str:
    """A count as the API gives it ("<11" and "suppressed" too)."""
    return NOT_SHOWN if value is None else str(value)


def percent(value: Any) -> str:
    """A rate (0..1, four places) as a percentage with the same precision."""
    if value is None or isinstance(value, str):
        return NOT_SHOWN
    return f"{round(float(value) * 100, 2):g}%"


def hours(value: Any) -> str:
    """The API's hours, with days beside them from two days on: `50 h (2.1 days)`."""
    if value is None or isinstance(value, str):
        return NOT_SHOWN
    text = f"{float(value):g} h"
    return text if value < 48 else f"{text} ({value / 24:.1f} days)"


def decimal(value: Any) -> str:
    if value is None or isinstance(value, str):
        return NOT_SHOWN
    return f"{float(value):g}"


# -- tables ----------------------------------------------------------------------------------
@dataclass
class Table:
    """A table of the page and of its CSV: the first column names the row."""

    id: str
    title: str
    columns: list[str]
    rows: list[list[str]]
    note: str = ""
    numeric_from: int = 1  # columns from this one on are numbers (right-aligned)

    def csv(self) -> str:
        """The table as CSV; a text cell a spreadsheet would run as a formula (an
        organization named "=HYPERLINK(...)") is written with a leading apostrophe."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\r\n")
        writer.writerow([spreadsheet_safe(c) for c in self.columns])
        writer.writerows([[spreadsheet_safe(c) for c in row] for row in self.rows])
        return buffer.getvalue()


_NUMBER = re.compile(r"^[-+]?\d+(\.\d+)?%?$")


def spreadsheet_safe(cell: str) -> str:
    """`cell`, or `'cell` when it starts like a formula and is not a plain number."""
    text = str(cell)
    if text[:1] in ("=", "+", "-", "@", "\t", "\r") and not _NUMBER.match(text):
        return "'" + text
    return text


def funnel_table(overall: Group) -> Table:
    sent = overall.get("funnel.sent")
    rows = []
    for stage, label in STAGES:
        value = overall.get(f"funnel.{stage}")
        share = (percent(round(value / sent, 4)) if isinstance(value, int)
                 and isinstance(sent, int) and sent else NOT_SHOWN)
        rows.append([label, count(value), count(overall.get(f"funnel.{stage}.lost"))
                     if stage != "sent" else NOT_SHOWN, share])
    return Table("funnel", "Referral funnel", ["Stage", "Referrals", "Lost at this step",
                                               "Share of sent"], rows,
                 "Sent counts every referral made in the period except drafts, entries in "
                 "error and redirects (a redirected referral counts once, at the provider "
                 "it went on to). Care started: the provider marked it in progress.")


def outcome_table(overall: Group) -> Table:
    labels = (("waiting", "Waiting for acceptance"), ("accepted", "Accepted, care not started"),
              ("in-care", "In care"), ("completed", "Completed"), ("rejected", "Declined"),
              ("redirected", "Redirected to another provider"), ("cancelled", "Cancelled"),
              ("failed", "Could not be completed"), ("draft", "Draft"),
              ("entered-in-error", "Entered in error"))
    rows = [[label, count(overall.get(f"outcome.{code}") or 0)] for code, label in labels]
    return Table("outcomes-now", "Where the referrals are now", ["Outcome", "Referrals"],
                 rows, "Redirects are counted apart from declines.")


def times_table(overall: Group) -> Table:
    columns = ["Measure", "Referrals measured", "Median", "90th percentile",
               *[label for _code, label in BUCKETS]]
    rows = []
    for measure, label in MEASURES:
        rows.append([label, count(overall.get(f"duration.{measure}.count")),
                     hours(overall.get(f"duration.{measure}.median")),
                     hours(overall.get(f"duration.{measure}.p90")),
                     *[count(overall.get(f"duration.{measure}.{code}")) for code, _l in BUCKETS]])
    return Table("times", "How long it took", columns, rows,
                 "From when the referral was made to when it was accepted, when care started "
                 "and when it was completed, from the time each status began.")


def stalled_table(overall: Group) -> Table:
    rows = [[label, count(overall.get(f"stalled.{code}"))] for code, label in CLOCKS]
    return Table("stalled-counts", "Stalled now, by clock", ["Clock that ran out", "Referrals"],
                 rows, "Among the referrals made in the period.")


def organization_table(groups: Iterable[Group], view: str) -> Table:
    columns = [ORGANIZATION_VIEWS[view].capitalize(), "Sent", "Accepted", "Acceptance rate",
               "Closed-loop rate", "Median to accept", "90th percentile to accept",
               "Median to first service", "Declined", "Redirected", "Cancelled",
               "Stalled now"]
    rows = []
    for g in groups:
        stalled = [g.get(f"stalled.{code}") for code, _l in CLOCKS]
        rows.append([g.name, count(g.get("funnel.sent")), count(g.get("funnel.accepted")),
                     percent(g.get("acceptanceRate")), percent(g.get("closedLoopRate")),
                     hours(g.get("duration.accept.median")),
                     hours(g.get("duration.accept.p90")),
                     hours(g.get("duration.first-service.median")),
                     count(g.get("outcome.rejected") or 0),
                     count(g.get("outcome.redirected") or 0),
                     count(g.get("outcome.cancelled") or 0),
                     str(sum(s for s in stalled if isinstance(s, int)))])
    return Table("organizations", f"By {ORGANIZATION_VIEWS[view]}", columns, rows,
                 "Acceptance rate: accepted / (accepted + declined). Closed-loop rate: "
                 "completed / sent.")


def equity_table(groups: Iterable[Group], view: str, threshold: int | None) -> Table:
    columns = [EQUITY_VIEWS[view].capitalize(), "Patients", "Referrals", "Sent",
               "Acceptance rate", "Closed-loop rate", "Median time to accept",
               "Median time to first service"]
    rows = [[g.name, count(g.get("patients")), count(g.get("total")),
             count(g.get("funnel.sent")), percent(g.get("acceptanceRate")),
             percent(g.get("closedLoopRate")), hours(g.get("duration.accept.median")),
             hours(g.get("duration.first-service.median"))] for g in groups]
    note = ""
    if threshold and threshold > 1:
        note = (f"Small numbers are hidden to protect patients: a count of fewer than "
                f"{threshold} shows as \"<{threshold}\"; a group of fewer than {threshold} "
                "patients shows no rate, and when it is the only one hidden, the next smallest "
                "group is hidden too (\"suppressed\"); a rate or median resting on fewer than "
                f"{threshold} referrals (for example fewer than {threshold} declined) is not "
                "shown either, so no small count can be worked out from it. — : not shown or "
                "no data.")
    return Table("equity", f"By {EQUITY_VIEWS[view]}", columns, rows, note)


def screening_outcome_table(groups: Iterable[Group], view: str) -> Table:
    columns = [OUTCOME_VIEWS[view].capitalize()]
    for _code, name in INSTRUMENTS:
        columns += [f"{name} pairs", f"{name} with baseline 10+", f"{name} response rate",
                    f"{name} remission rate", f"{name} mean change"]
    rows = []
    for g in groups:
        row = [g.name]
        for code, _name in INSTRUMENTS:
            row += [count(g.get(f"screening.{code}.pairs")),
                    count(g.get(f"screening.{code}.eligible")),
                    percent(g.get(f"screening.{code}.responseRate")),
                    percent(g.get(f"screening.{code}.remissionRate")),
                    decimal(g.get(f"screening.{code}.meanChange"))]
        rows.append(row)
    return Table("screening-outcomes", f"Did patients get better? By {OUTCOME_VIEWS[view]}",
                 columns, rows,
                 "Pairs: a baseline score in the 90 days before the referral and a follow-up "
                 "4 to 12 weeks after care started. Response: the follow-up is at most half "
                 "the baseline; remission: below 5; both among baselines of 10 or more. Mean "
                 "change: follow-up minus baseline (negative is better). Only screenings you "
                 "may see count.")


# -- charts ----------------------------------------------------------------------------------
def funnel_bars(overall: Group) -> list[Bar]:
    bars = []
    for shade, (stage, label) in enumerate(STAGES):
        value = overall.get(f"funnel.{stage}")
        lost = overall.get(f"funnel.{stage}.lost")
        note = f"{lost} lost" if stage != "sent" and lost not in (None, 0) else ""
        bars.append(Bar(label, value if isinstance(value, int) else 0, note, shade))
    return bars


def duration_bars(overall: Group, measure: str) -> list[Bar]:
    return [Bar(label, overall.get(f"duration.{measure}.{code}") or 0, "", 1)
            for code, label in BUCKETS]
