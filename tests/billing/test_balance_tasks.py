"""The beat tasks that keep balances honest: expired holds released, drift reconciled.

Each task runs twice, as a redelivery or a second scheduler would: the second run finds
nothing to do.
"""

import datetime as dt

import pytest
from django.conf import settings
from django.utils import timezone

from billing import tasks
from billing.models import Hold
from billing.selectors import ledger_sum, wallet_balance
from billing.services.balances.keys import balance_key
from tests import factories

pytestmark = pytest.mark.django_db


def test_beat_schedules_both_tasks():
    scheduled = {entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()}
    assert {"billing.tasks.holds_release_expired", "billing.tasks.balances_reconcile"} <= scheduled


def test_expired_holds_are_released_once(backend, key_a, tenant_a):
    factories.topup(tenant_a, "1.00")
    response = key_a.post(
        "/api/v1/authorize",
        {"model": "gpt-4o", "estimated_input_tokens": 1000, "max_output_tokens": 500, "hold": True, "request_id": "h"},
    )
    assert response.status_code == 200, response.content
    assert wallet_balance(tenant_id=tenant_a.pk) < 1
    Hold.objects.update(expires_at=timezone.now() - dt.timedelta(seconds=1))

    assert tasks.holds_release_expired.apply().get() == 1
    assert tasks.holds_release_expired.apply().get() == 0
    assert Hold.objects.get().status == Hold.Status.RELEASED
    assert wallet_balance(tenant_id=tenant_a.pk) == ledger_sum(tenant_id=tenant_a.pk) == 1


def test_reconcile_task_fixes_drift_then_reports_none(redis_backend, redis_client, key_a, tenant_a):
    factories.topup(tenant_a, "1.00")
    key_a.post("/api/v1/authorize", {"model": "gpt-4o", "estimated_input_tokens": 10, "max_output_tokens": 10})
    redis_client.set(balance_key(tenant_a.pk), 5_000_000)  # drifted: someone INCRed it

    assert tasks.balances_reconcile.apply().get() >= 1
    assert int(redis_client.get(balance_key(tenant_a.pk))) == 1_000_000
    assert tasks.balances_reconcile.apply().get() == 0
