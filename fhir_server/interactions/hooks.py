"""Write hooks: the extension points every write path runs through, inside its transaction.

`before` hooks see (previous resource or None, new resource dict) and may raise FhirError to
refuse the write (profiles, workflow rules, access). `after` hooks see the stored versions and
may write more (screening Observations, subscription outbox rows) through the same connection.
Create, update, patch, delete, conditional variants and bundle entries all call `run_before`
and `run_after`, so a rule added here applies on every path.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection

# before(conn, call, interaction, previous_dict_or_None, new_dict_or_None) -> list[Issue]
BeforeHook = Callable[[Connection, Any, str, dict | None, dict | None], list]
# after(conn, call, interaction, previous StoredResource|None, new StoredResource) -> None
AfterHook = Callable[[Connection, Any, str, Any, Any], None]


@dataclass
class WriteHooks:
    before: list[BeforeHook] = field(default_factory=list)
    after: list[AfterHook] = field(default_factory=list)

    def run_before(self, conn: Connection, call: Any, interaction: str,
                   previous: dict | None, new: dict | None) -> list:
        """Run every before-hook; returns warnings/information issues they reported."""
        issues: list = []
        for hook in self.before:
            issues.extend(hook(conn, call, interaction, previous, new) or [])
        return issues

    def run_after(self, conn: Connection, call: Any, interaction: str,
                  previous: Any, new: Any) -> None:
        for hook in self.after:
            hook(conn, call, interaction, previous, new)
