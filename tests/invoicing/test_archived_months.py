"""Invoices and reconciliation across archival: a month whose events left the database still
reconciles (from its archive's totals), and a late event for it follows today's rule: refused
while ingest's window excludes it, else billed on the next open invoice as an adjustment."""

import datetime as dt
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import call_command
from django.utils import timezone

from invoicing import selectors, services
from metering.models import UsageEvent
from metering.services import archive
from tests.invoicing.helpers import record, utc

pytestmark = pytest.mark.django_db

OCTOBER = dt.date(2026, 10, 1)
AFTER_OCTOBER = utc(2026, 11, 10)


@pytest.fixture
def store(settings, tmp_path):
    settings.STORAGES = {
        **settings.STORAGES,
        "archive": {"BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": tmp_path}},
    }


def _finalize(tenant, year, month, now):
    invoice, _ = services.invoice_draft_refresh(tenant=tenant, year=year, month=month, now=now)
    return services.invoice_finalize(invoice=invoice, actor_label="test", now=now)[0]


def test_an_archived_month_reconciles_as_before(store, make_tenant):
    shanghai, key_sh = make_tenant("sh-co", tz="Asia/Shanghai")  # its October starts 2026-09-30 16:00 UTC
    utc_co, key_utc = make_tenant("utc-co")
    for key in (key_sh, key_utc):
        record(key, at=utc(2026, 9, 30, 17), input_tokens=1_000_000, output_tokens=0)  # Shanghai: October
        record(key, at=utc(2026, 10, 5), input_tokens=333_333, output_tokens=7)
        record(key, at=utc(2026, 10, 31, 20), received=utc(2026, 11, 1, 1))  # received in November
        record(key, model="unpriced-model", at=utc(2026, 10, 7))
        record(key, at=utc(2026, 11, 3), input_tokens=5)  # November stays online
    for tenant in (shanghai, utc_co):
        _finalize(tenant, 2026, 10, AFTER_OCTOBER)
    before = {m: selectors.reconciliation(year=2026, month=m) for m in (9, 10, 11)}
    out_before = StringIO()
    call_command("reconcile_period", "--period", "2026-10", stdout=out_before)

    for month in (dt.date(2026, 9, 1), OCTOBER):
        archive.usage_archive_month(month=month, now=utc(2027, 12, 15))
    assert UsageEvent.objects.filter(occurred_at__lt=utc(2026, 11, 1)).count() == 0

    assert {m: selectors.reconciliation(year=2026, month=m) for m in (9, 10, 11)} == before
    out_after = StringIO()
    call_command("reconcile_period", "--period", "2026-10", stdout=out_after)
    assert out_after.getvalue() == out_before.getvalue()
    october = {row.tenant: row for row in before[10]}
    # Shanghai's October: 2026-09-30 17:00 UTC in, 2026-10-31 20:00 UTC out (its November,
    # which so takes one event from the archived UTC October and the rest online).
    assert october["sh-co"].requests == 3 and october["sh-co"].unpriced_requests == 1
    assert october["utc-co"].requests == 3
    november = {row.tenant: row for row in before[11]}
    assert november["sh-co"].requests == 2 and november["utc-co"].requests == 1


def test_a_late_event_for_an_archived_month_is_refused_or_billed_on_the_next_invoice(
    settings, store, tenant_a, api_key_a, key_a
):
    record(api_key_a, at=utc(2026, 10, 5), input_tokens=1_000_000, output_tokens=0)
    october = _finalize(tenant_a, 2026, 10, AFTER_OCTOBER)
    settings.INGEST_MAX_PAST_DAYS = 30  # October is out of ingest's reach today: it may be archived
    archive.usage_archive_month(month=OCTOBER, now=timezone.now())

    late = {"request_id": "late-1", "model": "gpt-4o", "input_tokens": 2_000_000, "output_tokens": 0}
    late["timestamp"] = "2026-10-20T00:00:00Z"
    refused = key_a.post("/api/v1/events", late)
    assert refused.status_code == 400
    assert refused.json()["error"]["code"] == "timestamp_out_of_range"

    # Widened again by an operator: the event is stored (in the default partition; October's
    # was dropped) and, as for any month already closed, billed on the next open invoice.
    settings.INGEST_MAX_PAST_DAYS = 400
    accepted = key_a.post("/api/v1/events", late)
    assert accepted.status_code == 201, accepted.content
    november, _ = services.invoice_draft_refresh(tenant=tenant_a, year=2026, month=11, now=timezone.now())
    adjustment = november.lines.get(kind="adjustment")
    assert adjustment.usage_period == "2026-10"
    assert adjustment.description.startswith("usage for 2026-10 received after close")
    assert adjustment.amount_unrounded == Decimal("5.0")  # 2M input tokens x 2.5 / 1M
    october.refresh_from_db()
    assert october.subtotal == Decimal("2.50")  # the finalized invoice never changes
    # The month's archive is not rewritten behind the late row: archiving it again is refused.
    with pytest.raises(archive.ArchiveRefused, match="has rows again"):
        archive.usage_archive_month(month=OCTOBER, now=utc(2027, 12, 15))
