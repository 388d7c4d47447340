"""Validation of a QuestionnaireResponse against its Questionnaire (pure, dict in).

Generic SDC/R4 rules: linkIds, duplicates, cardinality, value types, answer options and
required items. Instrument-specific rules live in mappers/screening.py.
"""

from __future__ import annotations

from typing import Any

from fhir_server.errors import Issue
from mappers.screening_instruments import EQUIVALENT_ANSWERS, LOINC

# Answer value[x] keys allowed per Questionnaire item type (R4).
_VALUE_KEYS: dict[str, frozenset[str]] = {
    "boolean": frozenset({"valueBoolean"}),
    "decimal": frozenset({"valueDecimal"}),
    "integer": frozenset({"valueInteger"}),
    "date": frozenset({"valueDate"}),
    "dateTime": frozenset({"valueDateTime"}),
    "time": frozenset({"valueTime"}),
    "string": frozenset({"valueString"}),
    "text": frozenset({"valueString"}),
    "url": frozenset({"valueUri"}),
    "choice": frozenset({"valueCoding"}),
    "open-choice": frozenset({"valueCoding", "valueString"}),
    "attachment": frozenset({"valueAttachment"}),
    "reference": frozenset({"valueReference"}),
    "quantity": frozenset({"valueQuantity"}),
}
_NO_ANSWER_TYPES = frozenset({"group", "display"})


def index_items(items: list[dict] | None, out: dict[str, dict]) -> dict[str, dict]:
    """linkId -> Questionnaire item, for the whole item tree (filled into ``out``)."""
    for item in items or []:
        if "linkId" in item:
            out[item["linkId"]] = item
        index_items(item.get("item"), out)
    return out


def _canonical_matches(reference: str, questionnaire: dict) -> bool:
    url, _, version = reference.partition("|")
    if url != questionnaire.get("url"):
        return False
    return not version or version == questionnaire.get("version")


def option_codings(qitem: dict) -> list[dict]:
    """The Codings among the item's answerOptions."""
    return [o["valueCoding"] for o in qitem.get("answerOption") or [] if "valueCoding" in o]


def _option_keys(qitem: dict) -> set[str]:
    return {k for opt in qitem.get("answerOption") or [] for k in opt if k[:5] == "value"}


def item_loinc(qitem: dict) -> str | None:
    """The item's LOINC code, if it has one."""
    for coding in qitem.get("code") or []:
        if coding.get("system") == LOINC:
            return coding.get("code")
    return None


def _coding_in_options(coding: dict, qitem: dict) -> bool:
    options = {(c.get("system"), c.get("code")) for c in option_codings(qitem)}
    system, code = coding.get("system"), coding.get("code")
    if (system, code) in options:
        return True
    alt = EQUIVALENT_ANSWERS.get(item_loinc(qitem) or "", {}).get(code or "")
    return alt is not None and (system, alt) in options


def _check_value(key: str, value: Any, path: str) -> Issue | None:
    """JSON-level type check of one answer value."""
    bad = None
    if key == "valueInteger" and (isinstance(value, bool) or not isinstance(value, int)):
        bad = "an integer"
    elif key == "valueDecimal" and (isinstance(value, bool) or not isinstance(value, int | float)):
        bad = "a number"
    elif key == "valueBoolean" and not isinstance(value, bool):
        bad = "true or false"
    elif key in ("valueString", "valueDate", "valueDateTime", "valueTime", "valueUri") and (
        not isinstance(value, str) or not value
    ):
        bad = "a non-empty string"
    elif key == "valueCoding" and (not isinstance(value, dict) or not value.get("code")):
        bad = "a Coding with a code"
    if bad:
        return Issue("error", "value", f"Answer {key} must be {bad}, got {value!r}", [path])
    return None


def _walk_answers(
    items: list[dict], qmap: dict[str, dict], path: str, issues: list[Issue]
) -> None:
    seen: set[str] = set()
    for i, item in enumerate(items):
        ipath = f"{path}.item[{i}]"
        link_id = item.get("linkId")
        qitem = qmap.get(link_id) if isinstance(link_id, str) else None
        if qitem is None:
            issues.append(Issue("error", "invalid",
                                f"linkId {link_id!r} is not an item of the Questionnaire",
                                [f"{ipath}.linkId"]))
            continue
        if link_id in seen and not (qitem.get("type") == "group" and qitem.get("repeats")):
            issues.append(Issue("error", "duplicate",
                                f"linkId {link_id!r} appears more than once; put repeated "
                                "answers in one item", [f"{ipath}.linkId"]))
            continue
        seen.add(link_id)
        _check_item(item, qitem, qmap, ipath, issues)


def _check_item(item: dict, qitem: dict, qmap: dict, ipath: str, issues: list[Issue]) -> None:
    qtype = qitem.get("type", "")
    answers = item.get("answer") or []
    if qtype in _NO_ANSWER_TYPES and answers:
        issues.append(Issue("error", "structure",
                            f"Item {qitem['linkId']!r} is a {qtype} and cannot have answers",
                            [f"{ipath}.answer"]))
        return
    if len(answers) > 1 and not qitem.get("repeats"):
        issues.append(Issue("error", "structure",
                            f"Item {qitem['linkId']!r} does not repeat but has "
                            f"{len(answers)} answers", [f"{ipath}.answer"]))
    allowed = _VALUE_KEYS.get(qtype, frozenset())
    option_keys = _option_keys(qitem) if qtype in ("choice", "open-choice") else set()
    if option_keys:
        allowed = frozenset(option_keys) | (
            {"valueString"} if qtype == "open-choice" else set())
    for j, answer in enumerate(answers):
        apath = f"{ipath}.answer[{j}]"
        keys = [k for k in answer if k.startswith("value")]
        if len(keys) != 1:
            issues.append(Issue("error", "structure", "Each answer needs exactly one value[x]",
                                [apath]))
            continue
        key = keys[0]
        vpath = f"{apath}.{key}"
        if key not in allowed:
            issues.append(Issue("error", "value",
                                f"Item {qitem['linkId']!r} ({qtype}) cannot take {key}; "
                                f"expected {' or '.join(sorted(allowed)) or 'no answer'}",
                                [vpath]))
            continue
        bad = _check_value(key, answer[key], vpath)
        if bad:
            issues.append(bad)
            continue
        if key == "valueCoding" and option_codings(qitem) and not _coding_in_options(
                answer[key], qitem):
            c = answer[key]
            issues.append(Issue("error", "code-invalid",
                                f"Answer {c.get('system')}|{c.get('code')} is not one of the "
                                f"options of item {qitem['linkId']!r}", [vpath]))
        elif key != "valueCoding" and key in option_keys:
            values = [o.get(key) for o in qitem.get("answerOption") or []]
            if answer[key] not in values:
                issues.append(Issue("error", "code-invalid",
                                    f"Answer {answer[key]!r} is not one of the options of item "
                                    f"{qitem['linkId']!r}", [vpath]))
        if answer.get("item"):
            _walk_answers(answer["item"], qmap, apath, issues)
    if item.get("item"):
        _walk_answers(item["item"], qmap, ipath, issues)


def _missing_required(qitems: list[dict], answered: set[str], out: list[dict]) -> list[dict]:
    for qitem in qitems:
        if qitem.get("type") == "group":
            _missing_required(qitem.get("item") or [], answered, out)
        elif (qitem.get("required") and not qitem.get("enableWhen")
              and qitem.get("type") != "display" and qitem["linkId"] not in answered):
            out.append(qitem)
    return out


def _answered_link_ids(items: list[dict] | None, out: set[str]) -> set[str]:
    for item in items or []:
        if item.get("answer"):
            out.add(item.get("linkId"))
        for answer in item.get("answer") or []:
            _answered_link_ids(answer.get("item"), out)
        _answered_link_ids(item.get("item"), out)
    return out


def validate_answers(questionnaire: dict, qr: dict) -> list[Issue]:
    """Check a QuestionnaireResponse against its Questionnaire.

    Errors: a ``questionnaire`` canonical that names another Questionnaire, unknown or
    duplicate linkIds, answers on groups/display items, several answers to a non-repeating
    item, value types that the item type does not allow, codes outside the answer options.
    Warnings: required items left unanswered in a completed/amended response.
    """
    issues: list[Issue] = []
    authored = qr.get("authored")
    if authored is not None and not isinstance(authored, str):
        # the scored Observations, Flag and Task copy it as their dateTime
        issues.append(Issue("error", "value", f"QuestionnaireResponse.authored must be a "
                            f"dateTime string, got {authored!r}"[:200],
                            ["QuestionnaireResponse.authored"]))
        return issues
    ref = qr.get("questionnaire")
    if ref and not _canonical_matches(ref, questionnaire):
        issues.append(Issue("error", "processing",
                            f"QuestionnaireResponse.questionnaire {ref!r} does not name "
                            f"Questionnaire {questionnaire.get('url')}|"
                            f"{questionnaire.get('version')}",
                            ["QuestionnaireResponse.questionnaire"]))
        return issues
    qmap = index_items(questionnaire.get("item"), {})
    _walk_answers(qr.get("item") or [], qmap, "QuestionnaireResponse", issues)
    if qr.get("status") in ("completed", "amended"):
        answered = _answered_link_ids(qr.get("item"), set())
        for qitem in _missing_required(questionnaire.get("item") or [], answered, []):
            issues.append(Issue("warning", "required",
                                f"Required item {qitem['linkId']!r} is not answered",
                                ["QuestionnaireResponse.item"]))
    return issues
