"""Wallet and ledger write paths. The balance is the sum of the ledger, always.

Every movement is one LedgerEntry with a per-tenant idempotency key, and the cached
Wallet.balance is moved by the same amount in the same transaction. The balance backend
(billing/services/balances) mirrors each movement into its hot counters inside that
transaction, under the tenant's balance lock, so the cache moves exactly when the ledger does.
"""

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import orjson
from django.db import IntegrityError, connection, transaction
from django.db.models import F

from billing.models import LedgerEntry, Wallet
from billing.money import round_to_ledger, to_micros
from billing.services.balances import MirrorDelta, balance_backend
from billing.services.quota_counters import Deltas, cells_upsert_cte, quota_cells_json, quota_counters_add, quota_rows
from billing.services.wallets import wallet_ensure, wallet_move
from infra.db import hot_cursor

__all__ = ["LedgerLine", "ledger_append", "ledger_apply", "ledger_post", "wallet_ensure", "wallet_move"]


def ledger_post(
    *,
    tenant_id: int,
    currency: str,
    kind: str,
    amount: Decimal,
    idempotency_key: str,
    reference: str = "",
    actor_label: str = "",
    metadata: dict[str, Any] | None = None,
) -> tuple[LedgerEntry, bool]:
    """Append one entry and move the wallet. Returns (entry, created); a replayed key is a no-op."""
    amount = round_to_ledger(amount)
    backend = balance_backend()
    with transaction.atomic():
        backend.lock(tenant_id)
        wallet_ensure(tenant_id=tenant_id, currency=currency)
        try:
            with transaction.atomic():
                entry = LedgerEntry.objects.create(
                    tenant_id=tenant_id,
                    kind=kind,
                    amount=amount,
                    idempotency_key=idempotency_key,
                    reference=reference,
                    actor_label=actor_label,
                    metadata=metadata or {},
                )
        except IntegrityError:
            existing = LedgerEntry.objects.filter(tenant_id=tenant_id, idempotency_key=idempotency_key).first()
            if existing is None:
                raise
            return existing, False
        Wallet.objects.filter(tenant_id=tenant_id).update(balance=F("balance") + amount)
        backend.mirror(tenant_id, MirrorDelta(balance=to_micros(amount)))
    return entry, True


# --- Building blocks for services that move the wallet themselves (holds, settlement) --------
# They insert entries and move the wallet by the same total in one transaction, and mirror it.


@dataclass(frozen=True, slots=True)
class LedgerLine:
    kind: str
    amount: Decimal  # currency units, signed, already at ledger precision
    idempotency_key: str
    reference: str = ""
    actor_label: str = ""
    metadata: dict[str, Any] | None = None


def ledger_append(*, tenant_id: int, lines: list[LedgerLine]) -> None:
    """Insert entries (one statement) without moving the wallet: the caller moves it by their sum."""
    if not lines:
        return
    LedgerEntry.objects.bulk_create(
        [
            LedgerEntry(
                tenant_id=tenant_id,
                kind=line.kind,
                amount=line.amount,
                idempotency_key=line.idempotency_key,
                reference=line.reference,
                actor_label=line.actor_label,
                metadata=line.metadata or {},
            )
            for line in lines
        ]
    )


# ledger_apply on PostgreSQL: wallet upsert, entries and quota cells in one statement. The
# wallet row is locked first (the one-time filters make the other two wait for it), then the
# cells in quota_rows' order: the lock order of every transaction that moves money.
_WALLET, _LEDGER = Wallet._meta.db_table, LedgerEntry._meta.db_table
_APPLY = (
    f"WITH w AS (INSERT INTO {_WALLET} AS w (tenant_id, currency, balance, updated_at) "  # noqa: S608
    "SELECT %(tenant)s, %(currency)s, %(delta)s::numeric, %(now)s WHERE %(delta)s::numeric <> 0 "
    "ON CONFLICT (tenant_id) DO UPDATE SET balance = w.balance + EXCLUDED.balance, updated_at = EXCLUDED.updated_at "
    "RETURNING balance), "
    f"e AS (INSERT INTO {_LEDGER} (tenant_id, kind, amount, idempotency_key, reference, actor_label, metadata, "
    "created_at) SELECT %(tenant)s, r.kind, r.amount, r.idempotency_key, r.reference, r.actor_label, r.metadata, "
    "%(now)s FROM json_to_recordset(%(lines)s::json) AS r(kind varchar, amount numeric, idempotency_key varchar, "
    "reference varchar, actor_label varchar, metadata jsonb) WHERE (SELECT count(*) FROM w) >= 0), "
    + cells_upsert_cte(when="(SELECT count(*) FROM w) >= 0")
    + " SELECT count(*) FROM w"
)


def ledger_apply(
    *,
    tenant_id: int,
    currency: str,
    lines: list[LedgerLine],
    cells: Deltas | None = None,
    now: dt.datetime,
) -> Decimal:
    """Append entries, move the wallet by their sum and add deltas to quota cells. Returns the move.

    One statement on PostgreSQL (a round trip per statement is most of what a single-event
    ingest costs); the same three writes one by one elsewhere. Call inside the transaction
    that made the change, under the balance lock, and mirror the result.
    """
    move = sum((line.amount for line in lines), Decimal(0))
    rows = quota_rows(cells or {})
    if not lines and not rows:
        return move
    if connection.vendor != "postgresql":
        ledger_append(tenant_id=tenant_id, lines=lines)
        if move:
            wallet_move(tenant_id=tenant_id, currency=currency, delta=move)
        quota_counters_add(tenant_id=tenant_id, deltas=cells or {})
        return move
    entries = [
        {
            "kind": line.kind,
            "amount": str(line.amount),
            "idempotency_key": line.idempotency_key,
            "reference": line.reference,
            "actor_label": line.actor_label,
            "metadata": line.metadata or {},
        }
        for line in lines
    ]
    params: dict[str, Any] = {
        "tenant": tenant_id,
        "currency": currency,
        "delta": str(move),
        "now": now,
        "lines": orjson.dumps(entries).decode(),
        "cells": quota_cells_json(rows),
    }
    with hot_cursor() as cursor:
        cursor.execute(_APPLY, params)
    return move
