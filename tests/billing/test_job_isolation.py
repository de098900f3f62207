"""One tenant's bad data never stops another tenant's alert sweep, hold expiry or monthly close.

The bad data: a time zone name no longer known, written with raw SQL (the portal's forms only
offer real zones). The failing tenant is recorded (JobFailure, counter) and retried later; the
other tenant's alerts fire, holds are released and invoices issued all the same.
"""

import datetime as dt
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.utils import timezone
from prometheus_client import REGISTRY

from accounts.models import Tenant
from alerts import services as alert_services
from alerts import tasks as alert_tasks
from alerts.models import AlertEvent
from billing.models import Hold, JobFailure
from billing.services.holds import holds_release_expired
from billing.services.quotas import quota_create
from invoicing import services as invoicing_services
from invoicing import tasks as invoicing_tasks
from invoicing.models import Invoice
from portal.celery import app as celery_app
from tests import factories
from tests.invoicing.helpers import record

pytestmark = pytest.mark.django_db


def failures_counted(job: str) -> float:
    return REGISTRY.get_sample_value("tokenbill_job_tenant_failures_total", {"job": job}) or 0.0


def break_zone(tenant) -> None:
    with connection.cursor() as cursor:
        cursor.execute(f"UPDATE {Tenant._meta.db_table} SET timezone = 'Mars/Olympus' WHERE id = %s", [tenant.pk])


def repair_zone(tenant) -> None:
    Tenant.objects.filter(pk=tenant.pk).update(timezone="Asia/Shanghai")


@pytest.fixture
def eager():
    celery_app.conf.task_always_eager = True
    yield
    celery_app.conf.task_always_eager = False


# --- Alert sweep --------------------------------------------------------------------------------


def quota_alert(tenant, key) -> None:
    quota = quota_create(tenant=tenant, metric="tokens", window="month", limit=Decimal(1000), actor_label="t")
    alert_services.alert_rule_create(tenant=tenant, kind="quota", quota_id=quota.pk, thresholds=["50"], channels=[])
    response = key.post("/api/v1/events", factories.EventBodyFactory(input_tokens=900, output_tokens=100))
    assert response.status_code == 201, response.content


def test_alert_sweep_goes_on_past_a_failing_tenant(key_a, key_b, tenant_a, tenant_b, eager):
    for tenant, key in ((tenant_b, key_b), (tenant_a, key_a)):
        factories.topup(tenant, "10")
        quota_alert(tenant, key)
    AlertEvent.objects.all().delete()  # as if ingest never got to queue the evaluations
    break_zone(tenant_b)
    counted = failures_counted("alerts")

    assert alert_tasks.alerts_sweep.apply().get() == 2

    assert list(AlertEvent.objects.values_list("tenant_id", flat=True)) == [tenant_a.pk]
    failure = JobFailure.objects.get(job="alerts")
    assert failure.tenant_id == tenant_b.pk and failure.error.startswith("ZoneInfoNotFoundError")
    assert failures_counted("alerts") == counted + 1

    alert_tasks.alerts_sweep.apply().get()  # before the retry is due: skipped, not counted again
    assert JobFailure.objects.get(job="alerts").attempts == 1 and failures_counted("alerts") == counted + 1

    repair_zone(tenant_b)
    alert_services.alerts_evaluate_recorded(tenant_id=tenant_b.pk, now=failure.next_retry_at)
    assert not JobFailure.objects.exists()
    assert AlertEvent.objects.filter(tenant=tenant_b).count() == 1


# --- Hold expiry --------------------------------------------------------------------------------


def expired_hold(key, request_id: str) -> None:
    body = {"model": "gpt-4o", "estimated_input_tokens": 1000, "max_output_tokens": 500, "hold": True}
    response = key.post("/api/v1/authorize", {**body, "request_id": request_id})
    assert response.status_code == 200, response.content
    Hold.objects.filter(request_id=request_id).update(expires_at=timezone.now() - dt.timedelta(seconds=1))


def test_hold_expiry_goes_on_past_a_failing_tenant(backend, key_a, key_b, tenant_a, tenant_b):
    for tenant, key in ((tenant_b, key_b), (tenant_a, key_a)):
        factories.topup(tenant, "1.00")
        expired_hold(key, f"h-{tenant.slug}")
    break_zone(tenant_b)
    counted = failures_counted("holds")

    result = holds_release_expired()

    assert (result.released, result.tenants, result.failed_tenants) == (1, 1, (tenant_b.pk,))
    statuses = dict(Hold.objects.values_list("tenant_id", "status"))
    assert statuses == {tenant_a.pk: "released", tenant_b.pk: "open"}  # B's claim was rolled back
    assert JobFailure.objects.get(job="holds").tenant_id == tenant_b.pk
    assert failures_counted("holds") == counted + 1
    with pytest.raises(CommandError, match=str(tenant_b.pk)):
        _command_after_retry_due()

    repair_zone(tenant_b)
    later = JobFailure.objects.get().next_retry_at
    assert holds_release_expired(now=later).released == 1
    assert not JobFailure.objects.exists()
    assert set(Hold.objects.values_list("status", flat=True)) == {"released"}


def _command_after_retry_due() -> None:
    JobFailure.objects.update(next_retry_at=timezone.now() - dt.timedelta(seconds=1))
    call_command("release_expired_holds", stdout=StringIO())


# --- Monthly close ------------------------------------------------------------------------------


def test_monthly_close_goes_on_past_a_failing_tenant(key_a, key_b, tenant_a, tenant_b, settings):
    settings.INVOICE_GRACE_DAYS = 0
    settings.INVOICE_SETTLE_SECONDS = 0
    now = timezone.now()
    last_month = (now.replace(day=1) - dt.timedelta(days=2)).replace(hour=12, tzinfo=dt.UTC)
    for key in (key_b.row, key_a.row):
        record(key, at=last_month, received=last_month, input_tokens=1_000_000)
    break_zone(tenant_b)
    counted = failures_counted("invoices_close")

    counts = invoicing_tasks.invoices_close_due()

    assert counts.get("finalized") == 1 and counts.get(invoicing_services.FAILED) == 1
    assert list(Invoice.objects.values_list("tenant_id", "status")) == [(tenant_a.pk, "finalized")]
    failure = JobFailure.objects.get(job="invoices_close")
    assert failure.tenant_id == tenant_b.pk and failure.error.startswith("ZoneInfoNotFoundError")
    assert failures_counted("invoices_close") == counted + 1

    out, err = StringIO(), StringIO()
    with pytest.raises(CommandError, match="globex"):
        call_command("close_month", "--period", f"{last_month:%Y-%m}", stdout=out, stderr=err)
    assert "globex" in out.getvalue() and "failed" in out.getvalue() and "acme" in out.getvalue()

    repair_zone(tenant_b)
    invoicing_services.invoices_close_due(now=JobFailure.objects.get().next_retry_at)
    assert not JobFailure.objects.exists()
    assert Invoice.objects.get(tenant=tenant_b).status == "finalized"
