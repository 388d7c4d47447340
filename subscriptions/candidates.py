"""Which live Subscriptions could a resource change notify: a per-process cached index.

`record_events` runs on every write. Instead of loading every live Subscription of the topic
and evaluating every filter, each process keeps a snapshot of the live registry, indexed by
the id of reference filters (`owner=Organization/x`) and the code of token filters
(`status=completed`). The snapshot is re-validated on every call with one aggregate query
(row count, max and checksum of `updated_at`): `sync_subscription` stamps `updated_at` on
every change and `remove_subscription` deletes the row, so any change to filters, channel
or liveness changes the stamp. (The worker's active/requested/error changes do not, and need
not: all three are live.) The index only narrows the candidates; `filters_match` still
decides.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from typing import Any

from fhir_server.errors import FhirError
from fhir_server.search import match
from fhir_server.search.parser import ParamFilter
from fhir_server.search.registry import COLUMN_PARAMS
from fhir_server.storage.db import Connection
from subscriptions.outbox_store import live_registry, registry_stamp
from subscriptions.subscription_rules import SubscriptionSpec, filters_match


@dataclass(frozen=True)
class Candidate:
    """One live Subscription as the write path needs it."""

    sub_id: str
    topic_url: str
    spec: SubscriptionSpec
    owner: str | None
    end_at: int | None


@dataclass
class _TopicIndex:
    always: list[Candidate] = field(default_factory=list)  # no indexable filter
    by_key: dict[tuple[str, str, str], list[Candidate]] = field(default_factory=dict)
    params: set[tuple[str, str]] = field(default_factory=set)  # (resource type, param)


def _index_keys(spec: SubscriptionSpec) -> tuple[str, str, list[str]] | None:
    """(resource type, param, keys) of the first filter usable as an index, or None: a
    reference filter without modifier (keys: the target ids or urls) or a token filter
    whose every value names a code (keys: the codes)."""
    for f in spec.filters:
        if f.modifier:
            continue
        try:
            (flt,) = f.criteria().filters
        except (FhirError, ValueError):
            continue
        if not isinstance(flt, ParamFilter) or flt.param.code in COLUMN_PARAMS:
            continue
        if flt.param.type == "reference":
            keys = [v.target_id or _id_of(v.url) for v in flt.values]  # type: ignore[attr-defined]
        elif flt.param.type == "token":
            keys = [v.code for v in flt.values]  # type: ignore[attr-defined]
        else:
            continue
        if all(keys):
            return f.resource_type, f.param, keys  # type: ignore[return-value]
    return None


def _id_of(url: str | None) -> str | None:
    """The id an absolute reference ends with (`.../Type/id[/_history/n]`): a key that
    finds the Subscription whichever base URL the filter or the resource uses."""
    if not url:
        return None
    return url.split("/_history/")[0].rstrip("/").rsplit("/", 1)[-1] or None


def _resource_keys(resource: match.Indexed, param: str) -> set[str]:
    """The keys `_index_keys` would give for the values the resource holds in `param`."""
    keys: set[str] = set()
    for row in resource.rows(param):
        key = (row[3] or _id_of(row[4])) if len(row) == 7 else row[3]  # reference | token
        if key:
            keys.add(key)
    return keys


class Snapshot:
    """The live registry of one database, indexed per topic."""

    def __init__(self, rows: list[Any]) -> None:
        self.topics: dict[str, _TopicIndex] = {}
        for r in rows:
            spec = SubscriptionSpec.from_json(json.loads(r.spec))
            cand = Candidate(str(r.sub_id), r.topic_url, spec, r.owner, r.end_at)
            index = self.topics.setdefault(r.topic_url, _TopicIndex())
            keys = _index_keys(spec)
            if keys is None:
                index.always.append(cand)
                continue
            res_type, param, values = keys
            index.params.add((res_type, param))
            for value in set(values):
                index.by_key.setdefault((res_type, param, value), []).append(cand)

    def matching(self, topic_url: str, resource: dict[str, Any] | match.Indexed,
                 now_us: int, base_url: str | None = None) -> list[Candidate]:
        """Live, unexpired Subscriptions of the topic whose filters the resource passes
        (`base_url`: this server's, so filters naming its absolute URLs match)."""
        index = self.topics.get(topic_url)
        if index is None:
            return []
        resource = match.indexed(resource)
        res_type = resource.res_type
        pool: dict[str, Candidate] = {c.sub_id: c for c in index.always}
        for rtype, param in index.params:
            if rtype != res_type:
                continue
            for key in _resource_keys(resource, param):
                for c in index.by_key.get((rtype, param, key), ()):
                    pool[c.sub_id] = c
        return [c for c in pool.values()
                if (c.end_at is None or c.end_at >= now_us)
                and filters_match(c.spec, resource, base_url)]


_lock = threading.Lock()
_cache: dict[str, tuple[tuple[Any, ...], Snapshot]] = {}


def snapshot(conn: Connection) -> Snapshot:
    """The current Snapshot for this connection's database (rebuilt when the registry
    changed since the cached one was taken)."""
    key = conn.engine.url.render_as_string(hide_password=True)
    stamp = registry_stamp(conn)
    cached = _cache.get(key)
    if cached is not None and cached[0] == stamp:
        return cached[1]
    snap = Snapshot(live_registry(conn))
    with _lock:
        _cache[key] = (stamp, snap)
    return snap
