"""The dashboard's pages: the overview for a period, and each of its tables as CSV.

One `$referral-metrics` call (the `all` group, the organization view, the equity view and
the outcome view of the page) and one Task search (the stalled list, with the names it
needs) per page; the CSV route makes the same call and writes the same table.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from urllib.parse import urlencode

from flask import Blueprint, Response, request

from fhir_server.web import words
from fhir_server.web.api import entries
from fhir_server.web.apps import current, render, signed_in
from fhir_server.web.charts import bar_chart
from fhir_server.web.dashboard import figures
from fhir_server.web.names import Names
from fhir_server.workflow.canonical import STALLED_SYSTEM

REFERRAL_TASK_CODE = "http://hl7.org/fhir/CodeSystem/task-code|fulfill"
STALLED_LIST_SIZE = 20
PRESETS = ((30, "Last 30 days"), (90, "Last 90 days"), (365, "Last 12 months"))
DEFAULT_DAYS = 365


@dataclass(frozen=True)
class View:
    """What the page shows: the period (both days included) and the table views."""

    start: date
    end: date
    by: str = "owner"
    equity: str = "age-band"
    outcomes: str = "owner"
    problem: str = ""

    @classmethod
    def from_args(cls, today: date | None = None) -> View:
        args = request.args
        today = today or datetime.now(UTC).date()
        problem = ""
        start, end = _day(args.get("start")), _day(args.get("end"))
        if (args.get("start") and start is None) or (args.get("end") and end is None):
            problem = "Enter dates as year-month-day, for example 2026-03-31."
        end = end or today
        start = start or end - timedelta(days=DEFAULT_DAYS - 1)
        if start > end:
            problem = "The period must start before it ends: the dates were swapped."
            start, end = end, start
        return cls(start, end,
                   args.get("by") if args.get("by") in figures.ORGANIZATION_VIEWS else "owner",
                   args.get("equity") if args.get("equity") in figures.EQUITY_VIEWS
                   else "age-band",
                   args.get("outcomes") if args.get("outcomes") in figures.OUTCOME_VIEWS
                   else "owner", problem)

    def query(self, **changes: str) -> str:
        values = {"start": self.start.isoformat(), "end": self.end.isoformat(),
                  "by": self.by, "equity": self.equity, "outcomes": self.outcomes, **changes}
        return urlencode(values)

    def api_parameters(self) -> list[tuple[str, str]]:
        """The `$referral-metrics` parameters of this view (end: the day after)."""
        dims = ",".join(dict.fromkeys(("all", self.by, self.equity, self.outcomes)))
        return [("group-by", dims), ("start", self.start.isoformat()),
                ("end", (self.end + timedelta(days=1)).isoformat())]

    @property
    def words(self) -> str:
        return f"{words.day(self.start.isoformat())} to {words.day(self.end.isoformat())}"


def _day(value: str | None) -> date | None:
    try:
        return date.fromisoformat(value) if value else None
    except ValueError:
        return None


def load_tables(view: View) -> dict:
    """The answer for `view` as the page's tables and charts."""
    answer = current().api.operation("$referral-metrics", view.api_parameters())
    groups = figures.read_answer(answer)
    overall = (groups.get("all") or [figures.Group("all", "all", "All referrals")])[0]
    threshold = figures.threshold_of(answer)
    tables = {
        "funnel": figures.funnel_table(overall),
        "outcomes-now": figures.outcome_table(overall),
        "times": figures.times_table(overall),
        "stalled-counts": figures.stalled_table(overall),
        "organizations": figures.organization_table(groups.get(view.by, []), view.by),
        "equity": figures.equity_table(groups.get(view.equity, []), view.equity, threshold),
        "screening-outcomes": figures.screening_outcome_table(
            groups.get(view.outcomes, []), view.outcomes),
    }
    return {"overall": overall, "tables": tables, "threshold": threshold}


@dataclass
class StalledRow:
    task_id: str
    patient: str
    provider: str
    clock: str
    since: str


def stalled_list() -> tuple[list[StalledRow], bool]:
    """The referrals stalled now (newest change first) and whether there are more."""
    codes = ",".join(f"{STALLED_SYSTEM}|{code}" for code, _label in figures.CLOCKS)
    bundle = current().api.search("Task", [
        ("code", REFERRAL_TASK_CODE), ("business-status", codes), ("_sort", "-_lastUpdated"),
        ("_count", str(STALLED_LIST_SIZE)), ("_include", "Task:owner"),
        ("_include", "Task:patient")])
    names = Names(current().api)
    for resource in entries(bundle, "include"):
        names.know(resource)
    tasks = entries(bundle)
    for task in tasks:
        names.want(task.get("owner"))
        names.want(task.get("for"))
    names.fetch()
    rows = []
    for task in tasks:
        mark = words.stalled_mark(task) or ""
        rows.append(StalledRow(
            str(task.get("id")), names.name(task.get("for"), "(no patient)"),
            names.name(task.get("owner"), "not yet chosen") if task.get("owner")
            else "not yet chosen", words.STALLED.get(mark, mark),
            (task.get("meta") or {}).get("lastUpdated", "")))
    return rows, bool(next((link for link in bundle.get("link") or []
                            if link.get("relation") == "next"), None))


def stalled_table(rows: list[StalledRow]) -> figures.Table:
    return figures.Table("stalled", "Stalled referrals", [
        "Patient", "Receiving organization", "Stalled because", "Marked stalled"],
        [[r.patient, r.provider, r.clock, words.day_time(r.since)] for r in rows],
        numeric_from=99)


def add_views(bp: Blueprint) -> None:
    """Register the dashboard's pages on its blueprint."""

    @bp.get("/")
    @signed_in
    def overview() -> Response:
        view = View.from_args()
        loaded = load_tables(view)
        stalled, more = stalled_list()
        overall = loaded["overall"]
        charts = {
            "funnel": bar_chart("Referral funnel", figures.funnel_bars(overall), "chart-funnel",
                                f"{view.words}"),
            "accept": bar_chart("Time to accept", figures.duration_bars(overall, "accept"),
                                "chart-accept", "Median " + figures.hours(
                                    overall.get("duration.accept.median"))),
            "completion": bar_chart(
                "Time to completion", figures.duration_bars(overall, "completion"),
                "chart-completion", "Median " + figures.hours(
                    overall.get("duration.completion.median"))),
        }
        return render("dashboard/overview.html", view=view, charts=charts,
                      stalled=stalled, stalled_more=more,
                      stalled_table=stalled_table(stalled),
                      presets=_presets(view), **loaded,
                      organization_views=figures.ORGANIZATION_VIEWS,
                      equity_views=figures.EQUITY_VIEWS,
                      outcome_views=figures.OUTCOME_VIEWS, percent=figures.percent,
                      hours=figures.hours, count=figures.count)

    @bp.get("/csv/<table_id>")
    @signed_in
    def table_csv(table_id: str) -> Response:
        view = View.from_args()
        if table_id == "stalled":
            table = stalled_table(stalled_list()[0])
        else:
            table = load_tables(view)["tables"].get(table_id)
            if table is None:
                return render("error.html", status=404, title="Not found",
                              message="There is no such table.", what_to_do="",
                              server="")
        name = f"outcomes-{table_id}-{view.start.isoformat()}-to-{view.end.isoformat()}.csv"
        return Response(table.csv(), mimetype="text/csv", headers={
            "Content-Disposition": f'attachment; filename="{name}"'})


def _presets(view: View) -> list[tuple[str, str]]:
    today = datetime.now(UTC).date()
    out = [(label, view.query(start=(today - timedelta(days=days - 1)).isoformat(),
                              end=today.isoformat())) for days, label in PRESETS]
    year_start = date(today.year, 1, 1)
    out.append((f"Since 1 January {today.year}",
                view.query(start=year_start.isoformat(), end=today.isoformat())))
    return out
