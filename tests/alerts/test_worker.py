"""End to end with a real Celery worker on the Redis broker: ingest -> debounced task -> email."""

import time
from decimal import Decimal

import pytest
import redis
from celery.contrib.testing.worker import start_worker

from alerts import services
from alerts.models import AlertDelivery
from billing.services.quotas import quota_create
from portal.celery import app as celery_app
from tests import factories


@pytest.mark.django_db(transaction=True)
def test_a_worker_delivers_the_alert_that_ingest_queued(tenant_a, key_a, smtp_server, settings):
    settings.ALERTS_DEBOUNCE_SECONDS = 1
    redis.Redis.from_url(settings.CELERY_BROKER_URL).delete("celery")
    channel = services.notification_channel_create(
        tenant=tenant_a, kind="email", name="mail", config={"recipients": ["ops@acme.test"]}
    )
    quota = quota_create(
        tenant=tenant_a, metric="tokens", window="day", limit=Decimal(2000), enforcement="soft", actor_label="t"
    )
    services.alert_rule_create(tenant=tenant_a, kind="quota", quota_id=quota.pk, channels=[channel])

    with start_worker(celery_app, pool="solo", perform_ping_check=False, shutdown_timeout=10, loglevel="WARNING"):
        for _ in range(3):  # a burst: one evaluation
            response = key_a.post("/api/v1/events/batch", {"events": factories.event_bodies(1)})  # 1,500 tokens
            assert response.status_code == 200
        deadline = time.monotonic() + 30
        while len(smtp_server.mails) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(1)  # nothing more should come

    subjects = sorted(mail.subject for mail in smtp_server.mails)
    assert len(subjects) == 2, subjects  # 80 % and 100 %, once each
    assert set(AlertDelivery.objects.values_list("status", flat=True)) == {"delivered"}
