"""Monthly close: draft invoices, finalization with gapless numbers, payments, voids, credit notes.

The rules (docs/billing-rules.md, "Invoices and monthly close"):
- An invoice covers one tenant-local month. Its usage lines are the rated usage of events that
  occurred in the month and were received before the invoice's `usage_cutoff`, per model,
  price version, context tier and token kind. Each line is rounded once to the currency's minor
  unit (ROUND_HALF_EVEN); the subtotal is the sum of the rounded lines, exactly.
- Until it is finalized the invoice is a draft, recomputed on every refresh (late events fold
  in during the grace period). Finalizing takes the next number of the issuing year from a
  counter row locked with SELECT ... FOR UPDATE in the same transaction, so numbers are gapless.
- Usage received after a month's invoice was finalized is stored like any other and billed on
  the tenant's next open invoice as adjustment lines ("usage for 2026-10 received after close").
- Prepaid credits applied: the wallet pays usage as it happens; what it had for the month (its
  balance when the month began plus the money paid in during it) is applied up to the subtotal,
  and the rest is due.
"""

import dataclasses
import datetime as dt
import decimal
import functools
import zoneinfo
from dataclasses import dataclass, field
from decimal import Decimal

from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from billing import rating
from billing.invoicing import selectors
from billing.invoicing.models import CreditNote, Invoice, InvoiceImmutable, InvoiceLine, NumberSequence
from billing.models import Price
from billing.money import currency_exponent, round_to_currency
from billing.periods import month_period, typed_bounds, user_time
from billing.services import tenant_jobs
from billing.services.ledger import ledger_post
from billing.services.tenant_jobs import TenantJob
from metering.selectors import RatedUsage, rated_usage_by_price
from portal.accounts.models import Tenant
from portal.accounts.services import audit_record

__all__ = [
    "InvoiceError",
    "InvoiceImmutable",
    "credit_note_issue",
    "invoice_draft_refresh",
    "invoice_finalize",
    "invoice_mark_paid",
    "invoice_void",
    "invoices_close_due",
    "invoices_close_month",
    "parse_period",
]

_KIND_LABELS = {
    InvoiceLine.TokenKind.INPUT: "input tokens",
    InvoiceLine.TokenKind.CACHED_INPUT: "cached input tokens",
    InvoiceLine.TokenKind.CACHE_WRITE: "cache write tokens",
    InvoiceLine.TokenKind.OUTPUT: "output tokens",
}


class InvoiceError(Exception):
    """A close or correction that cannot be done as asked (the message says why)."""


def parse_period(value: str, *, now: dt.datetime | None = None) -> tuple[int, int]:
    """'2026-10' -> (2026, 10); a ValueError with a clear message otherwise (TimeOutOfRange for a
    month before 2000 or more than a year ahead: billing/periods.py, user_time)."""
    first = user_time(value, field="period", bounds=typed_bounds(now=now or timezone.now()), shape="month")
    return first.year, first.month


def period_label(year: int, month: int) -> str:
    return f"{year:04d}-{month:02d}"


def _label_of(day: dt.date) -> str:
    return period_label(day.year, day.month)


def _previous_month(year: int, month: int) -> tuple[int, int]:
    return (year - 1, 12) if month == 1 else (year, month - 1)


def _issuer() -> dict:
    return {
        "name": settings.INVOICE_ISSUER_NAME,
        "address": settings.INVOICE_ISSUER_ADDRESS,
        "tax_id": settings.INVOICE_ISSUER_TAX_ID,
        "email": settings.INVOICE_ISSUER_EMAIL,
    }


def _currency_of(tenant: Tenant) -> str:
    return tenant.price_plan.currency if tenant.price_plan_id else tenant.currency


# --- Lines ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class LineData:
    kind: str
    usage_period: str
    model: str
    token_kind: str
    price_id: int | None
    price_effective_from: dt.datetime | None
    long_context: bool
    description: str
    requests: int
    quantity: int
    unit_price_per_mtok: Decimal
    amount_unrounded: Decimal
    amount: Decimal

    def key(self) -> tuple:
        return (
            self.kind, self.usage_period, self.model, self.token_kind, self.price_id, self.long_context,
            self.description, self.requests, self.quantity, self.unit_price_per_mtok.normalize(),
            self.amount_unrounded.normalize(), self.amount.normalize(),
        )  # fmt: skip


_LINE_FIELDS = tuple(f.name for f in dataclasses.fields(LineData))


@dataclass
class Computed:
    lines: list[LineData] = field(default_factory=list)
    unpriced_requests: int = 0

    @property
    def unrounded_total(self) -> Decimal:
        return sum((line.amount_unrounded for line in self.lines), Decimal(0))

    @property
    def subtotal(self) -> Decimal:
        return sum((line.amount for line in self.lines), Decimal(0))


def _lines_for(
    rows: list[RatedUsage], *, kind: str, currency: str, prices: dict[int, Price], label: str, computed: Computed
) -> None:
    versions_per_model: dict[str, set[int]] = {}
    for row in rows:
        if row.price_id is not None:
            versions_per_model.setdefault(row.model, set()).add(row.price_id)
    ordered = sorted(
        (row for row in rows if row.price_id is not None),
        key=lambda r: (r.month, r.model, prices[r.price_id].effective_from, r.price_id, r.long_context),
    )
    for row in rows:
        if row.price_id is None:
            computed.unpriced_requests += row.requests
    for row in ordered:
        price = prices[row.price_id]
        rates = rating.tier_rates(rating.terms_from_price(price), long_context=row.long_context)
        usage_period = _label_of(row.month)
        quantities = rating.quantities(
            input_tokens=row.input_tokens,
            output_tokens=row.output_tokens,
            cached_input_tokens=row.cached_input_tokens,
            cache_write_tokens=row.cache_write_tokens,
        )
        for token_kind, quantity in quantities.items():
            if quantity == 0:
                continue
            per_mtok = rating.kind_rate(rates, token_kind)
            exact = rating.line_amount(quantity, per_mtok)
            text = f"{row.model}: {_KIND_LABELS[token_kind]}"
            if row.long_context:
                text += " (long context)"
            if len(versions_per_model[row.model]) > 1:
                text += f", price from {price.effective_from:%Y-%m-%d}"
            if kind == InvoiceLine.Kind.ADJUSTMENT:
                text = f"{label.format(period=usage_period)}: {text}"
            computed.lines.append(
                LineData(
                    kind=kind,
                    usage_period=usage_period,
                    model=row.model,
                    token_kind=token_kind,
                    price_id=row.price_id,
                    price_effective_from=price.effective_from,
                    long_context=row.long_context,
                    description=text[:300],
                    requests=row.requests,
                    quantity=quantity,
                    unit_price_per_mtok=per_mtok,
                    amount_unrounded=exact,
                    amount=round_to_currency(exact, currency),
                )
            )


LATE_LABEL = "usage for {period} received after close"
UNBILLED_LABEL = "usage for {period} not billed before"


def invoice_compute(*, tenant: Tenant, invoice: Invoice, cutoff: dt.datetime) -> Computed:
    """The lines `invoice` has when built with usage received before `cutoff`. Reads only."""
    currency = invoice.currency
    tz_name = invoice.timezone
    usage = rated_usage_by_price(
        tenant_id=tenant.pk,
        tz_name=tz_name,
        occurred_from=invoice.period_start,
        occurred_before=invoice.period_end,
        received_before=cutoff,
    )
    previous = selectors.invoice_previous_issued(tenant_id=tenant.pk, before_period=invoice.period)
    late: list[RatedUsage] = []
    unbilled_from = None
    if previous is not None:
        # Months up to the previous issued invoice: what arrived after its cutoff.
        late = rated_usage_by_price(
            tenant_id=tenant.pk,
            tz_name=tz_name,
            occurred_before=previous.period_end,
            received_from=previous.usage_cutoff,
            received_before=cutoff,
        )
        unbilled_from = previous.period_end
    # Months between that invoice and this one with no invoice of their own (drafts keep theirs).
    drafts = tuple(
        (draft.period_start, draft.period_end)
        for draft in selectors.invoice_drafts_between(
            tenant_id=tenant.pk, after=unbilled_from, before=invoice.period_start
        )
    )
    unbilled = rated_usage_by_price(
        tenant_id=tenant.pk,
        tz_name=tz_name,
        occurred_from=unbilled_from,
        occurred_before=invoice.period_start,
        received_before=cutoff,
        exclude_occurred=drafts,
    )
    price_ids = {row.price_id for row in (*usage, *late, *unbilled) if row.price_id is not None}
    prices = Price.objects.in_bulk(price_ids)
    computed = Computed()
    _lines_for(usage, kind=InvoiceLine.Kind.USAGE, currency=currency, prices=prices, label="", computed=computed)
    _lines_for(
        late, kind=InvoiceLine.Kind.ADJUSTMENT, currency=currency, prices=prices, label=LATE_LABEL, computed=computed
    )
    _lines_for(
        unbilled,
        kind=InvoiceLine.Kind.ADJUSTMENT,
        currency=currency,
        prices=prices,
        label=UNBILLED_LABEL,
        computed=computed,
    )
    return computed


def _credits(*, invoice: Invoice, subtotal: Decimal) -> Decimal:
    """Prepaid credits applied: the wallet's funds for the month, clamped to [0, subtotal]."""
    funds = selectors.ledger_funds_for_period(
        tenant_id=invoice.tenant_id, start=invoice.period_start, end=invoice.period_end
    )
    return min(subtotal, max(Decimal(0), round_to_currency(funds, invoice.currency)))


def _write_lines(invoice: Invoice, computed: Computed, *, cutoff: dt.datetime) -> bool:
    """Replace a draft's lines and totals when they differ. Returns whether anything changed."""
    assert invoice.is_draft
    existing = [
        LineData(**{name: getattr(line, name) for name in _LINE_FIELDS}).key()
        for line in invoice.lines.order_by("position")
    ]
    subtotal = computed.subtotal
    credits = _credits(invoice=invoice, subtotal=subtotal)
    unchanged = (
        existing == [line.key() for line in computed.lines]
        and invoice.subtotal == subtotal
        and invoice.credits_applied == credits
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
    invoice.usage_cutoff = cutoff
    invoice.save()
    return True


# --- Draft and finalize --------------------------------------------------------------------


def _draft_for_update(*, tenant: Tenant, year: int, month: int, now: dt.datetime) -> tuple[Invoice, bool]:
    period = month_period(year, month, tenant.timezone)
    invoice, created = Invoice.objects.select_for_update().get_or_create(
        tenant=tenant,
        period=period_label(year, month),
        defaults={
            "period_start": period.start,
            "period_end": period.end,
            "timezone": tenant.timezone,
            "currency": _currency_of(tenant),
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
        changed = _write_lines(invoice, invoice_compute(tenant=tenant, invoice=invoice, cutoff=now), cutoff=now)
    return invoice, created or changed


def _nothing_to_bill(*, tenant: Tenant, year: int, month: int, now: dt.datetime) -> bool:
    period = month_period(year, month, tenant.timezone)
    probe = Invoice(
        tenant=tenant,
        period=period_label(year, month),
        period_start=period.start,
        period_end=period.end,
        timezone=tenant.timezone,
        currency=_currency_of(tenant),
    )
    computed = invoice_compute(tenant=tenant, invoice=probe, cutoff=now)
    return not computed.lines and not computed.unpriced_requests


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
        _write_lines(locked, computed, cutoff=cutoff)
        if locked.usage_cutoff != cutoff:
            Invoice.objects.filter(pk=locked.pk, status=Invoice.Status.DRAFT).update(usage_cutoff=cutoff)
        number = _allocate_number(NumberSequence.Kind.INVOICE, now.year)
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


def _allocate_number(kind: str, year: int) -> str:
    """The next number of the year, gapless: the counter row is locked until our commit, and a
    rollback returns the number with it. Must run inside the issuing transaction."""
    assert transaction.get_connection().in_atomic_block
    NumberSequence.objects.bulk_create([NumberSequence(kind=kind, year=year)], ignore_conflicts=True)
    sequence = NumberSequence.objects.select_for_update().get(kind=kind, year=year)
    value = sequence.last_value + 1
    NumberSequence.objects.filter(pk=sequence.pk).update(last_value=value)
    return f"{kind}-{year:04d}-{value:06d}"


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
    actor: AbstractBaseUser | None = None,
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
        number = _allocate_number(NumberSequence.Kind.CREDIT_NOTE, now.year)
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


# --- Close ---------------------------------------------------------------------------------


@dataclass
class CloseResult:
    tenant: str
    period: str
    outcome: str  # created / updated / unchanged / finalized / already issued / skipped / failed
    invoice: Invoice | None = None
    message: str = ""


FAILED = "failed"  # the tenant's data broke its close: recorded (JobFailure), retried with backoff


def invoices_close_month(
    *,
    year: int,
    month: int,
    tenant: Tenant | None = None,
    finalize: bool = False,
    actor_label: str = "",
    now: dt.datetime | None = None,
) -> list[CloseResult]:
    """Draft (and with finalize, issue) the month's invoice of every tenant, or of one.

    Idempotent: a second run creates nothing new. Each tenant is its own transaction.
    """
    now = now or timezone.now()
    job = TenantJob.begin(tenant_jobs.INVOICES_CLOSE, now=now)
    tenants = [tenant] if tenant is not None else selectors.tenants_to_bill()
    label = period_label(year, month)
    results = []
    for one in tenants:
        # Each tenant is its own transaction; one whose data breaks the close is recorded.
        result = job.run(
            one.pk,
            functools.partial(
                _close_month_of, tenant=one, year=year, month=month, finalize=finalize, actor_label=actor_label, now=now
            ),
        )
        results.append(result or _failed(job, one, label))
    return results


def _failed(job: TenantJob, tenant: Tenant, label: str) -> CloseResult:
    return CloseResult(tenant.slug, label, FAILED, None, job.failed[tenant.pk].error)


def _close_month_of(
    *, tenant: Tenant, year: int, month: int, finalize: bool, actor_label: str, now: dt.datetime
) -> CloseResult:
    label = period_label(year, month)
    try:
        invoice, changed = invoice_draft_refresh(tenant=tenant, year=year, month=month, now=now, skip_empty=True)
    except InvoiceError as exc:
        return CloseResult(tenant.slug, label, "skipped", None, str(exc))
    if invoice is None:
        return CloseResult(tenant.slug, label, "no usage")
    if not invoice.is_draft:
        return CloseResult(tenant.slug, label, "already issued", invoice)
    outcome = "updated" if changed else "unchanged"
    if finalize:
        try:
            invoice, done = invoice_finalize(invoice=invoice, actor_label=actor_label, now=now)
        except InvoiceError as exc:
            return CloseResult(tenant.slug, label, "draft", invoice, str(exc))
        outcome = "finalized" if done else "already issued"
    return CloseResult(tenant.slug, label, outcome, invoice)


def invoices_close_due(*, now: dt.datetime | None = None) -> list[CloseResult]:
    """The periodic close: refresh each tenant's draft for last month (tenant-local) and issue
    every draft whose grace period is over, oldest first."""
    now = now or timezone.now()
    job = TenantJob.begin(tenant_jobs.INVOICES_CLOSE, now=now)
    results: list[CloseResult] = []
    for tenant in selectors.tenants_to_bill():
        if not job.due(tenant.pk):
            continue  # its data broke an earlier close; tried again when its retry is due
        # Each tenant is its own transaction (a number taken by a close that then fails is
        # rolled back with it: numbers stay gapless); one whose data breaks it is recorded.
        done = job.run(tenant.pk, functools.partial(_close_due_of, tenant=tenant, now=now))
        results.extend(done if done is not None else [_failed(job, tenant, "")])
    return results


def _close_due_of(*, tenant: Tenant, now: dt.datetime) -> list[CloseResult]:
    grace = dt.timedelta(days=settings.INVOICE_GRACE_DAYS)
    settle = dt.timedelta(seconds=settings.INVOICE_SETTLE_SECONDS)
    results = []
    local = now.astimezone(zoneinfo.ZoneInfo(tenant.timezone))
    current = month_period(local.year, local.month, tenant.timezone)
    year, month = _previous_month(local.year, local.month)
    try:
        invoice_draft_refresh(tenant=tenant, year=year, month=month, now=now, skip_empty=True)
    except InvoiceError as exc:
        results.append(CloseResult(tenant.slug, period_label(year, month), "skipped", None, str(exc)))
    for draft in selectors.invoice_drafts_between(tenant_id=tenant.pk, after=None, before=current.start):
        if now < draft.period_end + max(grace, settle):
            continue
        try:
            invoice, done = invoice_finalize(invoice=draft, actor_label="close_due", now=now)
        except InvoiceError as exc:
            results.append(CloseResult(tenant.slug, draft.period, "draft", draft, str(exc)))
            break
        results.append(CloseResult(tenant.slug, draft.period, "finalized" if done else "already issued", invoice))
    return results


def invoice_guard_draft(invoice: Invoice) -> None:
    """Raise InvoiceImmutable unless `invoice` is still a draft (for any write path)."""
    if not Invoice.objects.filter(pk=invoice.pk, status=Invoice.Status.DRAFT).exists():
        raise InvoiceImmutable(f"Invoice {invoice.number or invoice.pk} is issued; it cannot be changed.")
