"""Many holds of one tenant recorded in one statement: the group commit of admissions.

Placing one hold costs a transaction of its own (the hold row, its `hold` ledger entry, the
wallet, the quota cells, the commit), and every hold of a tenant waits for the previous one's
commit on the wallet row. A relay admitting hundreds of calls a second for one tenant would
spend its time there (docs/relay.md, "Admission"). Here a batch of holds that the balance
backend already admitted, one after the other, is written with one statement and committed
once: the same rows and entries as one hold at a time, in the same lock order (hold rows, then
the wallet, then the cells).

All or nothing: when any request_id already has a hold row, or the wallet cannot cover the sum
(the cache was above PostgreSQL, the truth), nothing is returned and the caller rolls the
transaction back and admits the batch one hold at a time, where each case has its answer.
"""

from typing import Any

import orjson
from django.db import connection

from billing.models import Hold, LedgerEntry, Wallet
from billing.money import from_micros
from billing.services.balances import Admission, HoldInfo
from billing.services.quota_counters import Deltas, cells_upsert_cte, quota_cells_json, quota_rows, reservation_deltas
from infra.db import hot_cursor

_HOLD, _WALLET, _LEDGER = Hold._meta.db_table, Wallet._meta.db_table, LedgerEntry._meta.db_table

# h: the hold rows (a request_id with a row already is skipped: fewer ids come back);
# w: the wallet, moved only when the balance covers the sum;
# e and q: the ledger entries and the cells' reservations, only after w (the lock order).
_PERSIST_MANY = (
    f"WITH h AS (INSERT INTO {_HOLD} (tenant_id, api_key_id, request_id, model, amount, estimated_tokens, "  # noqa: S608
    "status, created_at, expires_at, overage) "
    "SELECT %(tenant)s, r.api_key_id, r.request_id, r.model, r.amount, r.tokens, 'open', r.created_at, r.expires_at, 0 "
    "FROM json_to_recordset(%(holds)s::json) AS r(api_key_id bigint, request_id varchar, model varchar, "
    "amount numeric, tokens bigint, created_at timestamptz, expires_at timestamptz) "
    "ON CONFLICT (tenant_id, request_id) DO NOTHING RETURNING id, request_id, model, amount, estimated_tokens), "
    f"w AS (UPDATE {_WALLET} SET balance = balance - %(total)s::numeric, updated_at = %(now)s "
    "WHERE tenant_id = %(tenant)s AND balance - %(total)s::numeric >= 0 RETURNING balance), "
    f"e AS (INSERT INTO {_LEDGER} (tenant_id, kind, amount, idempotency_key, reference, actor_label, metadata, "
    "created_at) SELECT %(tenant)s, %(kind)s, -h.amount, 'hold:' || h.id, h.request_id, '', "
    "jsonb_build_object('model', h.model, 'tokens', h.estimated_tokens), %(now)s "
    "FROM h WHERE h.amount <> 0 AND EXISTS (SELECT 1 FROM w)), "
    + cells_upsert_cte(when="EXISTS (SELECT 1 FROM w)")
    + " SELECT h.request_id, h.id FROM h WHERE EXISTS (SELECT 1 FROM w)"
)


def holds_persist_many(admissions: list[Admission]) -> list[HoldInfo] | None:
    """Record the holds of admitted requests of one tenant (PostgreSQL), or None: nothing was
    written that the caller may keep (it rolls back and admits them one at a time).

    Call under the tenant's balance lock, inside the transaction the backend commits.
    """
    assert connection.vendor == "postgresql", "the database backend admits one hold at a time"
    tenant_id = admissions[0].tenant_id
    deltas: Deltas = {}
    holds: list[dict[str, Any]] = []
    total = 0
    for admission in admissions:
        assert admission.tenant_id == tenant_id and admission.request_id
        total += admission.estimate_micros
        holds.append(
            {
                "api_key_id": admission.api_key_id,
                "request_id": admission.request_id,
                "model": admission.model,
                "amount": str(from_micros(admission.estimate_micros)),
                "tokens": admission.estimate_tokens,
                "created_at": admission.now.isoformat(),
                "expires_at": admission.expires_at.isoformat(),
            }
        )
        reservation_deltas(
            deltas,
            moment=admission.now,
            tz_name=admission.tz_name,
            api_key_id=admission.api_key_id,
            tokens=admission.estimate_tokens,
            micros=admission.estimate_micros,
            sign=+1,
        )
    with hot_cursor() as cursor:
        cursor.execute(
            _PERSIST_MANY,
            {
                "tenant": tenant_id,
                "holds": orjson.dumps(holds).decode(),
                "cells": quota_cells_json(quota_rows(deltas)),
                "total": str(from_micros(total)),
                "now": max(admission.now for admission in admissions),
                "kind": LedgerEntry.Kind.HOLD.value,
            },
        )
        ids = dict(cursor.fetchall())
    if len(ids) != len(admissions):
        return None
    infos = []
    for admission in admissions:
        request_id = str(admission.request_id)
        infos.append(
            HoldInfo(ids[request_id], request_id, admission.estimate_micros, admission.expires_at, created=True)
        )
    return infos
