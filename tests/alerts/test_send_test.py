""" "Send test": a delivery row queued to the alert_delivery_send task after commit, sent by a
worker with the retry rules and the outbound policy of any alert, never inside the request."""

import json

import pytest
import redis
from django.conf import settings
from django.db import transaction

from alerts import services, tasks
from alerts.models import AlertDelivery, NotificationChannel
from infra.notifications.http import NO_ANSWER, REFUSED

WEBHOOK_SECRET = "webhook-secret-for-tests"
DINGTALK_SECRET = "SECdingtalk-secret-for-tests"


def send_test(channel, django_capture_on_commit_callbacks) -> AlertDelivery:
    """Queue a test and run what was queued on commit (eager: the task runs here)."""
    with django_capture_on_commit_callbacks(execute=True) as queued:
        delivery, created = services.notification_channel_send_test(channel=channel)
    assert created and len(queued) == 1
    delivery.refresh_from_db()
    return delivery


@pytest.mark.parametrize("kind", ["email", "dingtalk", "webhook"])
def test_send_test_reaches_each_channel(
    kind, tenant_a, smtp_server, dingtalk_robot, webhook_receiver, eager, django_capture_on_commit_callbacks
):
    robot = dingtalk_robot(access_token="test-robot", secret=DINGTALK_SECRET)
    receiver = webhook_receiver(secret=WEBHOOK_SECRET)
    config = {
        "email": {"recipients": ["ops@acme.test"]},
        "dingtalk": {"webhook_url": robot.webhook_url, "secret": DINGTALK_SECRET},
        "webhook": {"url": receiver.url, "secret": WEBHOOK_SECRET},
    }[kind]
    channel = services.notification_channel_create(tenant=tenant_a, kind=kind, name=kind, config=config)

    delivery = send_test(channel, django_capture_on_commit_callbacks)

    assert (delivery.status, delivery.event_id, delivery.attempts) == ("delivered", None, 1)
    texts = {
        "email": [mail.subject for mail in smtp_server.mails],
        "dingtalk": [message["markdown"]["title"] for message in robot.messages],
        "webhook": [message["subject"] for message in receiver.messages],
    }[kind]
    assert texts == [f"[{tenant_a.name}] Test notification"]


def test_send_test_records_a_generic_error_and_retries_later(
    tenant_a, settings, eager, django_capture_on_commit_callbacks
):
    settings.OUTBOUND_ALLOWED_NETWORKS = ("127.0.0.1/32",)  # a receiver on premises, down
    settings.NOTIFICATIONS_RETRY_BUDGET = 0.5
    channel = services.notification_channel_create(
        tenant=tenant_a, kind="webhook", name="hook", config={"url": "http://127.0.0.1:1/x", "secret": WEBHOOK_SECRET}
    )
    delivery = send_test(channel, django_capture_on_commit_callbacks)
    assert (delivery.status, delivery.error_kind, delivery.error) == ("retry", "transient", NO_ANSWER)
    assert delivery.next_attempt_at is not None  # the alerts' backoff, as for any delivery


@pytest.mark.django_db(transaction=True)
def test_send_test_is_queued_on_commit_and_nothing_is_sent_in_the_request(tenant_a, webhook_receiver):
    broker = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    broker.delete("celery")
    receiver = webhook_receiver(secret=WEBHOOK_SECRET)
    channel = services.notification_channel_create(
        tenant=tenant_a, kind="webhook", name="hook", config={"url": receiver.url, "secret": WEBHOOK_SECRET}
    )

    with transaction.atomic():  # the request's transaction
        delivery, created = services.notification_channel_send_test(channel=channel)
        assert created and broker.llen("celery") == 0  # not before the row is committed

    [message] = [json.loads(raw) for raw in broker.lrange("celery", 0, -1)]
    assert message["headers"]["task"] == "alerts.tasks.alert_delivery_send"
    assert message["headers"]["argsrepr"] == f"({delivery.pk},)"
    assert receiver.answered == []  # nothing was sent by the caller
    delivery.refresh_from_db()
    assert delivery.status == "pending"

    assert tasks.alert_delivery_send.apply(args=[delivery.pk]).get() == "delivered"  # what the worker does
    assert len(receiver.messages) == 1
    broker.delete("celery")


def test_a_test_waiting_for_its_first_try_is_not_queued_twice(tenant_a, django_capture_on_commit_callbacks):
    channel = services.notification_channel_create(
        tenant=tenant_a, kind="email", name="mail", config={"recipients": ["ops@acme.test"]}
    )
    with django_capture_on_commit_callbacks() as queued:
        first, created = services.notification_channel_send_test(channel=channel)
        again, created_again = services.notification_channel_send_test(channel=channel)
    assert created and not created_again and again.pk == first.pk
    assert len(queued) == 1
    AlertDelivery.objects.filter(pk=first.pk).update(status="failed")
    with django_capture_on_commit_callbacks() as queued:
        assert services.notification_channel_send_test(channel=channel)[1]  # once tried, a new one may go
    assert len(queued) == 1


@pytest.mark.parametrize("kind", ["webhook", "dingtalk"])
def test_a_channel_written_around_the_save_check_is_refused_at_send(
    kind, tenant_a, listener, eager, django_capture_on_commit_callbacks
):
    """A row whose config never went through the transport's validate (an old row, an admin
    edit, a bug) still cannot reach an internal address: nothing connects to the listener."""
    target = listener()  # on 127.0.0.1; the allow-list is empty
    config = {
        "webhook": {"url": target.url, "secret": WEBHOOK_SECRET},
        "dingtalk": {"webhook_url": f"{target.url}?access_token=t"},
    }[kind]
    channel = NotificationChannel.objects.create(tenant=tenant_a, kind=kind, name="internal", config=config)

    delivery = send_test(channel, django_capture_on_commit_callbacks)

    assert (delivery.status, delivery.error_kind, delivery.attempts) == ("failed", "permanent", 1)
    assert delivery.error == REFUSED
    assert target.contacts == 0


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:8080/h", "http://localhost/h", "http://169.254.169.254/latest/meta-data/", "http://[::1]/h",
     "http://10.0.0.5/h", "http://100.64.0.1/h", "http://[fd00::1]/h", "http://[::ffff:192.168.0.1]/h"],
)  # fmt: skip
def test_channels_to_internal_addresses_are_not_saved(url, tenant_a):
    with pytest.raises(services.AlertConfigError, match="refused by policy"):
        services.notification_channel_create(
            tenant=tenant_a, kind="webhook", name="hook", config={"url": url, "secret": WEBHOOK_SECRET}
        )
    channel = services.notification_channel_create(
        tenant=tenant_a, kind="webhook", name="hook", config={"url": "https://8.8.8.8/h", "secret": WEBHOOK_SECRET}
    )
    with pytest.raises(services.AlertConfigError, match="refused by policy"):
        services.notification_channel_update(channel=channel, config={"url": url, "secret": WEBHOOK_SECRET})
    channel.refresh_from_db()
    assert channel.config["url"] == "https://8.8.8.8/h"
