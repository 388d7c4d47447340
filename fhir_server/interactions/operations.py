"""The registry of FHIR operations ($name) the server exposes, at each level.

A module that offers an operation registers it here once; the router dispatches to it and the
CapabilityStatement lists it, so the two can never drift apart.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the registry is part of Services, which Call carries
    from fhir_server.interactions.context import Call
    from fhir_server.interactions.results import Result

# handler(call, res_type or None, res_id or None, params: list[(k, v)], body or None) -> Result
OperationHandler = Callable[["Call", str | None, str | None, list[tuple[str, str]], Any],
                            "Result"]


@dataclass
class Operation:
    name: str  # without the $
    handler: OperationHandler
    system: bool = False
    types: frozenset[str] = frozenset()  # resource types (type and/or instance level)
    type_level: bool = False
    instance_level: bool = False
    methods: frozenset[str] = frozenset({"POST"})
    definition: str = ""  # canonical URL of the OperationDefinition
    documentation: str = ""
    affects_state: bool = False
    raw_formats: frozenset[str] = frozenset()  # non-FHIR media types it can return
    # The access check the router applies before the handler runs: on the instance (for
    # instance-level calls) and on the type (type-level); None: the handler checks itself.
    instance_interaction: str | None = "read"
    type_interaction: str | None = "search-type"
    # What the handler reads: "query" (params) or "parameters" (a Parameters body); the
    # router converts the other form (GET query <-> POST Parameters), using the types of the
    # published OperationDefinition. "": the handler takes both forms itself.
    reads: str = ""


@dataclass
class OperationRegistry:
    operations: dict[str, Operation] = field(default_factory=dict)

    def register(self, op: Operation) -> None:
        self.operations[op.name] = op

    def find(self, name: str, level: str, res_type: str | None) -> Operation | None:
        """The operation named `name` if it exists at this level for this type."""
        op = self.operations.get(name)
        if op is None:
            return None
        if level == "system":
            return op if op.system else None
        if op.types and res_type not in op.types:
            return None
        if level == "type" and op.type_level:
            return op
        if level == "instance" and op.instance_level:
            return op
        return None

    def for_type(self, res_type: str) -> list[Operation]:
        return [op for op in self.operations.values()
                if (op.type_level or op.instance_level) and (not op.types or res_type in op.types)]

    def system_level(self) -> list[Operation]:
        return [op for op in self.operations.values() if op.system]

