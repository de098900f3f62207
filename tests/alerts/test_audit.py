"""Every write of alert rules and channels is audited by the service, whoever calls it."""

from decimal import Decimal

import pytest

from accounts.models import AuditLog
from alerts import services
from billing.services.quotas import quota_create

pytestmark = pytest.mark.django_db


def audits(tenant, action: str) -> list[AuditLog]:
    return list(AuditLog.objects.filter(tenant=tenant, action=action).order_by("id"))


def test_rule_create_and_delete_write_audit_entries(tenant_a):
    quota = quota_create(tenant=tenant_a, metric="tokens", window="month", limit=Decimal(1000))
    rule = services.alert_rule_create(
        tenant=tenant_a, kind="quota", quota_id=quota.pk, channels=[], thresholds=["80"], actor_label="ops script"
    )
    (created,) = audits(tenant_a, "alert_rule.create")
    assert (created.target_type, created.target_id, created.actor_label) == ("AlertRule", str(rule.pk), "ops script")
    assert created.changes == {"kind": "quota", "thresholds": ["80"], "channels": []}

    rule_id = rule.pk
    services.alert_rule_delete(rule=rule)
    (deleted,) = audits(tenant_a, "alert_rule.delete")
    assert (deleted.target_id, deleted.actor_label) == (str(rule_id), "system")


def test_rule_update_pause_and_channel_writes_are_audited(tenant_a):
    channel = services.notification_channel_create(
        tenant=tenant_a, kind="email", name="ops", config={"recipients": ["ops@acme.test"]}, actor_label="t"
    )
    rule = services.alert_rule_create(tenant=tenant_a, kind="spike", channels=[], actor_label="t")
    values = {
        "name": "spikes",
        "quota_id": None,
        "api_key": None,
        "window": rule.window,
        "amount": None,
        "threshold_unit": rule.threshold_unit,
        "thresholds": rule.thresholds,
        "forecast_days": rule.forecast_days,
        "spike_factor": rule.spike_factor,
    }
    services.alert_rule_update(rule=rule, channels=[channel], actor_label="t", **values)
    services.alert_rule_update(rule=rule, channels=[channel], actor_label="t", **values)  # nothing changed
    services.alert_rule_set_enabled(rule=rule, enabled=False, actor_label="t")
    services.notification_channel_update(channel=channel, enabled=False, actor_label="t")
    services.notification_channel_delete(channel=channel, actor_label="t")
    actions = list(AuditLog.objects.filter(tenant=tenant_a).order_by("id").values_list("action", flat=True))
    assert actions == [
        "notification_channel.create",
        "alert_rule.create",
        "alert_rule.update",
        "alert_rule.disable",
        "notification_channel.update",
        "notification_channel.delete",
    ]
