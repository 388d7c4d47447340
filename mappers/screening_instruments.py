"""Definitions of the screening instruments we score: PHQ-9, GAD-7, PHQ-2 and GAD-2.

Pure data. Codes come from LOINC (answer list LL358-3 and the panel terms); bands from
Kroenke 2001 (PHQ-9), Spitzer 2006 (GAD-7), Kroenke 2003 (PHQ-2) and Kroenke 2007 (GAD-2).
See mappers/SCREENING.md for the sources and the rules that need clinical sign-off.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from types import MappingProxyType

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
BASE = "http://mh-referral.example.org/fhir"
LOCAL_CS = f"{BASE}/CodeSystem/screening"
SEVERITY_CS = f"{BASE}/CodeSystem/screening-severity"
QUESTIONNAIRE_BASE = f"{BASE}/Questionnaire"
QUESTIONNAIRE_VERSION = "1.0.0"

ORDINAL_VALUE_URL = "http://hl7.org/fhir/StructureDefinition/ordinalValue"
ITEM_WEIGHT_URL = "http://hl7.org/fhir/StructureDefinition/itemWeight"
WEIGHT_URLS = (ORDINAL_VALUE_URL, ITEM_WEIGHT_URL)

# LOINC answer list LL358-3 (frequency over the last two weeks) and its scores.
FREQUENCY_ANSWERS: tuple[tuple[str, str, int], ...] = (
    ("LA6568-5", "Not at all", 0),
    ("LA6569-3", "Several days", 1),
    ("LA6570-1", "More than half the days", 2),
    ("LA6571-9", "Nearly every day", 3),
)
# GAD-7 item 2 (68509-9) in LOINC / LHC-Forms exports uses "More days than not" for score 2.
MORE_DAYS_THAN_NOT = ("LA18938-3", "More days than not", 2)

# Answer codes accepted in place of each other on a given item (by item LOINC code).
EQUIVALENT_ANSWERS: dict[str, dict[str, str]] = {
    "68509-9": {"LA18938-3": "LA6570-1", "LA6570-1": "LA18938-3"},
}

# LOINC answer list LL359-1: the PHQ-9 "difficulty" item (69722-7); not scored.
DIFFICULTY_ANSWERS: tuple[tuple[str, str], ...] = (
    ("LA6572-7", "Not difficult at all"),
    ("LA6573-5", "Somewhat difficult"),
    ("LA6575-0", "Very difficult"),
    ("LA6574-3", "Extremely difficult"),
)
DIFFICULTY_CODE = "69722-7"
IMPAIRED_DIFFICULTY = frozenset({"LA6575-0", "LA6574-3"})
SELF_HARM_ITEM = "44260-8"


@cache
def _score_table(extra: tuple[tuple[str, str, int], ...]) -> Mapping[str, int]:
    table = {code: score for code, _display, score in FREQUENCY_ANSWERS}
    table.update({code: score for code, _display, score in extra})
    return MappingProxyType(table)


@dataclass(frozen=True)
class Band:
    """A severity band: inclusive score range, code in SEVERITY_CS and display text."""

    low: int
    high: int
    code: str
    display: str


@dataclass(frozen=True)
class ScoredItem:
    """One scored item of an instrument: LOINC code, short display and the question text."""

    code: str
    display: str
    text: str
    extra_scores: tuple[tuple[str, str, int], ...] = ()

    def scores(self) -> Mapping[str, int]:
        """Answer code -> score for this item (LL358-3 plus any item-specific alternatives)."""
        return _score_table(self.extra_scores)


@dataclass(frozen=True)
class Instrument:
    """A scored screening instrument."""

    key: str
    title: str
    panel: tuple[str, str, str]  # (system, code, display)
    total: tuple[str, str, str]  # (system, code, display)
    items: tuple[ScoredItem, ...]
    bands: tuple[Band, ...]
    asks_self_harm: bool
    depression_screen: bool
    unscored_items: tuple[str, ...] = ()
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def max_total(self) -> int:
        """Highest possible total."""
        return 3 * len(self.items)

    @property
    def item_codes(self) -> tuple[str, ...]:
        """LOINC codes of the scored items, in order."""
        return tuple(i.code for i in self.items)

    @property
    def canonical(self) -> str:
        """Canonical URL of our Questionnaire for this instrument."""
        return f"{QUESTIONNAIRE_BASE}/{self.key}"

    def band_for(self, total: int) -> Band:
        """The band containing total (raises ValueError outside 0..max_total)."""
        for band in self.bands:
            if band.low <= total <= band.high:
                return band
        raise ValueError(f"{self.key} total {total} outside 0..{self.max_total}")


_PHQ_ITEMS = (
    ScoredItem("44250-9", "Little interest or pleasure in doing things",
               "Little interest or pleasure in doing things"),
    ScoredItem("44255-8", "Feeling down, depressed, or hopeless",
               "Feeling down, depressed, or hopeless"),
    ScoredItem("44259-0", "Trouble falling or staying asleep, or sleeping too much",
               "Trouble falling or staying asleep, or sleeping too much"),
    ScoredItem("44254-1", "Feeling tired or having little energy",
               "Feeling tired or having little energy"),
    ScoredItem("44251-7", "Poor appetite or overeating", "Poor appetite or overeating"),
    ScoredItem("44258-2", "Feeling bad about yourself",
               "Feeling bad about yourself - or that you are a failure or have let yourself "
               "or your family down"),
    ScoredItem("44252-5", "Trouble concentrating on things",
               "Trouble concentrating on things, such as reading the newspaper or watching "
               "television"),
    ScoredItem("44253-3", "Moving or speaking slowly, or being fidgety or restless",
               "Moving or speaking so slowly that other people could have noticed. Or the "
               "opposite - being so fidgety or restless that you have been moving around a lot "
               "more than usual"),
    ScoredItem(SELF_HARM_ITEM, "Thoughts that you would be better off dead, or of hurting "
               "yourself in some way",
               "Thoughts that you would be better off dead, or of hurting yourself in some way"),
)

_GAD_ITEMS = (
    ScoredItem("69725-0", "Feeling nervous, anxious or on edge",
               "Feeling nervous, anxious, or on edge"),
    ScoredItem("68509-9", "Not being able to stop or control worrying",
               "Not being able to stop or control worrying", extra_scores=(MORE_DAYS_THAN_NOT,)),
    ScoredItem("69733-4", "Worrying too much about different things",
               "Worrying too much about different things"),
    ScoredItem("69734-2", "Trouble relaxing", "Trouble relaxing"),
    ScoredItem("69735-9", "Being so restless that it is hard to sit still",
               "Being so restless that it is hard to sit still"),
    ScoredItem("69689-8", "Becoming easily annoyed or irritable",
               "Becoming easily annoyed or irritable"),
    ScoredItem("69736-7", "Feeling afraid as if something awful might happen",
               "Feeling afraid, as if something awful might happen"),
)

_SCREEN_BANDS = (
    Band(0, 2, "negative", "Negative screen (score below 3)"),
    Band(3, 6, "positive", "Positive screen (score 3 or more): administer the full instrument"),
)

PHQ9 = Instrument(
    key="phq-9",
    title="Patient Health Questionnaire-9 (PHQ-9)",
    panel=(LOINC, "44249-1", "PHQ-9 quick depression assessment panel [Reported.PHQ]"),
    total=(LOINC, "44261-6", "Patient Health Questionnaire 9 item (PHQ-9) total score [Reported]"),
    items=_PHQ_ITEMS,
    bands=(
        Band(0, 4, "minimal", "Minimal or no depression (PHQ-9 0-4)"),
        Band(5, 9, "mild", "Mild depression (PHQ-9 5-9)"),
        Band(10, 14, "moderate", "Moderate depression (PHQ-9 10-14)"),
        Band(15, 19, "moderately-severe", "Moderately severe depression (PHQ-9 15-19)"),
        Band(20, 27, "severe", "Severe depression (PHQ-9 20-27)"),
    ),
    asks_self_harm=True,
    depression_screen=True,
    unscored_items=(DIFFICULTY_CODE,),
)

GAD7 = Instrument(
    key="gad-7",
    title="Generalized Anxiety Disorder-7 (GAD-7)",
    panel=(LOINC, "69737-5", "Generalized anxiety disorder 7 item (GAD-7)"),
    total=(LOINC, "70274-6", "Generalized anxiety disorder 7 item (GAD-7) total score "
           "[Reported.PHQ]"),
    items=_GAD_ITEMS,
    bands=(
        Band(0, 4, "minimal", "Minimal anxiety (GAD-7 0-4)"),
        Band(5, 9, "mild", "Mild anxiety (GAD-7 5-9)"),
        Band(10, 14, "moderate", "Moderate anxiety (GAD-7 10-14)"),
        Band(15, 21, "severe", "Severe anxiety (GAD-7 15-21)"),
    ),
    asks_self_harm=False,
    depression_screen=False,
)

PHQ2 = Instrument(
    key="phq-2",
    title="Patient Health Questionnaire-2 (PHQ-2)",
    panel=(LOINC, "55757-9", "Patient Health Questionnaire 2 item (PHQ-2) [Reported]"),
    total=(LOINC, "55758-7", "Patient Health Questionnaire 2 item (PHQ-2) total score [Reported]"),
    items=_PHQ_ITEMS[:2],
    bands=_SCREEN_BANDS,
    asks_self_harm=False,
    depression_screen=True,
)

# No LOINC panel or total code for GAD-2 was found (screening.md section 2.4): local codes.
GAD2 = Instrument(
    key="gad-2",
    title="Generalized Anxiety Disorder-2 (GAD-2)",
    panel=(LOCAL_CS, "gad-2", "Generalized anxiety disorder 2 item (GAD-2) panel"),
    total=(LOCAL_CS, "gad-2-total", "Generalized anxiety disorder 2 item (GAD-2) total score"),
    items=_GAD_ITEMS[:2],
    bands=_SCREEN_BANDS,
    asks_self_harm=False,
    depression_screen=False,
)

INSTRUMENTS: dict[str, Instrument] = {i.key: i for i in (PHQ9, GAD7, PHQ2, GAD2)}
_BY_PANEL = {(i.panel[0], i.panel[1]): i for i in INSTRUMENTS.values()}
_BY_URL = {i.canonical: i for i in INSTRUMENTS.values()}


def instrument_for_questionnaire(questionnaire: dict) -> Instrument | None:
    """The instrument a Questionnaire claims to be (by its code, else by our canonical url)."""
    for coding in questionnaire.get("code") or []:
        found = _BY_PANEL.get((coding.get("system"), coding.get("code")))
        if found is not None:
            return found
    return _BY_URL.get(questionnaire.get("url") or "")
