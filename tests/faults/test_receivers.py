"""SMTP and webhook receivers that are down, slow or flapping.

Through the delivery service (what the alert delivery task calls) with the clock passed in:
a transient failure leaves the delivery in `retry` with attempts counted and next_attempt_at
pushed out by the backoff; it is not sent again before that; when the receiver is back it is
sent and recorded once. Whatever was resent carries the same X-Tokenbill-Delivery key, so a
receiver that deduplicates on it processes each delivery exactly once.
"""

import asyncio
import datetime as dt
import threading
import time

import pytest
from aiosmtpd.controller import Controller
from django.utils import timezone

from alerts.models import AlertDelivery
from alerts.services import _backoff, alert_delivery_send, notification_channel_create
from tests.faults.conftest import free_port
from tests.faults.receiver import FAIL, OK, SLOW

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

SECRET = "s" * 24


@pytest.fixture(autouse=True)
def _short_timeouts(settings):
    settings.NOTIFICATIONS_HTTP_TIMEOUT = 0.5
    settings.NOTIFICATIONS_RETRY_BUDGET = 1.2  # a few tries inside one task run, then the task's backoff
    settings.EMAIL_TIMEOUT = 1


def _webhook_delivery(tenant, url: str) -> AlertDelivery:
    channel = notification_channel_create(
        tenant=tenant, kind="webhook", name="hook", config={"url": url, "secret": SECRET}
    )
    return AlertDelivery.objects.create(tenant=tenant, channel=channel)


def _assert_retry_scheduled(delivery: AlertDelivery, now: dt.datetime) -> None:
    delivery.refresh_from_db()
    assert delivery.status == AlertDelivery.Status.RETRY, (delivery.status, delivery.error)
    assert delivery.error_kind == AlertDelivery.ErrorKind.TRANSIENT
    assert delivery.attempts >= 1 and delivery.lease_expires_at is None
    assert delivery.next_attempt_at == now + dt.timedelta(seconds=_backoff(delivery.attempts))


def test_webhook_down_then_up_is_retried_with_backoff_and_delivered_once(tenant_a, scripted_receiver):
    receiver = scripted_receiver()
    delivery = _webhook_delivery(tenant_a, receiver.url)
    receiver.stop()  # down: connections refused
    t0 = timezone.now()

    assert alert_delivery_send(delivery_id=delivery.pk, now=t0).status == AlertDelivery.Status.RETRY
    _assert_retry_scheduled(delivery, t0)
    first_attempts = delivery.attempts
    # Not due yet: nothing is sent, the task is told how long to wait.
    early = alert_delivery_send(delivery_id=delivery.pk, now=t0 + dt.timedelta(seconds=1))
    assert early.status == AlertDelivery.Status.RETRY and early.retry_in == pytest.approx(_backoff(first_attempts) - 1)
    # Still down when due: the next backoff is longer.
    t1 = delivery.next_attempt_at
    alert_delivery_send(delivery_id=delivery.pk, now=t1)
    _assert_retry_scheduled(delivery, t1)
    assert delivery.attempts > first_attempts
    assert _backoff(delivery.attempts) > _backoff(first_attempts)

    receiver.start()  # up again, same port
    t2 = delivery.next_attempt_at
    assert alert_delivery_send(delivery_id=delivery.pk, now=t2).status == AlertDelivery.Status.DELIVERED
    assert alert_delivery_send(delivery_id=delivery.pk, now=t2 + dt.timedelta(hours=1)).status == "delivered"
    delivery.refresh_from_db()
    assert delivery.status == AlertDelivery.Status.DELIVERED and delivery.next_attempt_at is None
    assert len(receiver.received()) == 1 and receiver.delivered() == [receiver.received()[0].delivery]


def test_webhook_slower_than_the_timeout_is_resent_under_the_same_key(tenant_a, scripted_receiver):
    """The slow receiver processes requests the sender has given up on: the resends are
    duplicates on the wire, all under one idempotency key, so a deduplicating receiver acts once."""
    receiver = scripted_receiver(default=SLOW, slow_seconds=1.0)  # > NOTIFICATIONS_HTTP_TIMEOUT (0.5 s)
    delivery = _webhook_delivery(tenant_a, receiver.url)
    t0 = timezone.now()

    started = time.monotonic()
    assert alert_delivery_send(delivery_id=delivery.pk, now=t0).status == AlertDelivery.Status.RETRY
    assert time.monotonic() - started < 5, "the retry budget bounds one run"
    _assert_retry_scheduled(delivery, t0)
    assert delivery.error == "could not deliver: the receiver did not answer"

    receiver.default = OK
    assert alert_delivery_send(delivery_id=delivery.pk, now=delivery.next_attempt_at).status == "delivered"
    received = receiver.received()
    keys = {r.delivery for r in received}
    assert len(received) >= 2 and keys == {f"delivery-{delivery.pk}"}
    time.sleep(1.2)  # the slow handlers finish answering the sender that left
    assert set(receiver.delivered()) == keys  # processed under one key: one message for a deduplicating receiver


def test_webhook_flapping_500_200_is_delivered_once(tenant_a, scripted_receiver):
    receiver = scripted_receiver()
    receiver.answers = [FAIL, OK, FAIL, OK]
    delivery = _webhook_delivery(tenant_a, receiver.url)
    other = AlertDelivery.objects.create(tenant=tenant_a, channel=delivery.channel)

    assert alert_delivery_send(delivery_id=delivery.pk).status == AlertDelivery.Status.DELIVERED
    assert alert_delivery_send(delivery_id=other.pk).status == AlertDelivery.Status.DELIVERED
    delivery.refresh_from_db()
    other.refresh_from_db()
    assert (delivery.attempts, other.attempts) == (2, 2)  # one 500, then the 200, inside one run
    answered = [r.answered for r in receiver.received()]
    assert answered == [500, 200, 500, 200]
    assert sorted(receiver.delivered()) == sorted({r.delivery for r in receiver.received()})
    assert len(set(receiver.delivered())) == 2  # two deliveries, each processed once


# --- SMTP -----------------------------------------------------------------------------------------


class _Mailbox:
    """aiosmtpd handler: 451 (try later) for the next `refuse` messages, `delay` seconds before
    answering DATA (after the message is stored: a slow server that keeps what it got)."""

    def __init__(self) -> None:
        self.refuse = 0
        self.delay = 0.0
        self.keys: list[str] = []
        self.lock = threading.Lock()

    async def handle_DATA(self, server, session, envelope):
        with self.lock:
            if self.refuse:
                self.refuse -= 1
                return "451 4.3.0 try again later"
        text = envelope.content.decode(errors="replace")
        key = next(
            (line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("X-Tokenbill-Delivery:")),
            "",
        )
        with self.lock:
            self.keys.append(key)
        if self.delay:
            await asyncio.sleep(self.delay)
        return "250 Message accepted"


@pytest.fixture
def smtp_later(settings):
    """An SMTP port that is down until `start()`; Django's mail points at it."""
    port = free_port()
    mailbox = _Mailbox()
    controllers: list[Controller] = []
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", port
    settings.EMAIL_USE_TLS = False
    settings.EMAIL_HOST_USER = settings.EMAIL_HOST_PASSWORD = ""

    def start() -> _Mailbox:
        controller = Controller(mailbox, hostname="127.0.0.1", port=port)
        controller.start()
        controllers.append(controller)
        return mailbox

    yield start
    for controller in controllers:
        controller.stop()


def test_smtp_down_then_flapping_then_slow_sends_each_mail_once(tenant_a, smtp_later):
    channel = notification_channel_create(
        tenant=tenant_a, kind="email", name="ops", config={"recipients": ["ops@example.com"]}
    )
    down = AlertDelivery.objects.create(tenant=tenant_a, channel=channel)
    t0 = timezone.now()
    assert alert_delivery_send(delivery_id=down.pk, now=t0).status == AlertDelivery.Status.RETRY
    _assert_retry_scheduled(down, t0)

    mailbox = smtp_later()
    mailbox.refuse = 1  # up, but the first DATA is refused with 451: transient
    assert alert_delivery_send(delivery_id=down.pk, now=down.next_attempt_at).status == AlertDelivery.Status.RETRY
    t1 = down.next_attempt_at
    _assert_retry_scheduled(down, t1)
    assert down.attempts == 2
    assert alert_delivery_send(delivery_id=down.pk, now=down.next_attempt_at).status == "delivered"
    assert mailbox.keys == [f"delivery-{down.pk}"]  # the refused DATA was not kept

    # Slow: the server keeps the message but answers after the client's timeout (EMAIL_TIMEOUT).
    slow = AlertDelivery.objects.create(tenant=tenant_a, channel=channel)
    mailbox.delay = 2.0
    t2 = timezone.now()
    assert alert_delivery_send(delivery_id=slow.pk, now=t2).status == AlertDelivery.Status.RETRY
    _assert_retry_scheduled(slow, t2)
    mailbox.delay = 0
    assert alert_delivery_send(delivery_id=slow.pk, now=slow.next_attempt_at).status == "delivered"
    keys = mailbox.keys
    assert keys == [f"delivery-{down.pk}", f"delivery-{slow.pk}", f"delivery-{slow.pk}"]  # the slow one twice, one key
    assert AlertDelivery.objects.filter(status=AlertDelivery.Status.DELIVERED).count() == 2
