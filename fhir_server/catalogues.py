"""Maintenance of the message catalogues (pybabel): extract the marked texts, merge them into
each language's `.po`, compile the `.mo` files.

    .venv/bin/python -m fhir_server.catalogues update    # messages.pot + every .po
    (translate the new entries of each .po: empty msgstr, or marked fuzzy)
    .venv/bin/python -m fhir_server.catalogues compile   # .po -> .mo (committed)
    .venv/bin/python -m fhir_server.catalogues init xx   # a new language

`tests/test_i18n.py` fails when the catalogue misses a text of the sources, a language
misses a translation, or a `.mo` is not the compiled `.po`.
"""

from __future__ import annotations

import sys
from pathlib import Path

from babel.messages.frontend import CommandLineInterface

from fhir_server.i18n import BABEL_CONFIG, DOMAIN, TRANSLATIONS

POT = TRANSLATIONS / f"{DOMAIN}.pot"
KEYWORDS = ("lazy_gettext", "N_")  # besides gettext, ngettext and _


def _pybabel(*args: str) -> None:
    CommandLineInterface().run(["pybabel", "-q", *args])


def extract(output: Path) -> None:
    """Every marked text of the sources `babel.cfg` names, into the template `output`."""
    package = Path(__file__).resolve().parent
    keywords = [arg for k in KEYWORDS for arg in ("-k", k)]
    _pybabel("extract", "-F", str(BABEL_CONFIG), *keywords, "--no-location",
             "--sort-output", "--omit-header", "-o", str(output), str(package))


def main(argv: list[str]) -> int:
    command = argv[0] if argv else ""
    if command == "update":
        extract(POT)
        _pybabel("update", "--no-fuzzy-matching", "--ignore-obsolete", "-i", str(POT),
                 "-d", str(TRANSLATIONS))
    elif command == "compile":
        _pybabel("compile", "--statistics", "-d", str(TRANSLATIONS))
    elif command == "init" and len(argv) == 2:
        _pybabel("init", "-i", str(POT), "-d", str(TRANSLATIONS), "-l", argv[1])
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
