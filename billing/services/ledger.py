"""Wallet and ledger write paths. The balance is the sum of the ledger, always.

Every movement is one LedgerEntry with a per-tenant idempotency key, and the cached
Wallet.balance is moved by the same amount in the same transaction. The balance backend
(billing/services/balances) mirrors each movement into its hot counters inside that
transaction, under the tenant's balance lock, so the cache moves exactly when the ledger does.
"""

from dataclasses import dataclass
from decimal import Decimal

from django.db import IntegrityError, transaction
from django.db.models import F

from billing.models import LedgerEntry, Wallet
from billing.money import round_to_ledger, to_micros
from billing.services.balances import MirrorDelta, balance_backend
from billing.services.wallets import wallet_ensure, wallet_move

__all__ = ["LedgerLine", "ledger_append", "ledger_post", "wallet_ensure", "wallet_move"]


def ledger_post(
    *,
    tenant_id: int,
    currency: str,
    kind: str,
    amount: Decimal,
    idempotency_key: str,
    reference: str = "",
    actor_label: str = "",
    metadata: dict | None = None,
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
    metadata: dict | None = None


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
