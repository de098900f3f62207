"""The wallet and its ledger: the balance, ledger pages and sums, top-ups."""

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal

from django.db.models import Sum

from billing.models import LedgerEntry, Wallet
from billing.money import to_micros
from infra.paging import keyset_page


def wallet_balance(*, tenant_id: int) -> Decimal:
    """The prepaid balance: the cached wallet figure (reconciled against the ledger's sum)."""
    balance = Wallet.objects.filter(tenant_id=tenant_id).values_list("balance", flat=True).first()
    return balance if balance is not None else Decimal(0)


def ledger_sum(*, tenant_id: int) -> Decimal:
    total = LedgerEntry.objects.filter(tenant_id=tenant_id).aggregate(total=Sum("amount"))["total"]
    return total if total is not None else Decimal(0)


def wallet_balances(*, tenant_ids: list[int]) -> dict[int, Decimal]:
    return dict(Wallet.objects.filter(tenant_id__in=tenant_ids).values_list("tenant_id", "balance"))


def ledger_entries_page(
    *, tenant_id: int, kinds: list[str] | None = None, before_id: int | None = None, limit: int = 50
) -> tuple[list[LedgerEntry], int | None]:
    """Newest first, keyset-paginated on id. Returns the rows and the id to continue before."""
    entries = LedgerEntry.objects.filter(tenant_id=tenant_id)
    if kinds:
        entries = entries.filter(kind__in=kinds)
    after = (before_id,) if before_id is not None else None
    rows, cursor = keyset_page(entries, key=("id",), after=after, limit=limit)
    return rows, cursor[0] if cursor else None


def wallet_balance_micros(*, tenant_id: int) -> int:
    return to_micros(wallet_balance(tenant_id=tenant_id))


@dataclass(frozen=True)
class TopUp:
    entry_id: int
    created_at: dt.datetime
    amount: Decimal  # currency units
    balance_after: Decimal  # the balance right after this top-up (currency units)


def topups_since(*, tenant_id: int, since: dt.datetime) -> list[TopUp]:
    """Top-ups posted after `since`, oldest first, with the balance each one left (low-balance
    alerts re-arm when a top-up lifts the balance back above their level)."""
    rows = list(
        LedgerEntry.objects.filter(tenant_id=tenant_id, kind=LedgerEntry.Kind.TOPUP, created_at__gt=since)
        .order_by("id")
        .values_list("id", "created_at", "amount")
    )
    if not rows:
        return []
    balance = wallet_balance(tenant_id=tenant_id)
    result = []
    for entry_id, created_at, amount in rows:
        later = LedgerEntry.objects.filter(tenant_id=tenant_id, pk__gt=entry_id).aggregate(total=Sum("amount"))
        result.append(TopUp(entry_id, created_at, amount, balance - (later["total"] or Decimal(0))))
    return result
