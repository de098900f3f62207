"""Credit notes against issued invoices: numbered, audited, credited to the wallet."""

import datetime as dt
import decimal
from decimal import Decimal

from django.contrib.auth.models import User
from django.db import transaction
from django.utils import timezone

from accounts.services import audit_record
from billing.money import currency_exponent, round_to_currency
from billing.services.ledger import ledger_post
from invoicing import selectors
from invoicing.models import CreditNote, Invoice, NumberSequence
from invoicing.services.errors import InvoiceError
from invoicing.services.numbering import allocate_number


def credit_note_amount(value: str, currency: str) -> Decimal:
    """An amount typed by finance: positive, in the currency's minor units (12.345 USD is
    refused, not rounded: a person meant something else)."""
    try:
        amount = Decimal(value.strip())
    except decimal.InvalidOperation:
        raise InvoiceError(f"{value!r} is not an amount (e.g. 12.50).") from None
    if not amount.is_finite() or amount <= 0:
        raise InvoiceError(f"The amount must be a positive number; got {value}.")
    places = currency_exponent(currency)
    exponent = amount.as_tuple().exponent
    if isinstance(exponent, int) and -exponent > places:
        raise InvoiceError(f"{value}: {currency} has {places} decimal places.")
    return amount


def credit_note_issue(
    *,
    invoice: Invoice,
    reason: str,
    amount: Decimal | None = None,
    actor: User | None = None,
    actor_label: str = "",
    now: dt.datetime | None = None,
) -> CreditNote:
    """A full (amount None: what is left to credit) or partial credit against an issued invoice.

    Numbered CN-YYYY-NNNNNN (gapless per issuing year), audited, and credited to the tenant's
    wallet as an adjustment. The credited total never exceeds the invoice's subtotal.
    """
    if not reason.strip():
        raise InvoiceError("Give a reason for the credit note.")
    now = now or timezone.now()
    with transaction.atomic():
        locked = Invoice.objects.select_for_update().select_related("tenant").get(pk=invoice.pk)
        if locked.status not in (Invoice.Status.FINALIZED, Invoice.Status.PAID):
            raise InvoiceError(
                f"Credit notes are issued against finalized or paid invoices; this one is {locked.status}."
            )
        remaining = locked.subtotal - selectors.credited_total(invoice_id=locked.pk)
        value = remaining if amount is None else round_to_currency(Decimal(amount), locked.currency)
        if value <= 0:
            raise InvoiceError(
                f"Nothing left to credit on {locked.number}." if amount is None else "Amount must be > 0."
            )
        if value > remaining:
            raise InvoiceError(
                f"{locked.number}: at most {remaining} {locked.currency} can still be credited; asked {value}."
            )
        number = allocate_number(NumberSequence.Kind.CREDIT_NOTE, now.year)
        note = CreditNote.objects.create(
            number=number,
            invoice=locked,
            tenant=locked.tenant,
            currency=locked.currency,
            amount=value,
            reason=reason.strip(),
            issued_at=now,
            actor=actor if actor is not None and actor.pk else None,
            actor_label=actor_label or (str(actor) if actor is not None else "system"),
        )
        ledger_post(
            tenant_id=locked.tenant_id,
            currency=locked.currency,
            kind="adjustment",
            amount=value,
            idempotency_key=f"credit_note:{number}",
            reference=number,
            actor_label=note.actor_label,
            metadata={"invoice": locked.number, "reason": note.reason[:200]},
        )
        audit_record(
            action="credit_note.issue",
            target=note,
            actor=actor,
            actor_label=actor_label,
            tenant=locked.tenant,
            changes={"number": number, "invoice": locked.number, "amount": str(value), "reason": note.reason},
        )
    return note
