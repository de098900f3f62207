"""Insert usage events exactly once: claim the key (tenant, request_id), then store the event.

The key goes into UsageRequest with INSERT ... ON CONFLICT (tenant_id, request_id) DO NOTHING,
and only the events whose key was inserted are stored, in the same statement (PostgreSQL) or
transaction (SQLite). The usage table is partitioned by month of occurred_at on PostgreSQL,
where a unique index must include the partition key; the key table is not, so a replay is
recognised whatever its occurred_at and after its month was archived (docs/scaling.md,
"Monthly partitions"). The keys returned are ours; anything else was stored before (or
concurrently, by another process that committed first). PostgreSQL gets one statement with one parameter, the
rows as a JSON array that `json_to_recordset` turns into typed columns: orjson writes it in
about a microsecond per row, where binding 18 arrays element by element cost tens
(bench/ingest.py, docs/scaling.md). SQLite gets a multi-row VALUES list.

The same statement claims the open holds that the inserted events settle (a data-modifying
CTE joined to the inserted rows), so a duplicate never touches a hold and ingest pays one
round trip for both.
"""

import datetime as dt
import operator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import orjson
from django.db import connection

from billing.services.holds import (
    CLAIMED_COLUMN_TYPES,
    ClosedHold,
    claim_settled_statement,
    claimed_holds,
    holds_claim_settled,
)
from infra.db import hot_cursor
from metering.models import UsageEvent, UsageRequest

TABLE = UsageEvent._meta.db_table
KEYS = UsageRequest._meta.db_table
# The identity sequence of UsageEvent.id: PostgreSQL draws the id when it claims the key, so
# the key row names its event without a second statement.
ID_SEQUENCE = f"{TABLE}_id_seq"
COLUMNS = (
    "tenant_id", "api_key_id", "request_id", "model", "input_tokens", "output_tokens",
    "cached_input_tokens", "cache_write_tokens", "occurred_at", "received_at", "latency_ms",
    "metadata", "token_source", "encoding", "cost", "currency", "price_id", "body_hash", "flags",
    "long_context", "service_tier", "cache_write_1h_tokens", "reasoning_tokens", "upstream", "ttft_ms",
    "cost_basis",
)  # fmt: skip
_PG_TYPES = (
    "bigint", "bigint", "varchar", "varchar", "bigint", "bigint", "bigint", "bigint",
    "timestamptz", "timestamptz", "integer", "jsonb", "varchar", "varchar", "numeric",
    "varchar", "bigint", "varchar", "varchar", "boolean", "varchar", "bigint", "bigint",
    "varchar", "integer", "numeric",
)  # fmt: skip

# SQLite stores times and money (exact, as text) through Django's adapters (_insert_portable).
_TIME_COLUMNS = (COLUMNS.index("occurred_at"), COLUMNS.index("received_at"))
_MONEY_COLUMNS = (COLUMNS.index("cost"), COLUMNS.index("cost_basis"))

# Identifiers are module constants; every value is a bound parameter.
_INSERT = f"INSERT INTO {TABLE} ({', '.join(COLUMNS)})"
_PG_RECORD = ", ".join(f"{name} {pg_type}" for name, pg_type in zip(COLUMNS, _PG_TYPES, strict=True))
# `{gate}`: where a caller's lock goes (below). `r`: the batch, read once; `k`: the keys claimed
# now (with the id their event gets); `ins`: the events of those keys.
_PG_INSERT = (
    f"r AS MATERIALIZED (SELECT * FROM json_to_recordset(%s::json) AS r({_PG_RECORD})), "  # noqa: S608
    f"k AS (INSERT INTO {KEYS} (tenant_id, request_id, body_hash, event_id) "
    f"SELECT tenant_id, request_id, body_hash, nextval('{ID_SEQUENCE}') FROM r {{gate}}"
    "ON CONFLICT (tenant_id, request_id) DO NOTHING RETURNING request_id, event_id), "
    f"ins AS (INSERT INTO {TABLE} (id, {', '.join(COLUMNS)}) "
    f"SELECT k.event_id, {', '.join('r.' + name for name in COLUMNS)} FROM r JOIN k USING (request_id) "
    "RETURNING id, request_id)"
)
_SELECT_INSERTED = " SELECT id, request_id FROM ins"
# With a lock statement: the CTE `lk` runs it, and a one-time filter on `lk` makes it run
# before the first key is claimed (so before the statement changes anything).
_GATE = "WHERE (SELECT count(*) FROM lk) = 1 "


_BY_REQUEST_ID = operator.attrgetter("request_id")


@dataclass(slots=True)
class NewEvent:
    tenant_id: int
    api_key_id: int
    request_id: str
    model: str
    input_tokens: int
    output_tokens: int
    cached_input_tokens: int
    cache_write_tokens: int
    occurred_at: dt.datetime
    received_at: dt.datetime
    latency_ms: int | None
    metadata: dict[str, Any]
    token_source: str
    encoding: str
    cost: Decimal | None
    currency: str
    price_id: int | None
    body_hash: str
    flags: str = ""  # what a control would have refused (metering.models.UsageEvent.flags)
    long_context: bool = False  # the price's context tier applied (billing.rating.tier_applies)
    service_tier: str = "default"  # billing.models.ServiceTier: picks the price row
    cache_write_1h_tokens: int = 0  # part of cache_write_tokens
    reasoning_tokens: int = 0  # part of output_tokens
    upstream: str = ""  # the relay's upstream that served the request
    ttft_ms: int | None = None  # the relay's time to first token
    cost_basis: Decimal | None = None  # our cost of the tokens (resale), in `currency`

    def values(self) -> tuple[Any, ...]:
        return (
            self.tenant_id, self.api_key_id, self.request_id, self.model, self.input_tokens,
            self.output_tokens, self.cached_input_tokens, self.cache_write_tokens, self.occurred_at,
            self.received_at, self.latency_ms, orjson.dumps(self.metadata).decode(), self.token_source,
            self.encoding, self.cost, self.currency, self.price_id, self.body_hash, self.flags,
            self.long_context, self.service_tier, self.cache_write_1h_tokens, self.reasoning_tokens,
            self.upstream, self.ttft_ms, self.cost_basis,
        )  # fmt: skip

    def record(self) -> dict[str, Any]:
        """The row as json_to_recordset reads it (money as a string: exact, never a float)."""
        return {
            "tenant_id": self.tenant_id, "api_key_id": self.api_key_id, "request_id": self.request_id,
            "model": self.model, "input_tokens": self.input_tokens, "output_tokens": self.output_tokens,
            "cached_input_tokens": self.cached_input_tokens, "cache_write_tokens": self.cache_write_tokens,
            "occurred_at": self.occurred_at, "received_at": self.received_at, "latency_ms": self.latency_ms,
            "metadata": self.metadata, "token_source": self.token_source, "encoding": self.encoding,
            "cost": str(self.cost) if self.cost is not None else None, "currency": self.currency,
            "price_id": self.price_id, "body_hash": self.body_hash, "flags": self.flags,
            "long_context": self.long_context, "service_tier": self.service_tier,
            "cache_write_1h_tokens": self.cache_write_1h_tokens, "reasoning_tokens": self.reasoning_tokens,
            "upstream": self.upstream, "ttft_ms": self.ttft_ms,
            "cost_basis": str(self.cost_basis) if self.cost_basis is not None else None,
        }  # fmt: skip


@dataclass(frozen=True, slots=True)
class Stored:
    inserted: dict[str, int]  # {request_id: id} of the rows inserted now
    claimed: list[ClosedHold]  # the open holds those events settled


# (kind, event id, request_id, then a claimed hold's columns): one result for both CTEs.
_HOLD_NULLS = ", ".join(f"NULL::{pg_type}" for pg_type in CLAIMED_COLUMN_TYPES[2:])
_PG_INSERT_AND_CLAIM = (
    f"{_PG_INSERT}, claimed AS ({{claim}}) "  # noqa: S608
    f"SELECT 'e', id, request_id, {_HOLD_NULLS} FROM ins UNION ALL SELECT 'h', * FROM claimed"
)


def insert_new(
    events: list[NewEvent], *, settle_holds_at: dt.datetime | None = None, lock: tuple[str, list[Any]] | None = None
) -> Stored:
    """Insert what is not stored yet; with `settle_holds_at`, claim the holds the new rows settle.

    All events must belong to one tenant (the caller groups them). Each hold is claimed at
    its event's cost (see billing.services.holds.holds_claim_settled). `lock` (a SELECT and
    its parameters, PostgreSQL) runs first in the same statement: the balance lock, without
    a statement of its own.
    """
    if not events:
        return Stored({}, [])
    # Rows are inserted (and their unique-index entries locked) in this order. One order for
    # every transaction, so two batches sharing ids in opposite orders wait instead of deadlocking.
    events = sorted(events, key=_BY_REQUEST_ID)
    if connection.vendor != "postgresql":
        inserted = _insert_portable(events)
        claimed = []
        if settle_holds_at is not None and inserted:
            costs = {e.request_id: e.cost for e in events if e.request_id in inserted}
            claimed = holds_claim_settled(tenant_id=events[0].tenant_id, costs=costs, now=settle_holds_at)
        return Stored(inserted, claimed)
    rows = orjson.dumps([event.record() for event in events]).decode()
    ctes, params, gate = [], [], ""
    if lock is not None:
        ctes.append(f"lk AS ({lock[0]})")
        params += lock[1]
        gate = _GATE
    with hot_cursor() as cursor:
        if settle_holds_at is None:
            head = "WITH " + "".join(f"{cte}, " for cte in ctes)
            sql = head + _PG_INSERT.format(gate=gate) + _SELECT_INSERTED
            cursor.execute(sql, [*params, rows])
            return Stored({request_id: pk for pk, request_id in cursor.fetchall()}, [])
        costs = {event.request_id: event.cost for event in events}
        claim, claim_params = claim_settled_statement(
            tenant_id=events[0].tenant_id, costs=costs, now=settle_holds_at, among="ins"
        )
        sql = "WITH " + "".join(f"{cte}, " for cte in ctes) + _PG_INSERT_AND_CLAIM.format(claim=claim, gate=gate)
        cursor.execute(sql, [*params, rows, *claim_params])
        result = cursor.fetchall()
    inserted = {row[2]: row[1] for row in result if row[0] == "e"}
    return Stored(inserted, claimed_holds([row[1:] for row in result if row[0] == "h"]))


def stored_keys(*, tenant_id: int, request_ids: list[str]) -> dict[str, tuple[int, str]]:
    """{request_id: (event id, body_hash)} of the keys already claimed (stored before, or concurrently)."""
    rows = UsageRequest.objects.filter(tenant_id=tenant_id, request_id__in=request_ids).values_list(
        "request_id", "event_id", "body_hash"
    )
    # event_id is null only inside the SQLite transaction that claims the key.
    return {request_id: (event_id or 0, body_hash) for request_id, event_id, body_hash in rows}


def _insert_portable(events: list[NewEvent]) -> dict[str, int]:
    """SQLite: claim the keys, store their events, then name each key's event (one transaction)."""
    ops = connection.ops
    with connection.cursor() as cursor:
        key_rows = [v for e in events for v in (e.tenant_id, e.request_id, e.body_hash)]
        claim = ", ".join(["(%s, %s, %s)"] * len(events))
        cursor.execute(
            f"INSERT INTO {KEYS} (tenant_id, request_id, body_hash) VALUES {claim} "  # noqa: S608
            "ON CONFLICT (tenant_id, request_id) DO NOTHING RETURNING request_id",
            key_rows,
        )
        claimed = {request_id for (request_id,) in cursor.fetchall()}
        fresh = [event for event in events if event.request_id in claimed]
        if not fresh:
            return {}
        rows = []
        for event in fresh:
            values = list(event.values())
            for moment in _TIME_COLUMNS:
                values[moment] = ops.adapt_datetimefield_value(values[moment])
            for money in _MONEY_COLUMNS:
                if values[money] is not None:
                    values[money] = str(values[money])
            rows.extend(values)
        placeholders = ", ".join(["(" + ", ".join(["%s"] * len(COLUMNS)) + ")"] * len(fresh))
        cursor.execute(f"{_INSERT} VALUES {placeholders} RETURNING id, request_id", rows)
        inserted = {request_id: pk for pk, request_id in cursor.fetchall()}
        cursor.executemany(
            f"UPDATE {KEYS} SET event_id = %s WHERE tenant_id = %s AND request_id = %s",  # noqa: S608
            [(pk, fresh[0].tenant_id, request_id) for request_id, pk in inserted.items()],
        )
        return inserted
