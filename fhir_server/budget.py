"""The cost budget of one request: resources read, resources included, time.

One `RequestBudget` per HTTP request; a batch or transaction Bundle's entries share it, so
200 searches in one batch cost what 200 separate requests would, within one request's
allowance. A request that would go past a limit stops with 422 `too-costly`, whose
diagnostics say which limit and how to narrow the request. Settings (README, "Limits and
cost budget"): FHIR_SERVER_MAX_ROWS_READ, FHIR_SERVER_MAX_INCLUDED,
FHIR_SERVER_REQUEST_SECONDS.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from fhir_server.errors import FhirError

NARROW_SEARCH = ("add filters, lower _count, or page with the next link")
NARROW_INCLUDES = ("name the _include / _revinclude parameters instead of '*', lower _count, "
                   "or fetch the related resources with their own searches")


@dataclass
class RequestBudget:
    """What one request may still spend. `expression` arguments name the parameter or
    Bundle entry being charged, for the OperationOutcome."""

    max_rows: int = 5000
    max_included: int = 1000
    seconds: float = 30.0
    rows_read: int = 0
    included: int = 0
    started: float = field(default_factory=time.monotonic)

    @property
    def deadline(self) -> float:
        return self.started + self.seconds

    def seconds_left(self) -> float:
        return self.deadline - time.monotonic()

    def included_left(self) -> int:
        return max(self.max_included - self.included, 0)

    def rows_left(self) -> int:
        return max(self.max_rows - self.rows_read, 0)

    def charge_rows(self, count: int, expression: str | list[str] | None = None) -> None:
        """Count `count` resources read; 422 when the request passes `max_rows`."""
        self.rows_read += count
        if self.rows_read > self.max_rows:
            raise too_costly(f"This request reads more than {self.max_rows} resources "
                             f"(the limit per request); {NARROW_SEARCH}", expression)

    def charge_included(self, count: int, expression: str | list[str] | None = None) -> None:
        """Count `count` included resources; 422 past `max_included`."""
        self.included += count
        if self.included > self.max_included:
            raise too_costly(f"This request would include more than {self.max_included} "
                             f"resources (the limit per request); {NARROW_INCLUDES}",
                             expression)
        self.charge_rows(count, expression)

    def check_time(self, expression: str | list[str] | None = None) -> None:
        """422 once the request has used its time."""
        if time.monotonic() > self.deadline:
            raise self.timed_out(expression)

    def timed_out(self, expression: str | list[str] | None = None) -> FhirError:
        return too_costly(f"This request needs more than {self.seconds:g} s of database "
                          f"work (the limit per request); {NARROW_SEARCH}, or split a "
                          "batch into smaller ones", expression)


def too_costly(message: str, expression: str | list[str] | None) -> FhirError:
    return FhirError(422, "too-costly", message, expression)
