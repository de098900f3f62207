"""Retention of the smaller data kinds, through the beat tasks: alert deliveries, closed holds,
the audit log (seven years at least, never silently). Each test keeps rows that must stay."""

import datetime as dt
import logging
import os
import subprocess
import sys
from decimal import Decimal

import pytest
from django.utils import timezone

from accounts import tasks as accounts_tasks
from accounts.models import AuditLog
from accounts.services import audit_record
from alerts import tasks as alerts_tasks
from alerts.models import AlertDelivery
from alerts.services import notification_channel_create
from billing import tasks as billing_tasks
from billing.models import Hold, LedgerEntry

pytestmark = pytest.mark.django_db

NOW = timezone.now


def _aged(model, row, days: int, field: str = "created_at") -> None:
    model.objects.filter(pk=row.pk).update(**{field: NOW() - dt.timedelta(days=days)})


def test_ended_deliveries_past_retention_are_deleted_others_stay(settings, tenant_a):
    settings.ALERT_DELIVERY_RETENTION_DAYS = 180
    channel = notification_channel_create(
        tenant=tenant_a, kind="email", name="ops", config={"recipients": ["a@example.com"]}
    )
    old_delivered = AlertDelivery.objects.create(tenant=tenant_a, channel=channel, status="delivered")
    old_failed = AlertDelivery.objects.create(tenant=tenant_a, channel=channel, status="failed")
    old_retrying = AlertDelivery.objects.create(tenant=tenant_a, channel=channel, status="retry")
    recent = AlertDelivery.objects.create(tenant=tenant_a, channel=channel, status="delivered")
    for row in (old_delivered, old_failed, old_retrying):
        _aged(AlertDelivery, row, 181)
    _aged(AlertDelivery, recent, 179)
    assert alerts_tasks.alert_deliveries_prune() == 2
    assert set(AlertDelivery.objects.values_list("pk", flat=True)) == {old_retrying.pk, recent.pk}
    settings.ALERT_DELIVERY_RETENTION_DAYS = 0  # keep forever
    _aged(AlertDelivery, recent, 5000)
    assert alerts_tasks.alert_deliveries_prune() == 0


def _hold(tenant, key, request_id: str, status: str, closed_days_ago: int | None) -> Hold:
    now = NOW()
    return Hold.objects.create(
        tenant=tenant,
        api_key=key,
        request_id=request_id,
        model="gpt-4o",
        amount=Decimal("0.01"),
        status=status,
        expires_at=now,
        closed_at=None if closed_days_ago is None else now - dt.timedelta(days=closed_days_ago),
    )


def test_closed_holds_past_retention_are_deleted_open_ones_and_the_ledger_stay(settings, tenant_a, key_a):
    settings.HOLD_RETENTION_DAYS = 90
    ledger_before = LedgerEntry.objects.count()
    _hold(tenant_a, key_a.row, "settled-old", "settled", 91)
    _hold(tenant_a, key_a.row, "released-old", "released", 200)
    _hold(tenant_a, key_a.row, "released-new", "released", 89)
    _hold(tenant_a, key_a.row, "open", "open", None)
    assert billing_tasks.holds_prune_closed() == 2
    assert set(Hold.objects.values_list("request_id", flat=True)) == {"released-new", "open"}
    assert LedgerEntry.objects.count() == ledger_before


def test_the_audit_log_is_kept_seven_years_and_a_prune_is_itself_audited(settings, tenant_a, caplog):
    assert accounts_tasks.audit_log_prune() == 0  # default: forever
    old = audit_record(action="price.import", target=tenant_a, actor_label="cli")
    recent = audit_record(action="price.import", target=tenant_a, actor_label="cli")
    _aged(AuditLog, old, 2600)
    _aged(AuditLog, recent, 2500)
    settings.AUDIT_LOG_RETENTION_DAYS = 2557
    with caplog.at_level(logging.WARNING, logger="accounts.audit"):
        assert accounts_tasks.audit_log_prune() == 1
    assert [r.getMessage() for r in caplog.records] == ["audit_log.pruned"]
    assert caplog.records[0].deleted == 1
    assert not AuditLog.objects.filter(pk=old.pk).exists()
    assert AuditLog.objects.filter(pk=recent.pk).exists()
    entry = AuditLog.objects.get(action="audit_log.prune")
    assert entry.changes["deleted"] == 1


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("AUDIT_LOG_RETENTION_DAYS", "365", "at least 2557"),
        ("USAGE_RETENTION_MONTHS", "-1", "USAGE_RETENTION_MONTHS"),
        ("ARCHIVE_GZIP_LEVEL", "0", "ARCHIVE_GZIP_LEVEL"),
        ("HOLD_RETENTION_DAYS", "-5", "HOLD_RETENTION_DAYS"),
    ],
)
def test_bad_retention_settings_fail_loudly(name, value, message):
    code = "import portal.settings"
    env = {**os.environ, name: value}
    loaded = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert loaded.returncode != 0
    assert "ImproperlyConfigured" in loaded.stderr and message in loaded.stderr


def test_an_s3_bucket_setting_selects_the_s3_archive_storage():
    code = (
        "import portal.settings as s; from django.utils.module_loading import import_string; "
        "a = s.STORAGES['archive']; import_string(a['BACKEND']); "
        "print(a['BACKEND'], a['OPTIONS']['bucket_name'], a['OPTIONS']['endpoint_url'])"
    )
    env = {**os.environ, "ARCHIVE_S3_BUCKET": "usage-archive", "ARCHIVE_S3_ENDPOINT_URL": "https://minio.example:9000"}
    loaded = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stdout.split() == ["storages.backends.s3.S3Storage", "usage-archive", "https://minio.example:9000"]
