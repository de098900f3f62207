"""Insert usage events exactly once: INSERT ... ON CONFLICT (tenant, request_id) DO NOTHING.

The rows the database returns are ours; anything else was stored before (or concurrently, by
another process that committed first). PostgreSQL gets one statement with one parameter, the
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
from metering.models import UsageEvent

TABLE = UsageEvent._meta.db_table
COLUMNS = (
    "tenant_id", "api_key_id", "request_id", "model", "input_tokens", "output_tokens",
    "cached_input_tokens", "cache_write_tokens", "occurred_at", "received_at", "latency_ms",
    "metadata", "token_source", "encoding", "cost", "currency", "price_id", "body_hash", "flags",
    "long_context", "cost_basis",
)  # fmt: skip
_PG_TYPES = (
    "bigint", "bigint", "varchar", "varchar", "bigint", "bigint", "bigint", "bigint",
    "timestamptz", "timestamptz", "integer", "jsonb", "varchar", "varchar", "numeric",
    "varchar", "bigint", "varchar", "varchar", "boolean", "numeric",
)  # fmt: skip

# Identifiers are module constants; every value is a bound parameter.
_INSERT = f"INSERT INTO {TABLE} ({', '.join(COLUMNS)})"
_ON_CONFLICT = "ON CONFLICT (tenant_id, request_id) DO NOTHING RETURNING id, request_id"
_PG_RECORD = ", ".join(f"{name} {pg_type}" for name, pg_type in zip(COLUMNS, _PG_TYPES, strict=True))
_PG_INSERT = (  # `{gate}`: where a caller's lock goes (below)
    f"{_INSERT} SELECT {', '.join(COLUMNS)} FROM json_to_recordset(%s::json) AS r({_PG_RECORD}) {{gate}}{_ON_CONFLICT}"  # noqa: S608
)
# With a lock statement: the CTE `lk` runs it, and a one-time filter on `lk` makes it run
# before the first row is inserted (so before the statement changes anything).
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
    cost_basis: Decimal | None = None  # our cost of the tokens (resale), in `currency`

    def values(self) -> tuple[Any, ...]:
        return (
            self.tenant_id, self.api_key_id, self.request_id, self.model, self.input_tokens,
            self.output_tokens, self.cached_input_tokens, self.cache_write_tokens, self.occurred_at,
            self.received_at, self.latency_ms, orjson.dumps(self.metadata).decode(), self.token_source,
            self.encoding, self.cost, self.currency, self.price_id, self.body_hash, self.flags,
            self.long_context, self.cost_basis,
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
            "long_context": self.long_context,
            "cost_basis": str(self.cost_basis) if self.cost_basis is not None else None,
        }  # fmt: skip


@dataclass(frozen=True, slots=True)
class Stored:
    inserted: dict[str, int]  # {request_id: id} of the rows inserted now
    claimed: list[ClosedHold]  # the open holds those events settled


# (kind, event id, request_id, then a claimed hold's columns): one result for both CTEs.
_HOLD_NULLS = ", ".join(f"NULL::{pg_type}" for pg_type in CLAIMED_COLUMN_TYPES[2:])
_PG_INSERT_AND_CLAIM = (
    f"ins AS ({_PG_INSERT}), claimed AS ({{claim}}) "  # noqa: S608
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
            head = f"WITH {', '.join(ctes)} " if ctes else ""
            cursor.execute(head + _PG_INSERT.format(gate=gate), [*params, rows])
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


def _insert_portable(events: list[NewEvent]) -> dict[str, int]:
    ops = connection.ops
    rows = []
    for event in events:
        values = list(event.values())
        values[8] = ops.adapt_datetimefield_value(values[8])
        values[9] = ops.adapt_datetimefield_value(values[9])
        for money in (14, 20):  # cost, cost_basis
            if values[money] is not None:
                values[money] = str(values[money])
        rows.extend(values)
    placeholders = ", ".join(["(" + ", ".join(["%s"] * len(COLUMNS)) + ")"] * len(events))
    with connection.cursor() as cursor:
        cursor.execute(f"{_INSERT} VALUES {placeholders} {_ON_CONFLICT}", rows)
        return {request_id: pk for pk, request_id in cursor.fetchall()}
