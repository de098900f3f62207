"""Two workers closing at once (real threads, real PostgreSQL): one invoice, one number, no gaps."""

import threading
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import connection

from invoicing import services
from invoicing.models import Invoice, NumberSequence
from tests import factories
from tests.invoicing.helpers import record, utc

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

NOW = utc(2026, 11, 10)


def _run_threads(target, count: int) -> list[BaseException]:
    errors: list[BaseException] = []
    barrier = threading.Barrier(count)

    def worker() -> None:
        try:
            barrier.wait(timeout=10)
            target()
        except BaseException as exc:  # reported to the test below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return errors


def test_two_close_month_workers_at_once(settings, plan):
    settings.INVOICE_SETTLE_SECONDS = 0
    tenants = []
    for index in range(6):
        tenant = factories.TenantFactory(slug=f"t{index}", price_plan=plan)
        key, _ = factories.issue_api_key(tenant)
        record(key, at=utc(2026, 10, 3 + index), input_tokens=1000 * (index + 1))
        tenants.append(tenant)

    def close() -> None:
        call_command("close_month", "--period", "2026-10", "--finalize", stdout=StringIO(), stderr=StringIO())

    assert _run_threads(close, 2) == []
    invoices = list(Invoice.objects.order_by("number"))
    assert len(invoices) == len(tenants)
    assert {invoice.tenant_id for invoice in invoices} == {tenant.pk for tenant in tenants}
    year = invoices[0].finalized_at.year
    assert [invoice.number for invoice in invoices] == [f"INV-{year}-{n:06d}" for n in range(1, 7)]
    assert NumberSequence.objects.get(kind="INV", year=year).last_value == 6


def test_two_workers_finalize_the_same_draft(plan):
    tenant = factories.TenantFactory(slug="solo", price_plan=plan)
    key, _ = factories.issue_api_key(tenant)
    record(key, at=utc(2026, 10, 3))
    draft, _ = services.invoice_draft_refresh(tenant=tenant, year=2026, month=10, now=NOW)
    outcomes: list[bool] = []

    def finalize() -> None:
        outcomes.append(services.invoice_finalize(invoice=draft, now=NOW)[1])

    assert _run_threads(finalize, 4) == []
    assert sorted(outcomes) == [False, False, False, True]
    invoice = Invoice.objects.get()
    assert invoice.number == f"INV-{NOW.year}-000001"
    assert NumberSequence.objects.get(kind="INV", year=NOW.year).last_value == 1


def test_numbers_are_gapless_across_tenants_and_credit_notes_have_their_own(plan):
    finalized = []
    for index in range(3):
        tenant = factories.TenantFactory(slug=f"g{index}", price_plan=plan)
        key, _ = factories.issue_api_key(tenant)
        record(key, at=utc(2026, 10, 3), input_tokens=1_000_000)
        draft, _ = services.invoice_draft_refresh(tenant=tenant, year=2026, month=10, now=NOW)
        finalized.append(services.invoice_finalize(invoice=draft, now=NOW)[0])
    notes = []

    def credit() -> None:
        notes.append(services.credit_note_issue(invoice=finalized[0], amount=1, reason="goodwill", now=NOW).number)

    # Two finance users credit at once; the subtotal (2.50 + 0.01) leaves room for both.
    assert _run_threads(credit, 2) == []
    assert [i.number for i in finalized] == [f"INV-{NOW.year}-{n:06d}" for n in (1, 2, 3)]
    assert sorted(notes) == [f"CN-{NOW.year}-000001", f"CN-{NOW.year}-000002"]
