"""A Questionnaire as an accessible form, and the answers as a QuestionnaireResponse (pure).

The form is built from our Questionnaire resources: each question's text, and each answer's
words, in the page language when the Questionnaire carries a translation (the core
`translation` extension on `_text`, `_title` and `valueCoding._display`), else as written.
Read-only and calculated items (the PHQ-9 total) are not asked: the server scores the
answers itself. Supported item types: choice and open-choice (answerOption codings, strings
and integers), boolean, string, text, integer, decimal, date, display and group.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

TRANSLATION = "http://hl7.org/fhir/StructureDefinition/translation"
CALCULATED = "http://hl7.org/fhir/uv/sdc/StructureDefinition/sdc-questionnaire-calculatedExpression"
ASKED_TYPES = frozenset({"choice", "open-choice", "boolean", "string", "text", "integer",
                         "decimal", "date"})
MAX_TEXT = 2000


def translated(owner: dict | None, key: str, language: str) -> str:
    """`owner[key]` in `language` (a `translation` extension on `_key`), else as written."""
    if not isinstance(owner, dict):
        return ""
    base = owner.get(key)
    for ext in (owner.get(f"_{key}") or {}).get("extension") or []:
        if ext.get("url") != TRANSLATION:
            continue
        parts = {p.get("url"): p for p in ext.get("extension") or []}
        lang = str((parts.get("lang") or {}).get("valueCode") or "")
        content = (parts.get("content") or {}).get("valueString")
        if content and (lang == language or lang.split("-")[0] == language):
            return str(content)
    return str(base) if base is not None else ""


@dataclass(frozen=True)
class Option:
    """One answer a question offers."""

    key: str  # the form value
    label: str
    answer: dict  # the QuestionnaireResponse answer it becomes ({"valueCoding": ...})


@dataclass
class Question:
    """One item to ask (or a display text / group heading)."""

    field: str  # form field name and HTML id: q1, q2, ...
    link_id: str
    kind: str  # the item type
    text: str
    prefix: str = ""
    required: bool = False
    options: list[Option] = field(default_factory=list)
    children: list[Question] = field(default_factory=list)

    @property
    def asks(self) -> bool:
        return self.kind in ASKED_TYPES


@dataclass
class Form:
    title: str
    questions: list[Question]

    def all(self) -> list[Question]:
        """Every question, depth first."""
        out: list[Question] = []
        stack = list(reversed(self.questions))
        while stack:
            question = stack.pop()
            out.append(question)
            stack.extend(reversed(question.children))
        return out


def _options(item: dict, language: str) -> list[Option]:
    out = []
    for n, option in enumerate(item.get("answerOption") or []):
        if "valueCoding" in option:
            coding = option["valueCoding"]
            label = translated(coding, "display", language) or str(coding.get("code", ""))
            answer = {"valueCoding": {k: coding[k] for k in ("system", "code", "display")
                                      if k in coding}}
        elif "valueString" in option:
            label = translated(option, "valueString", language)
            answer = {"valueString": option["valueString"]}
        elif "valueInteger" in option:
            label, answer = str(option["valueInteger"]), {"valueInteger": option["valueInteger"]}
        else:
            continue
        out.append(Option(key=str(n), label=label, answer=answer))
    return out


def _skipped(item: dict) -> bool:
    """Items the patient is not asked: read-only or calculated by the server."""
    return bool(item.get("readOnly")) or any(
        e.get("url") == CALCULATED for e in item.get("extension") or [])


def form_for(questionnaire: dict, language: str, title: str = "") -> Form:
    """The form a patient fills in for `questionnaire`, in `language`."""
    counter = [0]

    def build(items: list[dict]) -> list[Question]:
        out = []
        for item in items:
            if _skipped(item) or not item.get("linkId"):
                continue
            kind = str(item.get("type") or "")
            if kind not in ASKED_TYPES and kind not in ("display", "group"):
                continue
            counter[0] += 1
            question = Question(
                field=f"q{counter[0]}", link_id=str(item["linkId"]), kind=kind,
                text=translated(item, "text", language), prefix=str(item.get("prefix") or ""),
                required=bool(item.get("required")),
                options=_options(item, language) if kind in ("choice", "open-choice") else [])
            question.children = build(item.get("item") or [])
            if kind == "group" and not question.children:
                continue
            out.append(question)
        return out

    return Form(title=title or translated(questionnaire, "title", language)
                or str(questionnaire.get("name") or ""),
                questions=build(questionnaire.get("item") or []))


# -- answers ---------------------------------------------------------------------------
Values = dict[str, list[str]]


def _answer(question: Question, raw: str) -> dict | None:
    """The QuestionnaireResponse answer for one typed value (ValueError when invalid)."""
    if question.kind in ("choice", "open-choice"):
        found = next((o for o in question.options if o.key == raw), None)
        if found is not None:
            return dict(found.answer)
        if question.kind == "open-choice" and raw.strip():
            return {"valueString": raw.strip()[:MAX_TEXT]}
        raise ValueError("choose one of the answers")
    if question.kind == "boolean":
        if raw not in ("true", "false"):
            raise ValueError("choose yes or no")
        return {"valueBoolean": raw == "true"}
    if question.kind == "integer":
        return {"valueInteger": int(raw.strip())}
    if question.kind == "decimal":
        return {"valueDecimal": float(raw.strip())}
    if question.kind == "date":
        from datetime import date

        return {"valueDate": date.fromisoformat(raw.strip()).isoformat()}
    return {"valueString": raw.strip()[:MAX_TEXT]}


def read_answers(form: Form, values: Values) -> tuple[dict[str, dict], dict[str, str]]:
    """(answers by field, problems by field) for the submitted `values`. Problems are
    codes: `required` (no answer to a required question) or `invalid`."""
    answers: dict[str, dict] = {}
    problems: dict[str, str] = {}
    for question in form.all():
        if not question.asks:
            continue
        raw = next((v for v in values.get(question.field, []) if v.strip()), "")
        if not raw:
            if question.required:
                problems[question.field] = "required"
            continue
        try:
            answer = _answer(question, raw)
        except ValueError:
            problems[question.field] = "invalid"
            continue
        if answer is not None:
            answers[question.field] = answer
    return answers, problems


def response_items(form: Form, answers: dict[str, dict]) -> list[dict]:
    """The QuestionnaireResponse items for `answers`, in the Questionnaire's structure."""

    def build(questions: list[Question]) -> list[dict]:
        out = []
        for question in questions:
            if question.kind == "group":
                children = build(question.children)
                if children:
                    out.append({"linkId": question.link_id, "text": question.text,
                                "item": children})
                continue
            answer = answers.get(question.field)
            if answer is None:
                continue
            entry: dict[str, Any] = {"linkId": question.link_id, "answer": [answer]}
            nested = build(question.children)
            if nested:
                entry["answer"][0] = {**answer, "item": nested}
            out.append(entry)
        return out

    return build(form.questions)


def questionnaire_response(questionnaire: dict, form: Form, answers: dict[str, dict], *,
                           patient: str, authored: str, identifier: dict,
                           based_on: list[dict] | None = None, language: str = "") -> dict:
    """A completed QuestionnaireResponse written by the patient about themselves."""
    canonical = str(questionnaire.get("url") or "")
    if questionnaire.get("version"):
        canonical += f"|{questionnaire['version']}"
    response: dict[str, Any] = {
        "resourceType": "QuestionnaireResponse",
        "identifier": identifier,
        "questionnaire": canonical,
        "status": "completed",
        "subject": {"reference": patient},
        "authored": authored,
        "author": {"reference": patient},
        "source": {"reference": patient},
        "item": response_items(form, answers),
    }
    if based_on:
        response["basedOn"] = based_on
    if language:
        response["language"] = language
    return response
