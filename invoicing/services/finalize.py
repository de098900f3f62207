"""Finalizing a draft: final lines, credits, the issuer, and the next gapless number."""

import datetime as dt
from typing import Any

from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from accounts.services import audit_record
from invoicing import selectors
from invoicing.models import Invoice, NumberSequence
from invoicing.services.drafts import write_lines
from invoicing.services.errors import InvoiceError
from invoicing.services.lines import invoice_compute
from invoicing.services.numbering import allocate_number


def _issuer() -> dict[str, Any]:
    return {
        "name": settings.INVOICE_ISSUER_NAME,
        "address": settings.INVOICE_ISSUER_ADDRESS,
        "tax_id": settings.INVOICE_ISSUER_TAX_ID,
        "email": settings.INVOICE_ISSUER_EMAIL,
    }


def invoice_finalize(
    *,
    invoice: Invoice,
    actor: AbstractBaseUser | None = None,
    actor_label: str = "",
    now: dt.datetime | None = None,
) -> tuple[Invoice, bool]:
    """Issue a draft: final lines, credits, the next gapless number. Returns (invoice, finalized now).

    Claim-then-act: the draft row is locked first; whoever finds it already issued does nothing.
    """
    now = now or timezone.now()
    settle = dt.timedelta(seconds=settings.INVOICE_SETTLE_SECONDS)
    with transaction.atomic():
        locked = Invoice.objects.select_for_update().select_related("tenant").get(pk=invoice.pk)
        if not locked.is_draft:
            return locked, False
        if now < locked.period_end + settle:
            raise InvoiceError(
                f"{locked.tenant.slug} {locked.period}: the month is not over yet "
                f"(ends {locked.period_end:%Y-%m-%d %H:%M} UTC, plus {settle.seconds} s to settle)."
            )
        earlier = selectors.invoice_drafts_between(tenant_id=locked.tenant_id, after=None, before=locked.period_start)
        if earlier:
            raise InvoiceError(
                f"{locked.tenant.slug}: finalize the earlier draft(s) first: {', '.join(d.period for d in earlier)}."
            )
        previous = selectors.invoice_previous_issued(tenant_id=locked.tenant_id, before_period=locked.period)
        cutoff = now - settle
        if previous is not None and previous.usage_cutoff > cutoff:
            cutoff = previous.usage_cutoff
        computed = invoice_compute(tenant=locked.tenant, invoice=locked, cutoff=cutoff)
        write_lines(locked, computed, cutoff=cutoff)
        if locked.usage_cutoff != cutoff:
            Invoice.objects.filter(pk=locked.pk, status=Invoice.Status.DRAFT).update(usage_cutoff=cutoff)
        number = allocate_number(NumberSequence.Kind.INVOICE, now.year)
        claimed = Invoice.objects.filter(pk=locked.pk, status=Invoice.Status.DRAFT).update(
            status=Invoice.Status.FINALIZED,
            number=number,
            finalized_at=now,
            issuer=_issuer(),
            tenant_name=locked.tenant.name,
            language=locked.tenant.language,
            updated_at=now,
        )
        assert claimed == 1
        locked.refresh_from_db()
        audit_record(
            action="invoice.finalize",
            target=locked,
            actor=actor,
            actor_label=actor_label,
            tenant=locked.tenant,
            changes={
                "number": number,
                "period": locked.period,
                "subtotal": str(locked.subtotal),
                "credits_applied": str(locked.credits_applied),
                "amount_due": str(locked.amount_due),
                "currency": locked.currency,
                "lines": len(computed.lines),
                "unpriced_requests": computed.unpriced_requests,
            },
        )
    return locked, True
