"""Read paths for invoices: API, exports, the close itself, and the reconciliation report."""

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal

from django.db.models import QuerySet, Sum

from accounts.models import Tenant
from billing.models import LedgerEntry
from billing.periods import month_period
from invoicing.models import CreditNote, Invoice, InvoiceLine
from metering.selectors import archived_usage, rated_usage_by_price


def tenants_to_bill() -> list[Tenant]:
    """Every tenant, suspended ones too (they still owe their usage), in a stable order."""
    return list(Tenant.objects.select_related("price_plan").order_by("slug"))


def invoice_previous_issued(*, tenant_id: int, before_period: str) -> Invoice | None:
    return (
        Invoice.objects.filter(tenant_id=tenant_id, period__lt=before_period)
        .exclude(status=Invoice.Status.DRAFT)
        .order_by("-period")
        .first()
    )


def invoice_latest_issued(*, tenant_id: int) -> Invoice | None:
    return Invoice.objects.filter(tenant_id=tenant_id).exclude(status=Invoice.Status.DRAFT).order_by("-period").first()


def invoice_drafts_between(*, tenant_id: int, after: dt.datetime | None, before: dt.datetime) -> list[Invoice]:
    """Drafts of the tenant whose month lies in [after, before), oldest first."""
    drafts = Invoice.objects.filter(tenant_id=tenant_id, status=Invoice.Status.DRAFT, period_end__lte=before)
    if after is not None:
        drafts = drafts.filter(period_start__gte=after)
    return list(drafts.order_by("period"))


def credited_total(*, invoice_id: int) -> Decimal:
    total = CreditNote.objects.filter(invoice_id=invoice_id).aggregate(total=Sum("amount"))["total"]
    return total if total is not None else Decimal(0)


_TEMPORARY = (LedgerEntry.Kind.HOLD, LedgerEntry.Kind.RELEASE)
_FUNDING = (LedgerEntry.Kind.TOPUP, LedgerEntry.Kind.ADJUSTMENT, LedgerEntry.Kind.INVOICE_PAYMENT)


def ledger_funds_for_period(*, tenant_id: int, start: dt.datetime, end: dt.datetime) -> Decimal:
    """What the wallet had for a month's usage: its balance when the month began (holds and
    releases aside) plus the money that came in during the month (top-ups, adjustments, payments).
    Entries are dated by when they were written, so the figure never changes once the month is over."""
    entries = LedgerEntry.objects.filter(tenant_id=tenant_id)
    before = entries.filter(created_at__lt=start).exclude(kind__in=_TEMPORARY).aggregate(total=Sum("amount"))
    during = entries.filter(created_at__gte=start, created_at__lt=end, kind__in=_FUNDING).aggregate(total=Sum("amount"))
    return (before["total"] or Decimal(0)) + (during["total"] or Decimal(0))


def ledger_usage_charged(*, tenant_id: int, start: dt.datetime, end: dt.datetime) -> Decimal:
    """Usage charged to the wallet in [start, end), as a positive amount."""
    total = LedgerEntry.objects.filter(
        tenant_id=tenant_id, kind=LedgerEntry.Kind.USAGE, created_at__gte=start, created_at__lt=end
    ).aggregate(total=Sum("amount"))["total"]
    return -total if total is not None else Decimal(0)


# --- Tenant-scoped reads (API) -------------------------------------------------------------


def invoices_for_tenant(*, tenant_id: int) -> QuerySet[Invoice]:
    return Invoice.objects.filter(tenant_id=tenant_id).order_by("-period")


def invoice_for_tenant(*, tenant_id: int, invoice_id: int) -> Invoice | None:
    """The invoice when it belongs to the tenant; None otherwise (callers answer 404)."""
    return (
        Invoice.objects.filter(tenant_id=tenant_id, pk=invoice_id)
        .select_related("tenant")
        .prefetch_related("lines", "credit_notes")
        .first()
    )


def invoice_by_number(number: str) -> Invoice | None:
    """An issued invoice by its number (drafts have none, so they are never found)."""
    number = number.strip()
    return Invoice.objects.filter(number=number).select_related("tenant").first() if number else None


def credit_notes_recent(*, limit: int = 20) -> list[CreditNote]:
    return list(CreditNote.objects.select_related("invoice", "tenant").order_by("-issued_at", "-pk")[:limit])


def invoice_with_lines(*, invoice_id: int) -> Invoice | None:
    return (
        Invoice.objects.filter(pk=invoice_id).select_related("tenant").prefetch_related("lines", "credit_notes").first()
    )


def invoices_for_period(*, period: str) -> list[Invoice]:
    """All tenants' invoices of a period, in a stable order (tenant slug), lines prefetched."""
    return list(
        Invoice.objects.filter(period=period)
        .select_related("tenant")
        .prefetch_related("lines", "credit_notes")
        .order_by("tenant__slug", "id")
    )


def lines_of(invoice: Invoice) -> list[InvoiceLine]:
    return sorted(invoice.lines.all(), key=lambda line: line.position)


# --- Reconciliation ------------------------------------------------------------------------


@dataclass(frozen=True)
class ReconciliationRow:
    tenant: str
    period: str
    currency: str
    invoice_number: str
    invoice_status: str
    requests: int
    unpriced_requests: int
    rated_usage: Decimal  # sum of event costs that occurred in the month (unrounded)
    invoice_usage_unrounded: Decimal  # the invoice's usage lines (this month's usage), unrounded
    rated_minus_invoiced: Decimal  # usage of the month not on its invoice (late, or no invoice)
    invoice_adjustments_unrounded: Decimal  # earlier months' usage billed on this invoice
    invoice_lines_unrounded: Decimal  # all lines, unrounded
    invoice_lines_rounded: Decimal  # all lines, rounded once each (== subtotal)
    rounding_difference: Decimal  # rounded - unrounded
    invoice_subtotal: Decimal
    rated_usage_received: Decimal  # sum of event costs received (charged) in the month
    ledger_usage_charged: Decimal  # usage debits in the ledger in the month
    ledger_minus_received: Decimal  # ledger micro-unit rounding per charge; anything else is drift


def reconciliation(*, year: int, month: int, tenant: Tenant | None = None) -> list[ReconciliationRow]:
    """Per tenant: rated usage vs invoice lines (unrounded, rounded) vs ledger usage charges.

    Every difference is a column of its own; nothing is netted away.
    """
    label = f"{year:04d}-{month:02d}"
    tenants = [tenant] if tenant is not None else tenants_to_bill()
    invoices = {inv.tenant_id: inv for inv in Invoice.objects.filter(period=label).prefetch_related("lines")}
    rows = []
    for one in tenants:
        period = month_period(year, month, one.timezone)
        occurred = rated_usage_by_price(
            tenant_id=one.pk, tz_name=one.timezone, occurred_from=period.start, occurred_before=period.end
        )
        received = rated_usage_by_price(
            tenant_id=one.pk,
            tz_name=one.timezone,
            occurred_before=dt.datetime.max.replace(tzinfo=dt.UTC),
            received_from=period.start,
            received_before=period.end,
        )
        invoice = invoices.get(one.pk)
        lines = list(invoice.lines.all()) if invoice is not None else []
        usage_lines = sum((line.amount_unrounded for line in lines if line.kind == "usage"), Decimal(0))
        adjustments = sum((line.amount_unrounded for line in lines if line.kind != "usage"), Decimal(0))
        unrounded = usage_lines + adjustments
        rounded = sum((line.amount for line in lines), Decimal(0))
        # Months whose events were archived count through their archive's totals.
        first_day = dt.date(year, month, 1)
        gone = archived_usage(tenant_id=one.pk, month=first_day, basis="occurred")
        gone_received = archived_usage(tenant_id=one.pk, month=first_day, basis="received")
        rated = sum((row.cost for row in occurred if row.cost is not None), gone.cost)
        rated_received = sum((row.cost for row in received if row.cost is not None), gone_received.cost)
        ledger = ledger_usage_charged(tenant_id=one.pk, start=period.start, end=period.end)
        currency = invoice.currency if invoice is not None else one.currency
        if invoice is None and one.price_plan is not None:
            currency = one.price_plan.currency
        if not occurred and invoice is None and not ledger and not received and not gone.requests:
            continue
        rows.append(
            ReconciliationRow(
                tenant=one.slug,
                period=label,
                currency=currency,
                invoice_number=(invoice.number or "") if invoice is not None else "",
                invoice_status=invoice.status if invoice is not None else "none",
                requests=sum((row.requests for row in occurred), gone.requests),
                unpriced_requests=sum((row.requests for row in occurred if row.cost is None), gone.unpriced_requests),
                rated_usage=rated,
                invoice_usage_unrounded=usage_lines,
                rated_minus_invoiced=rated - usage_lines,
                invoice_adjustments_unrounded=adjustments,
                invoice_lines_unrounded=unrounded,
                invoice_lines_rounded=rounded,
                rounding_difference=rounded - unrounded,
                invoice_subtotal=invoice.subtotal if invoice is not None else Decimal(0),
                rated_usage_received=rated_received,
                ledger_usage_charged=ledger,
                ledger_minus_received=ledger - rated_received,
            )
        )
    return rows
