"""Operator top-ups from the portal: one ledger credit, idempotent on the reference, audited."""

from decimal import Decimal

from django.contrib.auth.base_user import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import transaction

from billing.models import LedgerEntry
from billing.services.ledger import ledger_post
from portal.accounts.models import Tenant
from portal.accounts.services import audit_record

TOPUP_ACTION = "wallet.topup"


@transaction.atomic
def wallet_topup(
    *, tenant: Tenant, amount: Decimal, reference: str, actor: AbstractBaseUser
) -> tuple[LedgerEntry, bool]:
    """Credit the tenant's wallet. The reference is the idempotency key: a replay changes nothing."""
    reference = reference.strip()
    if amount <= 0:
        raise ValidationError("A top-up amount must be positive.")
    if not reference:
        raise ValidationError("A top-up needs a reference (the payment or transfer id).")
    entry, created = ledger_post(
        tenant_id=tenant.pk,
        currency=tenant.currency,
        kind=LedgerEntry.Kind.TOPUP,
        amount=amount,
        idempotency_key=f"topup:{reference}",
        reference=reference,
        actor_label=str(actor),
    )
    if created:
        audit_record(
            action=TOPUP_ACTION,
            target=entry,
            actor=actor,
            tenant=tenant,
            changes={"amount": str(entry.amount), "currency": tenant.currency, "reference": reference},
        )
    return entry, created
