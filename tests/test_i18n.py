"""The message catalogues (pages, reminders, invitations) are current: every text the
sources mark is in the template, every language translates every text (same placeholders,
same markup), and each committed `.mo` is its `.po` compiled. Fix a failure with
`python -m fhir_server.catalogues update`, translating, then `... compile`."""

from __future__ import annotations

import io
import re

import pytest
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po

from fhir_server.catalogues import POT, extract
from fhir_server.i18n import TRANSLATIONS

LANGUAGES = sorted(p.name for p in TRANSLATIONS.iterdir() if p.is_dir())
PLACEHOLDER = re.compile(r"%\((\w+)\)s")
TAG = re.compile(r"</?([a-z]+)[^>]*>")


def ids(catalog) -> set[str]:
    return {m.id for m in catalog if m.id}


def test_the_template_has_every_marked_text(tmp_path):
    fresh = tmp_path / "messages.pot"
    extract(fresh)
    with fresh.open("rb") as now, POT.open("rb") as committed:
        assert ids(read_po(now)) == ids(read_po(committed)), (
            "run: python -m fhir_server.catalogues update")


def test_spanish_is_there():
    assert "es" in LANGUAGES


@pytest.mark.parametrize("language", LANGUAGES)
def test_every_text_is_translated(language):
    with POT.open("rb") as fh:
        wanted = ids(read_po(fh))
    path = TRANSLATIONS / language / "LC_MESSAGES" / "messages.po"
    with path.open("rb") as fh:
        catalog = read_po(fh, locale=language)
    assert not catalog.fuzzy
    translated = {m.id: m.string for m in catalog if m.id and m.string and not m.fuzzy}
    assert sorted(wanted - set(translated)) == []
    for source, target in translated.items():
        assert sorted(PLACEHOLDER.findall(source)) == sorted(PLACEHOLDER.findall(target)), \
            source
        assert sorted(TAG.findall(source)) == sorted(TAG.findall(target)), source


@pytest.mark.parametrize("language", LANGUAGES)
def test_the_compiled_catalogue_is_the_po(language):
    folder = TRANSLATIONS / language / "LC_MESSAGES"
    with (folder / "messages.po").open("rb") as fh:
        catalog = read_po(fh, locale=language)
    compiled = io.BytesIO()
    write_mo(compiled, catalog)
    assert (folder / "messages.mo").read_bytes() == compiled.getvalue(), (
        "run: python -m fhir_server.catalogues compile")
