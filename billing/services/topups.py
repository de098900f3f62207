"""Top-ups: credit a tenant's prepaid wallet, once per reference, audited."""

import uuid
from decimal import Decimal, InvalidOperation

from django.contrib.auth.base_user import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import transaction

from accounts.models import Tenant
from accounts.services import audit_record
from billing.models import LedgerEntry
from billing.money import LEDGER_PLACES
from billing.services.ledger import ledger_post

MAX_TOPUP = Decimal("1000000000")  # one top-up above this is a typo, not a payment


def topup_amount(value: str | Decimal) -> Decimal:
    """Parse and check a top-up amount: positive, at most 6 decimal places, not absurd."""
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation:
        raise ValidationError(f"{value!r} is not an amount (e.g. 10.00).") from None
    if not amount.is_finite() or amount <= 0:
        raise ValidationError("A top-up amount must be a positive number.")
    exponent = amount.as_tuple().exponent
    if isinstance(exponent, int) and -exponent > LEDGER_PLACES:
        raise ValidationError(f"A top-up has at most {LEDGER_PLACES} decimal places; got {value}.")
    if amount > MAX_TOPUP:
        raise ValidationError(f"A single top-up is at most {MAX_TOPUP}; got {value}.")
    return amount


def wallet_topup(
    *,
    tenant: Tenant,
    amount: Decimal,
    reference: str = "",
    actor: AbstractBaseUser | None = None,
    actor_label: str = "",
) -> tuple[LedgerEntry, bool]:
    """Credit the wallet in the currency it is billed in. Returns (entry, created).

    With a reference (a payment or transfer id) a replay changes nothing and returns the
    first entry; the same reference with another amount is refused. Audited when it credits.
    """
    amount = topup_amount(amount)
    reference = reference.strip()
    if len(reference) > 150:
        raise ValidationError("A reference is at most 150 characters.")
    currency = tenant.price_plan.currency if tenant.price_plan is not None else tenant.currency
    key = f"topup:{reference}" if reference else f"topup:{uuid.uuid4()}"
    label = actor_label or (str(actor) if actor is not None else "system")
    with transaction.atomic():
        entry, created = ledger_post(
            tenant_id=tenant.pk,
            currency=currency,
            kind=LedgerEntry.Kind.TOPUP,
            amount=amount,
            idempotency_key=key,
            reference=reference,
            actor_label=label,
        )
        if not created and entry.amount != amount:
            raise ValidationError(
                f"Reference {reference!r} already credited {entry.amount}, not {amount}; use a new reference."
            )
        if created:
            audit_record(
                action="wallet.topup",
                target=entry,
                actor=actor,
                actor_label=label,
                tenant=tenant,
                changes={"amount": str(entry.amount), "currency": currency, "reference": reference},
            )
    return entry, created
