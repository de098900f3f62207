"""Wallet and ledger write paths. The balance is the sum of the ledger, always.

Every movement is one LedgerEntry with a per-tenant idempotency key, and the cached
Wallet.balance is moved by the same amount in the same transaction.
"""

from decimal import Decimal

from django.db import IntegrityError, transaction
from django.db.models import F

from billing.models import LedgerEntry, Wallet
from billing.money import round_to_ledger


def wallet_ensure(*, tenant_id: int, currency: str) -> Wallet:
    wallet, _ = Wallet.objects.get_or_create(tenant_id=tenant_id, defaults={"currency": currency})
    return wallet


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
    with transaction.atomic():
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
    return entry, True
