"""The repository stands alone: a clone passes `make test` with nothing beside it.

Only build scripts (the files listed here and every module of a `devtools/` folder) read the
developers' reference folder beside the repository, to regenerate data files that are
committed; no test, benchmark or product module does. `.ci/run` proves the whole claim by
running the suite from a copy with nothing beside it.
"""

from __future__ import annotations

import re
from pathlib import Path

from tests.reference_data import DATA

REPO = Path(__file__).resolve().parents[1]
BUILD_SCRIPTS = {
    "fhir_server/conformance/devtools/build_data.py",
    "profiles/devtools/build_data.py",
    "profiles/devtools/fsh_convert.py",
}
# The checks themselves name the folder they prove absent (this pattern, used by both tests).
CHECKS = {".ci/run", "tests/test_standalone.py", "tests/test_conformance_kit.py"}
# A path into the sibling reference folder: its name as a quoted path part, or `..` + it.
SHARED_PATH = re.compile(r"""(['"])shared\1|\.\./shared""")


SKIP_DIRS = {".venv", ".git", "var", "__pycache__", "node_modules", ".pytest_cache",
             ".ruff_cache", ".hypothesis", "results"}


def _source_files() -> list[str]:
    """Python, make, shell and packaging files of the repository (no venv, caches, var/)."""
    out = []
    for path in REPO.rglob("*"):
        parts = path.relative_to(REPO).parts
        if any(p in SKIP_DIRS or p.endswith(".egg-info") for p in parts) or not path.is_file():
            continue
        if path.suffix in (".py", ".sh", ".cfg", ".toml") or path.name == "Makefile" \
                or parts[0] == ".ci":
            out.append(path.relative_to(REPO).as_posix())
    return out


def test_only_build_scripts_read_the_reference_folder():
    files = _source_files()
    assert len(files) > 100
    offenders = [f for f in files if f not in BUILD_SCRIPTS | CHECKS and "/devtools/" not in f
                 and SHARED_PATH.search((REPO / f).read_text("utf-8"))]
    assert offenders == []
    assert all((REPO / f).is_file() for f in BUILD_SCRIPTS)  # the list names real files


def test_every_test_data_file_has_its_origin_recorded():
    sources = (DATA / "SOURCES.md").read_text("utf-8")
    rows = [re.match(r"\| `([^`]+)`", line).group(1) for line in sources.splitlines()
            if line.startswith("| `")]
    data_files = [p.relative_to(DATA).as_posix() for p in DATA.rglob("*")
                  if p.is_file() and p.parent.name != "LICENSES" and p.name != "SOURCES.md"]
    assert len(data_files) > 90
    undocumented = [f for f in data_files if not any(_covers(row, f) for row in rows)]
    assert undocumented == []
    for licence in re.findall(r"`(LICENSES/[^`]+)`", sources):
        assert (DATA / licence).is_file(), licence


def _covers(row: str, path: str) -> bool:
    """Does a SOURCES.md row (a file, a folder ending in /, a `*` or `{a,b}` pattern)
    describe `path`?"""
    for pattern in _expand(row):
        if pattern.endswith("/") and path.startswith(pattern):
            return True
        regex = re.escape(pattern).replace(r"\*", "[^/]*")
        if re.fullmatch(regex, path):
            return True
    return False


def _expand(pattern: str) -> list[str]:
    match = re.search(r"\{([^}]*)\}", pattern)
    if match is None:
        return [pattern]
    head, tail = pattern[:match.start()], pattern[match.end():]
    return [p for option in match.group(1).split(",") for p in _expand(head + option + tail)]
