"""An issued invoice's end states: paid (credited to the wallet) or void (issued in error)."""

import datetime as dt

from django.contrib.auth.base_user import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from accounts.services import audit_record
from billing.services.ledger import ledger_post
from invoicing.models import Invoice
from invoicing.services.errors import InvoiceError


def invoice_mark_paid(
    *,
    invoice: Invoice,
    actor: AbstractBaseUser | None = None,
    actor_label: str = "",
    reference: str = "",
    now: dt.datetime | None = None,
) -> bool:
    """finalized -> paid. The amount due is credited to the wallet as an invoice payment."""
    now = now or timezone.now()
    with transaction.atomic():
        changed = Invoice.objects.filter(pk=invoice.pk, status=Invoice.Status.FINALIZED).update(
            status=Invoice.Status.PAID, paid_at=now, updated_at=now
        )
        if not changed:
            current = Invoice.objects.filter(pk=invoice.pk).values_list("status", flat=True).first()
            if current == Invoice.Status.PAID:
                return False
            raise InvoiceError(f"Only a finalized invoice can be paid; this one is {current}.")
        invoice.refresh_from_db()
        if invoice.amount_due > 0:
            ledger_post(
                tenant_id=invoice.tenant_id,
                currency=invoice.currency,
                kind="invoice_payment",
                amount=invoice.amount_due,
                idempotency_key=f"invoice:{invoice.number}:payment",
                reference=reference or str(invoice.number),
                actor_label=actor_label or (str(actor) if actor else "system"),
            )
        audit_record(
            action="invoice.paid",
            target=invoice,
            actor=actor,
            actor_label=actor_label,
            tenant=invoice.tenant,
            changes={"number": invoice.number, "amount_due": str(invoice.amount_due), "reference": reference},
        )
    return True


def invoice_void(
    *,
    invoice: Invoice,
    reason: str,
    actor: AbstractBaseUser | None = None,
    actor_label: str = "",
    now: dt.datetime | None = None,
) -> bool:
    """finalized -> void (an invoice issued in error). The number stays used; nothing is re-billed."""
    if not reason.strip():
        raise InvoiceError("Give a reason for voiding the invoice.")
    now = now or timezone.now()
    with transaction.atomic():
        changed = Invoice.objects.filter(pk=invoice.pk, status=Invoice.Status.FINALIZED).update(
            status=Invoice.Status.VOID, voided_at=now, void_reason=reason.strip(), updated_at=now
        )
        if not changed:
            current = Invoice.objects.filter(pk=invoice.pk).values_list("status", flat=True).first()
            if current == Invoice.Status.VOID:
                return False
            raise InvoiceError(f"Only a finalized invoice can be voided; this one is {current}.")
        invoice.refresh_from_db()
        audit_record(
            action="invoice.void",
            target=invoice,
            actor=actor,
            actor_label=actor_label,
            tenant=invoice.tenant,
            changes={"number": invoice.number, "reason": invoice.void_reason},
        )
    return True
