"""Every table of the product on one MetaData (for migrations and test set-up).

Each feature defines its tables beside its code; importing this module registers them all.
"""

from __future__ import annotations

import fhir_server.auth.auth_schema  # noqa: F401
import fhir_server.auth.invitation_schema  # noqa: F401
import fhir_server.storage.index_schema  # noqa: F401
import fhir_server.storage.outcomes_schema  # noqa: F401
import fhir_server.storage.reminders_schema  # noqa: F401
import fhir_server.storage.request_keys  # noqa: F401
import subscriptions.outbox_schema  # noqa: F401
from fhir_server.storage.schema import metadata

__all__ = ["metadata"]
