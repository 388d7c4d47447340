"""Pure scoring of PHQ-9, GAD-7, PHQ-2 and GAD-2 QuestionnaireResponses.

Rules (see mappers/SCREENING.md):
* Scores come from the LOINC answer code (LL358-3: 0-3; LA18938-3 = 2 on GAD-7 item 2);
  the Questionnaire's ordinalValue/itemWeight must agree, and so must any weight or total
  the client sent. A client-sent total is never trusted.
* Missing items: no total when any scored item is unanswered; the result is ``incomplete``
  and the answered items are still reported. Never a partial sum.
* Any error issue means ``invalid``: no score at all.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from fhir_server.errors import FhirError, Issue
from mappers.qr_validation import index_items, item_loinc, option_codings, validate_answers
from mappers.screening_instruments import (
    DIFFICULTY_CODE,
    INSTRUMENTS,
    LOINC,
    SELF_HARM_ITEM,
    WEIGHT_URLS,
    Band,
    Instrument,
    instrument_for_questionnaire,
)


@dataclass
class ItemAnswer:
    """One answered question of a QuestionnaireResponse, as seen by the scorer."""

    link_id: str
    codes: list[dict[str, Any]]  # Questionnaire.item.code codings
    text: str | None
    value_key: str  # e.g. valueCoding
    value: Any
    path: str  # FHIRPath of the answer value in the QR
    score: int | None = None


@dataclass
class ScreeningResult:
    """What the scorer made of one QuestionnaireResponse."""

    instrument: str | None
    questionnaire: str | None
    status: str  # complete | incomplete | invalid | not-scored
    total: int | None = None
    max_total: int | None = None
    band: Band | None = None
    item_scores: dict[str, int] = field(default_factory=dict)
    answers: list[ItemAnswer] = field(default_factory=list)
    missing_items: list[str] = field(default_factory=list)
    item9: int | None = None
    self_harm_asked: bool = False
    difficulty: str | None = None
    issues: list[Issue] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        """True when every scored item was answered and a total exists."""
        return self.status == "complete"

    @property
    def safety_flag(self) -> bool:
        """PHQ-9 item 9 answered above 0 (evaluated independently of the total)."""
        return self.item9 is not None and self.item9 > 0

    @property
    def errors(self) -> list[Issue]:
        """Error and fatal issues (any of them means: reject with 422, do not score)."""
        return [i for i in self.issues if i.severity in ("error", "fatal")]

    @property
    def definition(self) -> Instrument | None:
        """The Instrument definition, when scored."""
        return INSTRUMENTS.get(self.instrument or "")

    def summary(self) -> str:
        """One human-readable line for an OperationOutcome information issue."""
        inst = self.definition
        if inst is None:
            return "Response stored without scoring"
        if self.status == "invalid":
            return f"{inst.title}: not scored (invalid response)"
        if self.status == "incomplete":
            return (f"{inst.title}: incomplete, no total (unanswered: "
                    f"{', '.join(self.missing_items)})")
        assert self.band is not None
        text = f"{inst.title} total {self.total}/{self.max_total}: {self.band.display}"
        if self.safety_flag:
            text += f"; item 9 (self-harm) answered {self.item9}: safety flag raised"
        return text

    def outcome_issues(self) -> list[Issue]:
        """The issues plus an information issue with the summary, for the write response."""
        return [*self.issues, Issue("information", "informational", self.summary())]


def raise_if_invalid(issues: list[Issue]) -> None:
    """Raise FhirError 422 carrying all issues when any of them is an error."""
    if any(i.severity in ("error", "fatal") for i in issues):
        first = next(i for i in issues if i.severity in ("error", "fatal"))
        raise FhirError(422, first.code, first.diagnostics, issues=issues)


# --------------------------------------------------------------------------- instrument check


def check_questionnaire(questionnaire: dict, instrument: Instrument) -> list[Issue]:
    """Verify that a Questionnaire really is the instrument it claims to be.

    Every scored item must be present once, as a choice item carrying its LOINC code, with
    options covering the scores 0-3 and any ordinalValue/itemWeight equal to our table.
    A PHQ-9 without item 9 (i.e. a PHQ-8) is refused: it removes the only self-harm signal.
    """
    issues: list[Issue] = []
    by_code: dict[str, list[dict]] = {}
    for qitem in index_items(questionnaire.get("item"), {}).values():
        code = item_loinc(qitem)
        if code:
            by_code.setdefault(code, []).append(qitem)
    name = f"Questionnaire {questionnaire.get('url') or questionnaire.get('id')}"
    for spec in instrument.items:
        found = by_code.get(spec.code)
        if not found:
            msg = f"{name} claims to be {instrument.title} but has no item {spec.code}"
            if spec.code == SELF_HARM_ITEM:
                msg += (" (self-harm item 9): this looks like a PHQ-8, which is not accepted as "
                        "a PHQ-9 because it removes the only self-harm signal")
            issues.append(Issue("error", "business-rule", msg, ["Questionnaire.item"]))
            continue
        if len(found) > 1:
            issues.append(Issue("error", "business-rule",
                                f"{name} has {len(found)} items coded {spec.code}",
                                ["Questionnaire.item"]))
            continue
        issues.extend(_check_options(found[0], spec.scores(), name))
    return issues


def _weight(element: dict) -> Any:
    for ext in element.get("extension") or ():
        if ext.get("url") in WEIGHT_URLS:
            return ext.get("valueDecimal", ext.get("valueInteger"))
    return None


def _check_options(qitem: dict, table: dict[str, int], name: str) -> list[Issue]:
    issues: list[Issue] = []
    if qitem.get("type") != "choice" or not option_codings(qitem):
        return [Issue("error", "business-rule",
                      f"{name} item {qitem['linkId']!r} must be a choice item with answer options",
                      ["Questionnaire.item"])]
    scores = set()
    for opt in qitem.get("answerOption") or []:
        coding = opt.get("valueCoding") or {}
        code = coding.get("code")
        if coding.get("system") != LOINC or code not in table:
            why = ("has no defined score" if coding.get("system") == LOINC
                   else f"is not a LOINC answer code (system {coding.get('system')!r})")
            issues.append(Issue("error", "business-rule",
                                f"{name} item {qitem['linkId']!r} offers {code!r}, which {why}",
                                ["Questionnaire.item"]))
            continue
        weight = _weight(opt)
        if weight is None:
            weight = _weight(coding)
        if weight is not None and weight != table[code]:
            issues.append(Issue("error", "business-rule",
                                f"{name} item {qitem['linkId']!r} gives {code} the weight "
                                f"{weight}; the instrument defines {table[code]}",
                                ["Questionnaire.item"]))
        scores.add(table[code])
    if scores and scores != {0, 1, 2, 3}:
        issues.append(Issue("error", "business-rule",
                            f"{name} item {qitem['linkId']!r} does not offer every score 0-3",
                            ["Questionnaire.item"]))
    return issues


# --------------------------------------------------------------------------- scoring


def _collect(items: list[dict] | None, qmap: dict, path: str) -> Iterator[ItemAnswer]:
    for i, item in enumerate(items or []):
        ipath = f"{path}.item[{i}]"
        qitem = qmap.get(item.get("linkId"), {})
        for j, answer in enumerate(item.get("answer") or []):
            key = next((k for k in answer if k.startswith("value")), None)
            if key is not None:
                yield ItemAnswer(item["linkId"], list(qitem.get("code") or []),
                                 qitem.get("text") or item.get("text"), key, answer[key],
                                 f"{ipath}.answer[{j}].{key}")
            yield from _collect(answer.get("item"), qmap, f"{ipath}.answer[{j}]")
        yield from _collect(item.get("item"), qmap, ipath)


def _loinc_of(answer: ItemAnswer) -> str | None:
    return next((c.get("code") for c in answer.codes if c.get("system") == LOINC), None)


def _answer_weight_issue(qr: dict, ans: ItemAnswer, score: int) -> Issue | None:
    """A weight the client put on the answer must be a whole number equal to our score."""
    node = _resolve(qr, ans.path.rsplit(".", 1)[0])
    for element in (node, node.get("valueCoding") or {}):
        weight = _weight(element)
        if weight is None:
            continue
        if isinstance(weight, bool) or not isinstance(weight, int | float) or weight % 1:
            return Issue("error", "value", f"Non-integer score {weight!r} on the answer to "
                         f"{ans.link_id!r}; item scores are whole numbers 0-3", [ans.path])
        if weight != score:
            return Issue("error", "value", f"The answer to {ans.link_id!r} carries score "
                         f"{weight:g}; its code scores {score}", [ans.path])
    return None


def _resolve(resource: dict, path: str) -> dict:
    """Follow a simple FHIRPath such as ``QuestionnaireResponse.item[0].answer[1]``."""
    node: Any = resource
    for part in path.split(".")[1:]:
        name, _, index = part.partition("[")
        node = node[name][int(index[:-1])] if index else node[name]
    return node


def _client_total(value_key: str, value: Any) -> Any:
    if value_key == "valueQuantity" and isinstance(value, dict):
        return value.get("value")
    return value


def _not_scored(questionnaire: dict | None, qr: dict, message: str, code: str) -> ScreeningResult:
    canonical = qr.get("questionnaire")
    if questionnaire is not None:
        canonical = questionnaire.get("url", canonical)
    return ScreeningResult(None, canonical, "not-scored",
                           issues=[Issue("warning", code, message,
                                         ["QuestionnaireResponse.questionnaire"])])


def score_response(questionnaire: dict | None, qr: dict) -> ScreeningResult:
    """Score a QuestionnaireResponse against its Questionnaire (None when not known).

    Unknown Questionnaires and Questionnaires that are not one of our instruments give a
    ``not-scored`` result with a warning that says so (the response may still be stored).
    """
    if questionnaire is None:
        return _not_scored(None, qr, f"Questionnaire {qr.get('questionnaire')!r} is not known "
                           "to this server: the response was not scored", "not-found")
    instrument = instrument_for_questionnaire(questionnaire)
    if instrument is None:
        return _not_scored(questionnaire, qr, f"Questionnaire {questionnaire.get('url')!r} is "
                           "not a scored screening instrument (PHQ-9, GAD-7, PHQ-2, GAD-2): "
                           "the response was not scored", "informational")
    canonical = questionnaire.get("url")
    if questionnaire.get("version"):
        canonical = f"{canonical}|{questionnaire['version']}"
    result = ScreeningResult(instrument.key, canonical, "invalid", max_total=instrument.max_total)
    result.issues = check_questionnaire(questionnaire, instrument)
    result.issues += validate_answers(questionnaire, qr)
    if result.errors:
        return result
    qmap = index_items(questionnaire.get("item"), {})
    answers = list(_collect(qr.get("item"), qmap, "QuestionnaireResponse"))
    _score_answers(instrument, qr, answers, result)
    if result.errors:
        result.item_scores, result.item9, result.total, result.band = {}, None, None, None
        return result
    result.answers = answers
    _finish(instrument, qr, answers, result)
    if not (qr.get("subject") or {}).get("reference"):
        result.issues.append(Issue(
            "warning", "required", "QuestionnaireResponse.subject is missing: Observations "
            "extracted from it cannot name the patient (US Core requires a subject)",
            ["QuestionnaireResponse.subject"]))
    return result


def score_codes(instrument: Instrument, codes: Mapping[str, str]
                ) -> tuple[int | None, Band | None, dict[str, int]]:
    """Core arithmetic: item LOINC code -> answer code in, (total, band, item scores) out.

    Total and band are None unless every scored item has an answer. Raises KeyError for an
    answer code the item does not score (validation rejects those before we get here).
    """
    scores: dict[str, int] = {}
    for spec in instrument.items:
        answer = codes.get(spec.code)
        if answer is not None:
            scores[spec.code] = spec.scores()[answer]
    if len(scores) != len(instrument.items):
        return None, None, scores
    total = sum(scores.values())
    return total, instrument.band_for(total), scores


def _score_answers(inst: Instrument, qr: dict, answers: list[ItemAnswer],
                   result: ScreeningResult) -> None:
    scored = set(inst.item_codes)
    codes: dict[str, str] = {}
    for ans in answers:
        code = _loinc_of(ans)
        if code in scored and ans.value_key == "valueCoding":
            codes[code] = ans.value["code"]
        elif code == DIFFICULTY_CODE and ans.value_key == "valueCoding":
            result.difficulty = ans.value.get("code")
    result.total, result.band, result.item_scores = score_codes(inst, codes)
    for ans in answers:
        code = _loinc_of(ans)
        if code in scored and ans.value_key == "valueCoding":
            ans.score = result.item_scores[code]
            issue = _answer_weight_issue(qr, ans, ans.score)
            if issue:
                result.issues.append(issue)


def _finish(inst: Instrument, qr: dict, answers: list[ItemAnswer],
            result: ScreeningResult) -> None:
    result.missing_items = [c for c in inst.item_codes if c not in result.item_scores]
    if inst.asks_self_harm:
        result.item9 = result.item_scores.get(SELF_HARM_ITEM)
        result.self_harm_asked = result.item9 is not None
    if result.missing_items:
        result.status = "incomplete"
        result.issues.append(Issue(
            "warning", "incomplete",
            f"{inst.title}: items {', '.join(result.missing_items)} are unanswered, so no total "
            "score is computed (a partial sum is never reported as a total)",
            ["QuestionnaireResponse.item"]))
        if inst.asks_self_harm and result.item9 is None:
            result.issues.append(Issue(
                "warning", "incomplete",
                "PHQ-9 item 9 (thoughts of self-harm) is unanswered: self-harm risk is unknown",
                ["QuestionnaireResponse.item"]))
    else:
        result.status = "complete"
    if inst.depression_screen and not inst.asks_self_harm:
        result.issues.append(Issue(
            "information", "informational",
            f"{inst.title} does not ask about thoughts of self-harm: self-harm was not assessed",
            ["QuestionnaireResponse"]))
    _check_client_total(inst, answers, result)
    if result.errors:
        result.status, result.total, result.band = "invalid", None, None


def _check_client_total(inst: Instrument, answers: list[ItemAnswer],
                        result: ScreeningResult) -> None:
    total_code = inst.total[1]
    for ans in answers:
        if not any(c.get("code") == total_code for c in ans.codes):
            continue
        sent = _client_total(ans.value_key, ans.value)
        if isinstance(sent, bool) or not isinstance(sent, int | float) or sent % 1:
            result.issues.append(Issue("error", "value",
                                       f"Non-integer total score {sent!r}: {inst.title} totals "
                                       "are whole numbers", [ans.path]))
        elif result.total is None:
            result.issues.append(Issue("error", "value",
                                       f"A total of {sent:g} was sent but items "
                                       f"{', '.join(result.missing_items)} are unanswered; a "
                                       f"{inst.title} total needs every item", [ans.path]))
        elif sent != result.total:
            result.issues.append(Issue("error", "value",
                                       f"The response states a total of {sent:g} but its "
                                       f"answers add up to {result.total}", [ans.path]))
