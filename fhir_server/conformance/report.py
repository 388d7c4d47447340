"""The run's outputs: the terminal summary table, JUnit XML, JSON and a self-contained HTML
report (requirement, result, and request/response excerpts for every failure)."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET  # noqa: N817
from collections import Counter
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape

from fhir_server.conformance.model import ERROR, FAIL, NA, OUTCOMES, PASS, SKIP, WARN, RunReport
from fhir_server.conformance.requirements import not_tested

TEMPLATES = Path(__file__).resolve().parent / "templates"
EXIT_MEANING = {0: "every SHALL test passed", 1: "a SHALL test failed",
                3: "no SHALL test failed, but some SHALL tests could not run"}


def summary_table(report: RunReport) -> str:
    """Counts per group and outcome, then the failures and warnings, then the verdict."""
    groups: dict[str, Counter[str]] = {}
    for r in report.results:
        groups.setdefault(r.test.group, Counter())[r.outcome] += 1
    cols = list(OUTCOMES)
    lines = ["", f"{'group':<15}" + "".join(f"{c:>7}" for c in cols)]
    for group, counts in groups.items():
        lines.append(f"{group:<15}" + "".join(f"{counts.get(c, 0):>7}" for c in cols))
    total = Counter(r.outcome for r in report.results)
    lines.append(f"{'total':<15}" + "".join(f"{total.get(c, 0):>7}" for c in cols))
    shall = [r for r in report.results if r.test.level == "SHALL"]
    lines.append(f"SHALL tests: {sum(r.outcome == PASS for r in shall)} passed of "
                 f"{len(shall)}")
    failing = [r for r in report.results if r.outcome in (FAIL, ERROR)]
    if failing:
        lines.append("Failed:")
        lines += [f"  {r.test.id} [{r.test.level}]: {r.headline()}" for r in failing]
    warned = [r for r in report.results if r.outcome == WARN]
    if warned:
        lines.append("Warnings (SHOULD / MAY):")
        lines += [f"  {r.test.id}: {r.headline()}" for r in warned]
    skipped = [r for r in report.results if r.outcome == SKIP and r.test.level == "SHALL"]
    if skipped:
        lines.append("SHALL tests not run:")
        lines += [f"  {r.test.id}: {r.reason}" for r in skipped]
    lines.append(f"Exit code {report.exit_code}: {EXIT_MEANING[report.exit_code]}.")
    return "\n".join(lines) + "\n"


def as_json(report: RunReport) -> dict[str, Any]:
    return {
        "kit": "Gravity SDOH Clinical Care conformance kit", "kitVersion": report.kit_version,
        "ig": "http://hl7.org/fhir/us/sdoh-clinicalcare|3.0.0", "base": report.base,
        "actor": report.actor, "started": report.started, "finished": report.finished,
        "validation": report.validation, "exitCode": report.exit_code,
        "counts": dict(Counter(r.outcome for r in report.results)),
        "results": [r.as_json() for r in report.results], "cleanup": report.cleanup,
        "notTested": not_tested(),
    }


def junit_xml(report: RunReport) -> str:
    """One testsuite per group; SHALL failures are <failure>, warnings pass with a
    `warning` property and system-out, skipped and n/a are <skipped>."""
    suites = ET.Element("testsuites", name=f"gravity-sdoh-{report.actor}")
    by_group: dict[str, list] = {}
    for r in report.results:
        by_group.setdefault(r.test.group, []).append(r)
    for group, results in by_group.items():
        suite = ET.SubElement(suites, "testsuite", name=f"{report.actor}.{group}",
                              tests=str(len(results)),
                              failures=str(sum(r.outcome == FAIL for r in results)),
                              errors=str(sum(r.outcome == ERROR for r in results)),
                              skipped=str(sum(r.outcome in (SKIP, NA) for r in results)),
                              time=f"{sum(r.elapsed_ms for r in results) / 1000:.3f}")
        for r in results:
            case = ET.SubElement(suite, "testcase", name=r.test.id,
                                 classname=f"{report.actor}.{group}",
                                 time=f"{r.elapsed_ms / 1000:.3f}")
            props = ET.SubElement(case, "properties")
            ET.SubElement(props, "property", name="level", value=r.test.level)
            ET.SubElement(props, "property", name="requirements",
                          value=", ".join(q.key for q in r.test.requirements))
            text = "\n".join(f"{f.level}: {f.message}" for f in r.findings)
            if r.outcome == FAIL:
                ET.SubElement(case, "failure", message=r.headline()[:500]).text = text
            elif r.outcome == ERROR:
                ET.SubElement(case, "error", message=r.headline()[:500]).text = text
            elif r.outcome in (SKIP, NA):
                ET.SubElement(case, "skipped", message=f"{r.outcome}: {r.reason}"[:500])
            elif r.outcome == WARN:
                ET.SubElement(props, "property", name="warning", value=r.headline()[:500])
                ET.SubElement(case, "system-out").text = "WARNING\n" + text
    ET.indent(suites)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suites, "unicode") + "\n"


def html(report: RunReport) -> str:
    env = Environment(loader=FileSystemLoader(str(TEMPLATES)),
                      autoescape=select_autoescape(["html"]))
    template = env.get_template("report.html")
    groups: dict[str, list] = {}
    for r in report.results:
        groups.setdefault(r.test.group, []).append(r)
    counts = Counter(r.outcome for r in report.results)
    severity = {FAIL: 0, ERROR: 0, SKIP: 1, WARN: 2}
    attention = sorted((r for r in report.results if r.outcome in (FAIL, ERROR, WARN) or (
        r.outcome == SKIP and r.test.level == "SHALL")), key=lambda r: severity[r.outcome])
    return template.render(report=report, groups=groups, counts=counts, outcomes=OUTCOMES,
                           attention=attention, not_tested=not_tested(),
                           shall_na=sum(r.test.level == "SHALL" and r.outcome == NA
                                        for r in report.results),
                           exit_meaning=EXIT_MEANING[report.exit_code],
                           shall_total=sum(r.test.level == "SHALL" for r in report.results),
                           shall_passed=sum(r.test.level == "SHALL" and r.outcome == PASS
                                            for r in report.results))


def write_reports(report: RunReport, directory: Path) -> list[Path]:
    """junit.xml, report.json and report.html in `directory` (created if needed)."""
    directory.mkdir(parents=True, exist_ok=True)
    stem = f"gravity-{report.actor}"
    paths = [directory / f"{stem}-junit.xml", directory / f"{stem}.json",
             directory / f"{stem}.html"]
    paths[0].write_text(junit_xml(report), encoding="utf-8")
    paths[1].write_text(json.dumps(as_json(report), indent=2), encoding="utf-8")
    paths[2].write_text(html(report), encoding="utf-8")
    return paths
