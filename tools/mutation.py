"""Mutation testing of the modules that hold the safety and access rules (`make mutation`).

For each target below this copies the working tree to ``var/mutation/<target>/``, asks
mutmut (PyPI, pinned in setup.cfg's ``mutation`` extra) for the mutants of the target's
functions, draws a fixed-seed sample of them, runs that sample against the target's own test
modules (mutmut forks one process per mutant and runs only the tests that call the mutated
function) and prints the score per target:

    score = killed / (sampled - equivalent)

Mutants listed in ``tools/mutation_equivalents.toml`` (function, diff and the reason the
mutant cannot change behaviour) are left out of the score and listed. Mutants that only
change the wording of a message meant for people (a string literal with words and spaces in
it) are not sampled at all: the tests pin status, issue code and expression, not wording.

    .venv/bin/python tools/mutation.py                 # every target, 100 mutants each
    .venv/bin/python tools/mutation.py parser scopes   # some targets
    .venv/bin/python tools/mutation.py --sample 0      # every mutant (slow)

Survivors (with their diffs) go to ``var/mutation/<target>/survivors.txt``; the summary to
``var/mutation/summary.txt``. Not part of CI (a full run takes tens of minutes).
"""

from __future__ import annotations

import argparse
import difflib
import fnmatch
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WORK = REPO / "var" / "mutation"
EQUIVALENTS = REPO / "tools" / "mutation_equivalents.toml"
SEED = 25
SAMPLE = 100
SOURCE_DIRS = ("fhir_server", "mappers", "profiles", "subscriptions")
KILLED = {"killed", "timeout", "caught by type check", "segfault"}


@dataclass(frozen=True)
class Target:
    """Files (with the functions of each that count, as globs) and the tests that pin them."""

    files: dict[str, tuple[str, ...]]
    tests: tuple[str, ...]


SCREENING_TESTS = ("tests/test_screening_scoring.py", "tests/test_screening_http.py",
                   "tests/test_screening_extract.py")

# Each target runs against the test modules that pin its rules (not the whole suite: the
# slow end-to-end modules would make a run take hours on two cores).
TARGETS: dict[str, Target] = {
    "task_rules": Target(
        {"fhir_server/workflow/task_rules.py": ("*",)},
        ("tests/test_workflow_task_rules.py", "tests/test_workflow_rules_http.py")),
    "screening": Target({"mappers/screening.py": ("*",)}, SCREENING_TESTS),
    "safety": Target(
        {"mappers/screening_extract.py": ("item9_reference", "_due", "safety_resources",
                                          "_risk_task", "supersede_safety_flags"),
         "mappers/care_recommendation.py": ("active_safety_flags", "_flag_item9",
                                            "referral_priority_floor"),
         "fhir_server/features/screening.py": ("_after_write", "_priority_floor",
                                               "patient_flags", "_flag_from",
                                               "_item9_stored", "_requester_org")},
        SCREENING_TESTS),
    "parser": Target(
        {"fhir_server/search/parser.py": ("*",)},
        ("tests/test_search_parser.py", "tests/test_search_engine.py",
         "tests/test_search_registry.py")),
    "scopes": Target(
        {"fhir_server/auth/scopes.py": ("*",)},
        ("tests/test_auth_scopes.py", "tests/test_auth_policy.py",
         "tests/test_auth_policy_rules.py")),
    "policy": Target(
        {"fhir_server/auth/policy.py": ("*",)},
        ("tests/test_auth_policy.py", "tests/test_auth_policy_rules.py",
         "tests/test_access_http.py")),
    "access": Target(
        {"fhir_server/auth/referral_compartment.py": ("*",),
         "fhir_server/interactions/access.py": (
             "owns_directory_entry", "_directory_write_check", "ctx_of", "_unrestricted",
             "check_type", "check_new", "check_existing", "_author_write_check",
             "restriction*", "_org_refs", "type_clause", "_alternative", "_visible",
             "_source_visible*"),
         "fhir_server/storage/access_sql.py": ("*",),
         "fhir_server/interactions/reference_check.py": ("*",)},
        # in process only: the HTTP modules that pin the same rules (test_access_http,
        # test_security_findings) take a minute per mutant here and time out under load
        ("tests/test_access_rules.py", "tests/test_auth_policy_rules.py")),
}


@dataclass
class Mutant:
    """One mutant: mutmut's name, the function it lives in and its diff."""

    name: str
    function: str
    diff: str
    status: str = "not run"


@dataclass
class Outcome:
    """The result of one target."""

    target: str
    sampled: list[Mutant]
    wording: int
    population: int
    equivalent: list[tuple[Mutant, str]] = field(default_factory=list)

    @property
    def killed(self) -> list[Mutant]:
        return [m for m in self.sampled if m.status in KILLED]

    @property
    def survivors(self) -> list[Mutant]:
        skip = {m.name for m, _ in self.equivalent}
        return [m for m in self.sampled if m.status not in KILLED and m.name not in skip]

    @property
    def score(self) -> float:
        scored = len(self.sampled) - len(self.equivalent)
        return 100.0 * len(self.killed) / scored if scored else 100.0


# --------------------------------------------------------------------------- work tree


def prepare(target: str, spec: Target) -> Path:
    """A fresh copy of the working tree with a mutmut section for this target."""
    work = WORK / target
    shutil.rmtree(work, ignore_errors=True)
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO,
                            check=True, capture_output=True).stdout.decode().split("\0")
    for rel in filter(None, listed):
        src = REPO / rel
        if rel.startswith("var/") or not src.is_file():
            continue
        dst = work / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst)
    tests = [t for t in spec.tests if (work / t).exists()]
    extra = sorted({p.split("/")[0] for p in listed if p and "/" in p}
                   - set(SOURCE_DIRS) - {"tests", "var"})
    lines = ["", "[mutmut]",
             "source_paths =", *[f"    {d}" for d in SOURCE_DIRS],
             "only_mutate =", *[f"    {f}" for f in spec.files],
             "also_copy =", *[f"    {d}" for d in extra],
             "pytest_add_cli_args_test_selection =", *[f"    {t}" for t in tests],
             "pytest_add_cli_args =", "    -p", "    no:cacheprovider",
             "use_git_change_detection = false", ""]
    with open(work / "setup.cfg", "a") as cfg:
        cfg.write("\n".join(lines))
    return work


def list_mutants(work: Path, spec: Target) -> list[Mutant]:
    """Every mutant mutmut makes of the target's functions, with its diff."""
    from mutmut import configuration
    from mutmut.mutation.file_mutation import mutate_file_contents
    from mutmut.utils.format_utils import get_mutant_name, orig_function_and_class_names_from_key

    here = Path.cwd()
    os.chdir(work)
    configuration.reset_config()
    try:
        out = []
        for rel, functions in spec.files.items():
            mutated = mutate_file_contents(rel, Path(rel).read_text())
            lines = mutated.code.splitlines()

            spans = mutated.line_span_by_function_name

            def body(generated: str, lines: list[str] = lines, spans: dict = spans) -> list[str]:
                span = spans[generated]
                return [line.replace(generated, "<f>") for line in lines[span.start - 1:span.end]]

            for method in mutated.mutant_names:
                name = get_mutant_name(Path(rel), method)
                func, cls = orig_function_and_class_names_from_key(name)
                qual = f"{cls}.{func}" if cls else func
                if not any(fnmatch.fnmatchcase(qual, g) for g in functions):
                    continue
                orig = body(method.rpartition("__mutmut_")[0] + "__mutmut_orig")
                diff = "\n".join(difflib.unified_diff(orig, body(method), lineterm=""))
                module = rel[:-3].replace("/", ".")
                out.append(Mutant(name, f"{module}.{qual}", _diff_body(diff)))
        return out
    finally:
        os.chdir(here)
        configuration.reset_config()


def _diff_body(diff: str) -> str:
    """The changed lines of a unified diff, stripped ('-old' / '+new')."""
    return "\n".join(line[0] + line[1:].strip() for line in diff.splitlines()
                     if line[:1] in "+-" and not line.startswith(("+++", "---")))


_STRING = re.compile(r"""(?<![\w])[rRbBuU]?("(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')""")
_PROSE = re.compile(r"[A-Za-z]{2,}.* |.* [A-Za-z]{2,}")


def is_wording(diff: str) -> bool:
    """True when the mutant only changes a literal that holds words and spaces (a message)."""
    lines = diff.splitlines()
    if len(lines) != 2 or not (lines[0].startswith("-") and lines[1].startswith("+")):
        return False
    old, new = lines[0][1:], lines[1][1:]
    start = 0
    while start < min(len(old), len(new)) and old[start] == new[start]:
        start += 1
    end = 0
    while end < min(len(old), len(new)) - start and old[-1 - end] == new[-1 - end]:
        end += 1
    for match in _STRING.finditer(old):
        lo, hi = match.span(1)
        if lo <= start and len(old) - end <= hi:
            return bool(_PROSE.search(match.group(1)[1:-1]))
    return False


# --------------------------------------------------------------------------- run and score


def run_mutmut(work: Path, names: list[str], jobs: int) -> dict[str, str]:
    """Run the sampled mutants; mutmut's status per mutant name."""
    log = work / "mutmut.log"
    with open(log, "w") as out:
        code = subprocess.run([sys.executable, "-m", "mutmut", "run", "--max-children",
                               str(jobs), *names], cwd=work, stdout=out, stderr=subprocess.STDOUT,
                              check=False).returncode
    if code != 0:
        raise SystemExit(f"mutmut failed (exit {code}); see {log}")
    listed = subprocess.run([sys.executable, "-m", "mutmut", "results", "--all", "true"],
                            cwd=work, check=True, capture_output=True, text=True).stdout
    statuses = {}
    for line in listed.splitlines():
        name, sep, status = line.strip().rpartition(": ")
        if sep:
            statuses[name] = status
    return statuses


def load_equivalents() -> list[dict]:
    """The declared equivalent mutants (function, diff, reason)."""
    if not EQUIVALENTS.exists():
        return []
    entries = tomllib.loads(EQUIVALENTS.read_text()).get("mutant", [])
    for entry in entries:
        entry["diff"] = _diff_body(entry["diff"].strip())
    return entries


def measure(target: str, spec: Target, sample: int, jobs: int,
            equivalents: list[dict]) -> Outcome:
    """Prepare, sample, run and score one target."""
    work = prepare(target, spec)
    every = list_mutants(work, spec)
    scored = [m for m in every if not is_wording(m.diff)]
    chosen = sorted(random.Random(SEED).sample(scored, sample)
                    if 0 < sample < len(scored) else scored, key=lambda m: m.name)
    (work / "sample.json").write_text(json.dumps([m.__dict__ for m in chosen], indent=1))
    statuses = run_mutmut(work, [m.name for m in chosen], jobs)
    for mutant in chosen:
        mutant.status = statuses.get(mutant.name, "not run")
    outcome = Outcome(target, chosen, len(every) - len(scored), len(scored))
    for mutant in chosen:
        if mutant.status in KILLED:
            continue
        for entry in equivalents:
            if entry["function"] == mutant.function and entry["diff"] == mutant.diff:
                outcome.equivalent.append((mutant, entry["reason"]))
                break
    with open(work / "survivors.txt", "w") as out:
        for mutant in outcome.survivors:
            out.write(f"## {mutant.name} ({mutant.status})\nfunction = \"{mutant.function}\"\n"
                      f"{mutant.diff}\n\n")
    return outcome


def report(outcome: Outcome) -> str:
    """One line per target."""
    return (f"{outcome.target:<11} score {outcome.score:5.1f} %  killed {len(outcome.killed):>3}"
            f" of {len(outcome.sampled):>3} sampled (of {outcome.population}), equivalent "
            f"{len(outcome.equivalent)}, survived {len(outcome.survivors)}; "
            f"{outcome.wording} wording-only mutants not sampled")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("targets", nargs="*", metavar="TARGET",
                        help=f"some of: {', '.join(TARGETS)} (default: all)")
    parser.add_argument("--sample", type=int, default=SAMPLE,
                        help="mutants per target, fixed seed (0: every mutant)")
    parser.add_argument("--jobs", type=int, default=2, help="mutants run at once")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.targets) - set(TARGETS))
    if unknown:
        parser.error(f"unknown target(s) {', '.join(unknown)}; choose from {', '.join(TARGETS)}")
    os.nice(10)
    equivalents = load_equivalents()
    lines = []
    for target in args.targets or list(TARGETS):
        outcome = measure(target, TARGETS[target], args.sample, args.jobs, equivalents)
        lines.append(report(outcome))
        print(lines[-1], flush=True)
        for mutant, reason in outcome.equivalent:
            print(f"    equivalent {mutant.name}: {reason}")
    WORK.mkdir(parents=True, exist_ok=True)
    (WORK / "summary.txt").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
