"""The invariant short cuts (profiles/fastpath.py) never contradict FHIRPath: whenever a
short cut answers "holds", fhirpathpy agrees; and the common shapes are decided natively."""

from __future__ import annotations

import fhirpathpy
import pytest

from profiles.fastpath import shortcut

EXPRESSIONS = [
    "dataAbsentReason.empty() or value.empty()",
    "value.empty() or component.code.where(coding.intersect(%resource.code.coding)"
    ".exists()).empty()",
    "lastModified.exists().not() or authoredOn.exists().not() or lastModified >= authoredOn",
    "low.exists() or high.exists() or text.exists()",
    "orderDetail.empty() or code.exists()",
    "component.where(code.exists()).count().empty() or status.exists()",
    "status.exists() or reason.where(text.exists()).empty()",
    "category.coding.where(system = 'http://x' and code = 'a').exists() or note.exists()",
]

RESOURCES = [
    {},
    {"valueInteger": 3},
    {"valueInteger": 3, "dataAbsentReason": {"text": "x"}},
    {"dataAbsentReason": {"text": "x"}},
    {"valueQuantity": {"value": 1}, "code": {"coding": [{"code": "a"}]},
     "component": [{"code": {"coding": [{"code": "a"}]}}]},
    {"valueQuantity": {"value": 1}, "component": [{"code": {"coding": [{"code": "b"}]}}]},
    {"lastModified": "2024-01-02", "authoredOn": "2024-01-01"},
    {"lastModified": "2024-01-01", "authoredOn": "2024-01-02"},
    {"authoredOn": "2024-01-02"},
    {"low": {"value": 1}},
    {"text": "t"},
    {"orderDetail": [{"text": "d"}]},
    {"orderDetail": [{"text": "d"}], "code": {"text": "c"}},
    {"component": [{"code": {"text": "c"}}]},
    {"statusReason": {"text": "r"}},
    {"reason": [{"text": "why"}]},
    {"category": [{"coding": [{"system": "http://x", "code": "a"}]}]},
    {"note": [{"text": "n"}]},
]


def _holds(expr: str, resource: dict) -> bool:
    result = fhirpathpy.evaluate(resource, expr, {"resource": resource})
    return not result or result == [True] or (
        all(isinstance(r, bool) for r in result) and all(result))


@pytest.mark.parametrize("expr", EXPRESSIONS)
def test_short_cut_never_contradicts_fhirpath(expr):
    fast = shortcut(expr)
    assert fast is not None
    for resource in RESOURCES:
        answer = fast(resource)
        assert answer in (True, None)
        if answer is True:
            assert _holds(expr, resource), (expr, resource)


@pytest.mark.parametrize("expr,resource", [
    ("dataAbsentReason.empty() or value.empty()", {"valueInteger": 3}),
    ("value.empty() or component.code.where(coding.exists()).empty()", {"valueInteger": 3}),
    ("low.exists() or high.exists() or text.exists()", {"high": {"value": 2}}),
    ("orderDetail.empty() or code.exists()", {"code": {"text": "c"}}),
])
def test_common_shapes_are_decided_natively(expr, resource):
    assert shortcut(expr)(resource) is True


@pytest.mark.parametrize("expr,resource", [
    # `value` may be a choice element (valueQuantity): undecided, never "empty".
    ("value.empty() or status.exists()", {"valueQuantity": {"value": 1}}),
    # count() of nothing is 0, not empty: the where() form must not be taken as emptiness.
    ("component.where(code.exists()).count().empty() or status.exists()", {}),
    ("statusReason.empty() or code.exists()", {"statusReasonX": 1, "statusReason": {}}),
])
def test_undecidable_operands_are_left_to_fhirpath(expr, resource):
    assert shortcut(expr)(resource) is None
