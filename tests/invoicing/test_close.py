"""Monthly close through the services and close_month: lines, periods, numbers, adjustments."""

import datetime as dt
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from accounts.models import AuditLog
from billing.models import LedgerEntry
from billing.services.ledger import ledger_post
from invoicing import services, tasks
from invoicing.models import Invoice, InvoiceLine, NumberSequence
from metering.models import UsageEvent
from tests import factories
from tests.invoicing.helpers import record, utc

pytestmark = pytest.mark.django_db

AFTER_OCTOBER = utc(2026, 11, 10)  # past October's end and its grace period


def close(tenant, year=2026, month=10, *, now=AFTER_OCTOBER):
    invoice, _ = services.invoice_draft_refresh(tenant=tenant, year=year, month=month, now=now)
    return invoice


def finalize(invoice, *, now=AFTER_OCTOBER):
    return services.invoice_finalize(invoice=invoice, actor_label="test", now=now)[0]


def test_lines_per_model_and_token_kind_with_unit_prices(tenant_a, api_key_a):
    record(api_key_a, at=utc(2026, 10, 3), input_tokens=1_000_000, output_tokens=200_000, cached=400_000)
    record(api_key_a, at=utc(2026, 10, 4), input_tokens=1_000_000, output_tokens=0)
    record(api_key_a, model="gpt-4o-mini", at=utc(2026, 10, 5), input_tokens=3_333, output_tokens=7)
    invoice = close(tenant_a)
    lines = {(line.model, line.token_kind): line for line in invoice.lines.all()}
    assert set(lines) == {
        ("gpt-4o", "input"),
        ("gpt-4o", "cached_input"),
        ("gpt-4o", "output"),
        ("gpt-4o-mini", "input"),
        ("gpt-4o-mini", "output"),
    }
    uncached = lines[("gpt-4o", "input")]
    assert uncached.quantity == 1_600_000  # input includes the cached tokens; not counted twice
    assert uncached.unit_price_per_mtok == Decimal("2.5")
    assert uncached.unit_price_per_ktok == Decimal("0.0025")
    assert uncached.amount == Decimal("4.00")
    assert lines[("gpt-4o", "cached_input")].amount == Decimal("0.50")  # 400k x 1.25 / 1M
    assert lines[("gpt-4o", "output")].amount == Decimal("2.00")
    mini = lines[("gpt-4o-mini", "input")]
    assert mini.amount_unrounded == Decimal("0.00049995")  # 3,333 x 0.15 / 1M, exact
    assert mini.amount == Decimal("0.00")
    assert invoice.subtotal == sum(line.amount for line in invoice.lines.all()) == Decimal("6.50")
    assert invoice.status == "draft" and invoice.number is None
    assert invoice.unrounded_total == sum(event.cost for event in UsageEvent.objects.all())


def test_shanghai_event_late_on_november_30_utc_is_on_december_invoice(tenant_b, api_key_b):
    record(api_key_b, at=dt.datetime(2026, 11, 30, 17, 30, tzinfo=dt.UTC))  # 01:30 on 1 Dec in Shanghai
    record(api_key_b, at=dt.datetime(2026, 11, 30, 15, 59, tzinfo=dt.UTC))  # 23:59 on 30 Nov in Shanghai
    now = utc(2027, 1, 10)
    november = close(tenant_b, 2026, 11, now=now)
    december = close(tenant_b, 2026, 12, now=now)
    assert december.period_start == dt.datetime(2026, 11, 30, 16, 0, tzinfo=dt.UTC)
    assert sum(line.requests for line in december.lines.filter(token_kind="input")) == 1
    assert sum(line.requests for line in november.lines.filter(token_kind="input")) == 1


def test_price_change_mid_month_gives_lines_per_price_version(tenant_a, api_key_a, plan):
    factories.PriceFactory(
        plan=plan, model_pattern="gpt-4o", effective_from=utc(2026, 10, 15), input_per_mtok="2", output_per_mtok="8"
    )
    record(api_key_a, at=utc(2026, 10, 10), input_tokens=1_000_000, output_tokens=0)
    record(api_key_a, at=utc(2026, 10, 20), input_tokens=1_000_000, output_tokens=0)
    invoice = close(tenant_a)
    inputs = list(invoice.lines.filter(token_kind="input").order_by("position"))
    assert [line.unit_price_per_mtok for line in inputs] == [Decimal("2.5"), Decimal("2")]
    assert [line.amount for line in inputs] == [Decimal("2.50"), Decimal("2.00")]
    assert "price from 2026-10-15" in inputs[1].description


def test_long_context_tier_lines_use_tier_rates(tenant_a, api_key_a, plan):
    factories.PriceFactory(
        plan=plan,
        model_pattern="gemini-pro",
        input_per_mtok="1.25",
        output_per_mtok="5",
        tier_threshold=200_000,
        tier_input_per_mtok="2.5",
        tier_output_per_mtok="10",
    )
    record(api_key_a, model="gemini-pro", at=utc(2026, 10, 2), input_tokens=100_000, output_tokens=1000)
    record(api_key_a, model="gemini-pro", at=utc(2026, 10, 2), input_tokens=300_000, output_tokens=1000)
    invoice = close(tenant_a)
    tiered = invoice.lines.get(model="gemini-pro", token_kind="input", long_context=True)
    base = invoice.lines.get(model="gemini-pro", token_kind="input", long_context=False)
    assert (tiered.quantity, tiered.unit_price_per_mtok) == (300_000, Decimal("2.5"))
    assert (base.quantity, base.unit_price_per_mtok) == (100_000, Decimal("1.25"))
    assert "long context" in tiered.description


def test_close_month_twice_creates_nothing_new_and_numbers_once(tenant_a, api_key_a, tenant_b, api_key_b, settings):
    settings.INVOICE_SETTLE_SECONDS = 0
    record(api_key_a, at=utc(2026, 10, 3))
    record(api_key_b, at=utc(2026, 10, 3))
    out = StringIO()
    call_command("close_month", "--period", "2026-10", stdout=out)
    assert "acme 2026-10: updated draft" in out.getvalue()
    lines_before = list(InvoiceLine.objects.values_list("id", flat=True).order_by("id"))
    out = StringIO()
    call_command("close_month", "--period", "2026-10", stdout=out)
    assert "acme 2026-10: unchanged draft" in out.getvalue()
    assert list(InvoiceLine.objects.values_list("id", flat=True).order_by("id")) == lines_before
    call_command("close_month", "--period", "2026-10", "--finalize", stdout=StringIO())
    call_command("close_month", "--period", "2026-10", "--finalize", stdout=StringIO())
    year = timezone.now().year  # the command's clock: numbers carry the year of issue
    numbers = sorted(Invoice.objects.values_list("number", flat=True))
    assert numbers == [f"INV-{year}-000001", f"INV-{year}-000002"]
    assert NumberSequence.objects.get(kind="INV", year=year).last_value == 2
    assert AuditLog.objects.filter(action="invoice.finalize").count() == 2


def test_close_month_for_one_tenant_and_errors(tenant_a, api_key_a, tenant_b, api_key_b):
    record(api_key_a, at=utc(2026, 10, 3))
    record(api_key_b, at=utc(2026, 10, 3))
    call_command("close_month", "--period", "2026-10", "--tenant", "acme", stdout=StringIO())
    assert list(Invoice.objects.values_list("tenant__slug", flat=True)) == ["acme"]
    with pytest.raises(CommandError, match="YYYY-MM"):
        call_command("close_month", "--period", "2026-13")
    with pytest.raises(CommandError, match="No tenant"):
        call_command("close_month", "--period", "2026-10", "--tenant", "nope")


def test_finalize_refuses_a_month_not_over(tenant_a, api_key_a):
    invoice = close(tenant_a, 2026, 11, now=utc(2026, 11, 20))
    with pytest.raises(services.InvoiceError, match="not over"):
        finalize(invoice, now=utc(2026, 11, 20))
    ahead = timezone.now() + dt.timedelta(days=40)  # a month not over, in any year this runs
    record(api_key_a, at=ahead, received=utc(2026, 11, 1))
    with pytest.raises(CommandError, match="Not finalized: acme"):
        call_command("close_month", "--period", f"{ahead:%Y-%m}", "--tenant", "acme", "--finalize", stdout=StringIO())


def test_grace_period_folds_late_events_into_the_draft(tenant_a, api_key_a, settings):
    settings.INVOICE_GRACE_DAYS = 3
    record(api_key_a, at=utc(2026, 10, 31, 23), received=utc(2026, 10, 31, 23), input_tokens=1_000_000)
    results = services.invoices_close_due(now=utc(2026, 11, 2))
    invoice = Invoice.objects.get(tenant=tenant_a, period="2026-10")
    assert invoice.status == "draft" and not [r for r in results if r.outcome == "finalized"]
    record(api_key_a, at=utc(2026, 10, 31, 23, 30), received=utc(2026, 11, 2, 6), input_tokens=1_000_000)
    services.invoices_close_due(now=utc(2026, 11, 4, 1))
    invoice.refresh_from_db()
    assert invoice.status == "finalized"
    assert invoice.lines.get(token_kind="input").quantity == 2_000_000
    # the beat task again: nothing changes
    services.invoices_close_due(now=utc(2026, 11, 4, 2))
    assert Invoice.objects.filter(tenant=tenant_a).count() == 1


def test_usage_after_close_lands_on_next_invoice_as_adjustment(tenant_a, api_key_a):
    record(api_key_a, at=utc(2026, 10, 5), input_tokens=1_000_000, output_tokens=0)
    october = finalize(close(tenant_a))
    late = record(api_key_a, at=utc(2026, 10, 6), received=utc(2026, 11, 12), input_tokens=2_000_000, output_tokens=0)
    record(api_key_a, at=utc(2026, 11, 6), received=utc(2026, 11, 6), input_tokens=1_000_000, output_tokens=0)
    october.refresh_from_db()
    assert october.subtotal == Decimal("2.50")  # unchanged
    november = finalize(close(tenant_a, 2026, 11, now=utc(2026, 12, 5)), now=utc(2026, 12, 5))
    adjustment = november.lines.get(kind="adjustment")
    assert adjustment.usage_period == "2026-10"
    assert adjustment.description.startswith("usage for 2026-10 received after close")
    assert adjustment.amount_unrounded == late.cost
    assert november.subtotal == Decimal("7.50")
    # closing October again is a no-op, and a December draft does not bill it a third time
    assert close(tenant_a).number == october.number
    december = close(tenant_a, 2026, 12, now=utc(2027, 1, 5))
    assert not december.lines.exists()


def test_closing_an_older_month_after_a_later_one_is_refused(tenant_a, api_key_a):
    record(api_key_a, at=utc(2026, 9, 5), received=utc(2026, 11, 1))
    record(api_key_a, at=utc(2026, 10, 5))
    october = finalize(close(tenant_a))
    # September had no invoice: its usage was billed on October's as an adjustment
    assert october.lines.filter(kind="adjustment", usage_period="2026-09").exists()
    with pytest.raises(services.InvoiceError, match="already issued"):
        services.invoice_draft_refresh(tenant=tenant_a, year=2026, month=9, now=AFTER_OCTOBER)


def test_earlier_draft_must_be_finalized_first(tenant_a, api_key_a):
    september = close(tenant_a, 2026, 9)
    october = close(tenant_a, 2026, 10)
    with pytest.raises(services.InvoiceError, match="2026-09"):
        finalize(october)
    finalize(september)
    assert finalize(october).number.endswith("000002")


def test_credits_applied_from_prepaid_wallet(tenant_a, api_key_a, tenant_b, api_key_b):
    ledger_post(
        tenant_id=tenant_a.pk, currency="USD", kind="topup", amount=Decimal("3"), idempotency_key="t1"
    )  # pays part of the month
    LedgerEntry.objects.filter(idempotency_key="t1").update(created_at=utc(2026, 10, 1))
    record(api_key_a, at=utc(2026, 10, 5), input_tokens=2_000_000, output_tokens=0)  # 5.00
    record(api_key_b, at=utc(2026, 10, 5), input_tokens=2_000_000, output_tokens=0)  # no top-up
    a = finalize(close(tenant_a))
    b = finalize(close(tenant_b))
    assert (a.subtotal, a.credits_applied, a.amount_due) == (Decimal("5.00"), Decimal("3.00"), Decimal("2.00"))
    assert (b.credits_applied, b.amount_due) == (Decimal("0"), Decimal("5.00"))


def test_mark_paid_and_void(tenant_a, api_key_a, tenant_b, api_key_b):
    record(api_key_a, at=utc(2026, 10, 5), input_tokens=2_000_000, output_tokens=0)
    record(api_key_b, at=utc(2026, 10, 5), input_tokens=2_000_000, output_tokens=0)
    a = finalize(close(tenant_a))
    b = finalize(close(tenant_b))
    assert services.invoice_mark_paid(invoice=a, actor_label="test", reference="wire 42") is True
    assert services.invoice_mark_paid(invoice=a, actor_label="test") is False
    a.refresh_from_db()
    assert a.status == "paid"
    payment = LedgerEntry.objects.get(tenant=tenant_a, kind="invoice_payment")
    assert payment.amount == a.amount_due
    with pytest.raises(services.InvoiceError, match="reason"):
        services.invoice_void(invoice=b, reason=" ")
    assert services.invoice_void(invoice=b, reason="issued in error", actor_label="test") is True
    with pytest.raises(services.InvoiceError, match="finalized"):
        services.invoice_void(invoice=a, reason="x")
    with pytest.raises(services.InvoiceError, match="finalized"):
        services.invoice_mark_paid(invoice=b)


def test_credit_notes_full_and_partial_numbered_and_audited(tenant_a, api_key_a):
    record(api_key_a, at=utc(2026, 10, 5), input_tokens=2_000_000, output_tokens=0)
    draft = close(tenant_a)
    with pytest.raises(services.InvoiceError, match="finalized"):
        services.credit_note_issue(invoice=draft, reason="x")
    invoice = finalize(draft)
    partial = services.credit_note_issue(invoice=invoice, amount=Decimal("1.234"), reason="outage", actor_label="fin")
    assert partial.amount == Decimal("1.23")
    year = partial.issued_at.year
    assert partial.number == f"CN-{year}-000001"
    with pytest.raises(services.InvoiceError, match=r"at most 3\.77"):
        services.credit_note_issue(invoice=invoice, amount=Decimal("4"), reason="too much")
    with pytest.raises(services.InvoiceError, match="reason"):
        services.credit_note_issue(invoice=invoice, reason="")
    full = services.credit_note_issue(invoice=invoice, reason="goodwill")
    assert (full.number, full.amount) == (f"CN-{year}-000002", Decimal("3.77"))
    with pytest.raises(services.InvoiceError, match="Nothing left"):
        services.credit_note_issue(invoice=invoice, reason="again")
    assert AuditLog.objects.filter(action="credit_note.issue").count() == 2
    credited = LedgerEntry.objects.filter(tenant=tenant_a, kind="adjustment").values_list("amount", flat=True)
    assert sorted(credited) == [Decimal("1.23"), Decimal("3.77")]
    invoice.refresh_from_db()
    assert invoice.subtotal == Decimal("5.00")  # the invoice itself never changes


def test_beat_task_closes_last_month_from_ingested_usage(tenant_a, key_a, settings):
    """End to end: events through the HTTP API, then the periodic task, twice."""
    settings.INVOICE_GRACE_DAYS = 0
    settings.INVOICE_SETTLE_SECONDS = 0
    today = timezone.now()
    last_month_day = today.replace(day=1) - dt.timedelta(days=10)
    for index in range(3):
        response = key_a.post(
            "/api/v1/events",
            {
                "request_id": f"beat-{index}",
                "model": "gpt-4o",
                "input_tokens": 1_000_000,
                "output_tokens": 0,
                "timestamp": last_month_day.isoformat(),
            },
        )
        assert response.status_code == 201, response.content
    counts = tasks.invoices_close_due()
    assert counts.get("finalized") == 1
    invoice = Invoice.objects.get(tenant=tenant_a, period=f"{last_month_day:%Y-%m}")
    assert invoice.status == "finalized" and invoice.subtotal == Decimal("7.50")
    assert invoice.unrounded_total == sum(e.cost for e in UsageEvent.objects.filter(tenant=tenant_a))
    assert tasks.invoices_close_due().get("finalized") is None
    assert Invoice.objects.filter(tenant=tenant_a).count() == 1


def test_idle_tenants_get_no_invoice_and_use_no_number(tenant_a, api_key_a, tenant_b, settings):
    settings.INVOICE_SETTLE_SECONDS = 0
    record(api_key_a, at=utc(2026, 10, 3), input_tokens=1_000_000)
    out = StringIO()
    call_command("close_month", "--period", "2026-10", "--finalize", stdout=out)
    assert "globex 2026-10: no usage" in out.getvalue()
    assert list(Invoice.objects.values_list("tenant__slug", flat=True)) == ["acme"]
