"""The demo a newcomer sees: every page has something in it."""

from io import StringIO

import pytest
from django.core.management import call_command

from accounts.models import ApiKey, Tenant
from alerts.models import AlertRule, NotificationChannel
from invoicing.models import Invoice
from metering.models import UsageArchive, UsageEvent

pytestmark = pytest.mark.django_db


def test_seed_demo_fills_every_page_and_runs_again_without_doubling(settings, tmp_path):
    settings.STORAGES = {
        **settings.STORAGES,
        "archive": {"BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": tmp_path}},
    }
    out = StringIO()
    call_command("seed_demo", "--per-day", "20", stdout=out)
    tenant = Tenant.objects.get(slug="demo")
    assert "demo@example.com" in out.getvalue() and "Demo API key:" in out.getvalue()
    # Last month's invoice, issued (or a draft while its grace period runs).
    invoices = list(Invoice.objects.filter(tenant=tenant))
    assert len(invoices) == 1 and invoices[0].status in ("finalized", "draft")
    assert NotificationChannel.objects.filter(tenant=tenant).count() == 1
    assert set(AlertRule.objects.filter(tenant=tenant).values_list("kind", flat=True)) == {"balance", "spend", "quota"}
    assert ApiKey.objects.filter(tenant=tenant, rpm_limit__isnull=False).exists()
    # A month past the retention is archived (its file in the archive storage, rollups kept).
    assert UsageArchive.objects.filter(status="dropped", rows=120).count() == 1
    events = UsageEvent.objects.filter(tenant_id=tenant.pk).count()
    call_command("seed_demo", "--per-day", "20", stdout=StringIO())
    assert UsageEvent.objects.filter(tenant_id=tenant.pk).count() == events
    assert Invoice.objects.filter(tenant=tenant).count() == 1
    assert AlertRule.objects.filter(tenant=tenant).count() == 3
