"""Write phases: the named, ordered steps every write path runs inside its transaction.

Create, update, patch, delete, their conditional forms, Bundle entries and the operations
that write all call `before_write` before storing and `after_write` after, so a rule
registered here applies on every path. Phases, in this order:

* **prepare**: may return a changed resource (workflow transitions, derived fields); may
  refuse the write by raising FhirError.
* **check**: profiles and rules on the final content, after every transform; raises
  FhirError to refuse, returns warnings and information to report.
* **after-write**: the version is stored; audit, provenance, derived resources, the
  subscription outbox. Runs on the writer's connection, so it commits or rolls back with
  the write.

Each hook is registered with its phase, a name, an explicit order (lower first) and the
resource types it applies to, and receives a typed `WriteEvent`. The listing
(`python -m fhir_server hooks`) shows the order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the phases are part of Services, which Call carries
    from fhir_server.errors import Issue
    from fhir_server.interactions.context import Call
    from fhir_server.storage.db import Connection
    from fhir_server.storage.repository import StoredResource

PHASES = ("prepare", "check", "after-write")


@dataclass
class WriteEvent:
    """One write, as the phases see it. `resource` is the content being written (None for
    a delete) and changes as prepare hooks return new content; `stored` and
    `previous_stored` are set for after-write."""

    call: Call
    conn: Connection
    interaction: str  # create | update | patch | delete
    res_type: str
    res_id: str
    previous: dict[str, Any] | None  # the current content before this write (None: new)
    resource: dict[str, Any] | None
    if_match: int | None = None  # the version the client's If-Match named, if any
    stored: StoredResource | None = None
    previous_stored: StoredResource | None = None
    issues: list[Issue] = field(default_factory=list)  # warnings for the response
    # what a phase computed for a later phase of this same write (by hook name)
    carried: dict[str, Any] = field(default_factory=dict)


Prepare = Callable[[WriteEvent], "dict[str, Any] | None"]
Check = Callable[[WriteEvent], "list[Issue] | None"]
AfterWrite = Callable[[WriteEvent], None]


@dataclass(frozen=True)
class Hook:
    phase: str
    name: str
    order: int
    run: Callable[[WriteEvent], Any]
    types: frozenset[str] | None = None  # None: every resource type

    def applies(self, res_type: str) -> bool:
        return self.types is None or res_type in self.types


@dataclass
class WritePhases:
    """The registered hooks of every phase, kept in their order."""

    hooks: list[Hook] = field(default_factory=list)

    def add(self, phase: str, name: str, run: Callable[[WriteEvent], Any], *, order: int,
            types: frozenset[str] | set[str] | None = None) -> None:
        """Register `run` in `phase` at `order` (lower runs first), for `types` or all."""
        if phase not in PHASES:
            raise ValueError(f"unknown write phase {phase!r}; one of {', '.join(PHASES)}")
        if any(h.name == name for h in self.hooks):
            raise ValueError(f"a write hook named {name!r} is already registered")
        self.hooks.append(Hook(phase, name, order, run,
                               frozenset(types) if types is not None else None))
        self.hooks.sort(key=lambda h: (PHASES.index(h.phase), h.order, h.name))

    def of(self, phase: str, res_type: str) -> list[Hook]:
        return [h for h in self.hooks if h.phase == phase and h.applies(res_type)]

    def before_write(self, event: WriteEvent) -> dict[str, Any] | None:
        """Run prepare then check; returns the content to store (None for a delete)."""
        for hook in self.of("prepare", event.res_type):
            changed = hook.run(event)
            if changed is not None:
                event.resource = changed
        for hook in self.of("check", event.res_type):
            event.issues.extend(hook.run(event) or [])
        return event.resource

    def after_write(self, event: WriteEvent, stored: StoredResource,
                    previous_stored: StoredResource | None) -> None:
        """Run after-write with the stored version (and the one it replaced)."""
        event.stored, event.previous_stored = stored, previous_stored
        for hook in self.of("after-write", event.res_type):
            hook.run(event)

    def listing(self) -> list[str]:
        """A header, then one line per hook in the order they run."""
        rows = [("phase", "order", "hook", "resource types")] + [
            (h.phase, str(h.order), h.name,
             ", ".join(sorted(h.types)) if h.types is not None else "every type")
            for h in self.hooks]
        return [f"{phase:<12} {order:>5}  {name:<36} {types}" for phase, order, name, types in rows]
