"""Draft invoices: created and recomputed until they are finalized (late events fold in)."""

import dataclasses
import datetime as dt
from decimal import Decimal

from django.db import transaction
from django.utils import timezone

from accounts.models import Tenant
from billing.money import round_to_currency
from billing.periods import month_period
from invoicing import selectors
from invoicing.models import Invoice, InvoiceLine
from invoicing.services.errors import InvoiceError
from invoicing.services.lines import LINE_FIELDS, Computed, LineData, invoice_compute
from invoicing.services.periods import period_label


def currency_of(tenant: Tenant) -> str:
    return tenant.price_plan.currency if tenant.price_plan is not None else tenant.currency


def _credits(*, invoice: Invoice, subtotal: Decimal) -> Decimal:
    """Prepaid credits applied: the wallet's funds for the month, clamped to [0, subtotal]."""
    funds = selectors.ledger_funds_for_period(
        tenant_id=invoice.tenant_id, start=invoice.period_start, end=invoice.period_end
    )
    return min(subtotal, max(Decimal(0), round_to_currency(funds, invoice.currency)))


def write_lines(invoice: Invoice, computed: Computed, *, cutoff: dt.datetime) -> bool:
    """Replace a draft's lines and totals when they differ. Returns whether anything changed."""
    assert invoice.is_draft
    existing = [
        LineData(**{name: getattr(line, name) for name in LINE_FIELDS}).key()
        for line in invoice.lines.order_by("position")
    ]
    subtotal = computed.subtotal
    credits = _credits(invoice=invoice, subtotal=subtotal)
    unchanged = (
        existing == [line.key() for line in computed.lines]
        and invoice.subtotal == subtotal
        and invoice.credits_applied == credits
        and invoice.cost_basis == computed.cost_basis
    )
    if unchanged:
        return False
    InvoiceLine.objects.filter(invoice=invoice).delete()
    InvoiceLine.objects.bulk_create(
        InvoiceLine(invoice=invoice, position=position, **dataclasses.asdict(line))
        for position, line in enumerate(computed.lines, start=1)
    )
    invoice.unrounded_total = computed.unrounded_total
    invoice.subtotal = subtotal
    invoice.credits_applied = credits
    invoice.amount_due = subtotal - credits
    invoice.cost_basis = computed.cost_basis
    invoice.usage_cutoff = cutoff
    invoice.save()
    return True


def _draft_for_update(*, tenant: Tenant, year: int, month: int, now: dt.datetime) -> tuple[Invoice, bool]:
    period = month_period(year, month, tenant.timezone)
    invoice, created = Invoice.objects.select_for_update().get_or_create(
        tenant=tenant,
        period=period_label(year, month),
        defaults={
            "period_start": period.start,
            "period_end": period.end,
            "timezone": tenant.timezone,
            "currency": currency_of(tenant),
            "language": tenant.language,
            "tenant_name": tenant.name,
            "usage_cutoff": now,
        },
    )
    return invoice, created


def invoice_draft_refresh(
    *, tenant: Tenant, year: int, month: int, now: dt.datetime | None = None, skip_empty: bool = False
) -> tuple[Invoice | None, bool]:
    """Create or recompute the draft of one tenant-month. Returns (invoice, changed).

    An issued invoice is returned as it is. A draft for a month older than an issued invoice is
    refused: that usage is billed on the next open invoice as adjustment lines. With skip_empty,
    a month with no usage to bill gets no invoice (None), so idle tenants use up no numbers.
    """
    now = now or timezone.now()
    label = period_label(year, month)
    with transaction.atomic():
        later = selectors.invoice_latest_issued(tenant_id=tenant.pk)
        existing = Invoice.objects.filter(tenant=tenant, period=label).first()
        if existing is not None and not existing.is_draft:
            return existing, False
        if later is not None and later.period > label:
            raise InvoiceError(
                f"{tenant.slug}: invoice {later.number} for {later.period} is already issued; "
                f"usage of {label} is billed on the next open invoice as adjustment lines."
            )
        if existing is None and skip_empty and _nothing_to_bill(tenant=tenant, year=year, month=month, now=now):
            return None, False
        invoice, created = _draft_for_update(tenant=tenant, year=year, month=month, now=now)
        if not invoice.is_draft:  # finalized by someone else while we waited for the lock
            return invoice, False
        changed = write_lines(invoice, invoice_compute(tenant=tenant, invoice=invoice, cutoff=now), cutoff=now)
    return invoice, created or changed


def _nothing_to_bill(*, tenant: Tenant, year: int, month: int, now: dt.datetime) -> bool:
    period = month_period(year, month, tenant.timezone)
    probe = Invoice(
        tenant=tenant,
        period=period_label(year, month),
        period_start=period.start,
        period_end=period.end,
        timezone=tenant.timezone,
        currency=currency_of(tenant),
    )
    computed = invoice_compute(tenant=tenant, invoice=probe, cutoff=now)
    return not computed.lines and not computed.unpriced_requests
