"""What the caller may read, for operations: every read an operation makes on the caller's
behalf goes through a `CallerView`, narrowed by the access policy in SQL (the same
narrowing as a search), so no operation can return what a search would hide.

Server code that must see everything (write rules, safety rules, the subscription worker)
says so explicitly with `CallerView(conn, system_call(call))` or `SYSTEM`: grep for
`SYSTEM` to find every unrestricted path.
"""

from __future__ import annotations

from typing import Any

from fhir_server.auth.context import SYSTEM
from fhir_server.interactions import access
from fhir_server.interactions.context import Call
from fhir_server.storage import access_sql
from fhir_server.storage.db import Connection
from fhir_server.storage.repository import Repository
from fhir_server.storage.search_sql import find_resources


class CallerView:
    """Reads inside an open transaction, as the call's caller."""

    def __init__(self, conn: Connection, call: Call) -> None:
        self.conn = conn
        self.call = call
        self._restrict = access.restriction(conn, call, "search-type")

    def search(self, res_type: str, params: list[tuple[str, str]], *,
               limit: int = 1000) -> list[dict[str, Any]]:
        """The bodies of the matching resources the caller may see (one statement)."""
        access.check_type(self.call, "search-type", res_type)
        return find_resources(self.conn, res_type, params, limit=limit,
                              restrict=self._restrict)

    def read(self, reference: str | None) -> dict[str, Any] | None:
        """The current resource a relative `Type/id` names, or None when it does not exist,
        is deleted or is hidden from the caller (the three look the same)."""
        if not reference or reference.count("/") != 1:
            return None
        res_type, res_id = reference.split("/")
        stored = Repository(self.conn).read(res_type, res_id)
        if stored is None or stored.deleted:
            return None
        if self._restrict is not None and not access_sql.row_visible(
                self.conn, stored.pid, self._restrict):
            return None
        return stored.resource()


def system_call(call: Call) -> Call:
    """A privileged Call for server-side work in the same transaction (unrestricted)."""
    return Call(services=call.services, base_url=call.base_url, access=SYSTEM,
                prefer_return="minimal")
