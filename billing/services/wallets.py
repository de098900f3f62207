"""The wallet row: creation and the one-statement balance move (optionally conditional).

Callers keep Wallet.balance == sum(ledger) by moving it in the transaction that appends the
matching entries (billing/services/ledger.py, holds.py, settlement.py).
"""

from decimal import Decimal
from typing import Any

from django.db import connection
from django.utils import timezone

from billing.models import Wallet
from billing.money import round_to_ledger

_WALLET = Wallet._meta.db_table


def wallet_ensure(*, tenant_id: int, currency: str) -> Wallet:
    wallet, _ = Wallet.objects.get_or_create(tenant_id=tenant_id, defaults={"currency": currency})
    return wallet


def wallet_move(*, tenant_id: int, currency: str, delta: Decimal, floor: Decimal | None = None) -> Decimal | None:
    """Move the cached balance by `delta` and return the new balance (one statement when it exists).

    With `floor`, the move happens only if the new balance stays >= floor (a conditional UPDATE,
    the database backend's admission gate); None when it would not, or there is no wallet yet
    and it would not. The row stays locked until the transaction ends.
    """
    where = "tenant_id = %s"
    params: list[Any] = [delta, connection.ops.adapt_datetimefield_value(timezone.now()), tenant_id]
    if floor is not None:
        where += " AND balance + CAST(%s AS NUMERIC) >= CAST(%s AS NUMERIC)"
        params += [delta, floor]
    # CAST: SQLite (the embedded default) would compare a number with the text of a Decimal.
    sql = (
        f"UPDATE {_WALLET} SET balance = balance + CAST(%s AS NUMERIC), updated_at = %s WHERE {where} RETURNING balance"  # noqa: S608
    )
    for _ in range(2):
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            row = cursor.fetchone()
        if row is not None:
            return round_to_ledger(Decimal(str(row[0])))
        if Wallet.objects.filter(tenant_id=tenant_id).exists():
            return None  # the floor refused it
        wallet_ensure(tenant_id=tenant_id, currency=currency)
    return None
