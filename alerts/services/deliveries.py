"""Delivering: a delivery sent once, retried, recorded.

`alert_delivery_send` claims the row with an UPDATE filtered on its state (pending, retry due,
or a sending lease that expired), sends through the channel's transport, and records the
outcome: delivered, retry later (transient error, exponential backoff) or failed (permanent
error, or out of attempts). A worker that dies after the claim leaves a lease that expires;
the redelivered task (acks_late) or the sweep then sends it. An exception between claim and
send releases the claim, so the rerun sends right away.
"""

import datetime as dt
import logging
from dataclasses import dataclass

from django.db.models import F, Q
from django.utils import timezone
from kombu.exceptions import OperationalError as BrokerError
from redis.exceptions import RedisError

from alerts.messages import render_delivery
from alerts.models import AlertDelivery
from infra.notifications import TransportError, get_transport
from infra.retention import delete_in_batches

logger = logging.getLogger(__name__)

LEASE = dt.timedelta(seconds=120)  # longer than a send can take (tasks' hard time limit is 90 s)
MAX_ATTEMPTS = 8  # transient failures, then the delivery is failed
SWEEP_GRACE = dt.timedelta(seconds=60)  # the sweep leaves fresh work to its own task


def deliveries_due(now: dt.datetime, grace: dt.timedelta | None = None) -> Q:
    """Deliveries that may be sent at `now`; with a grace, only those left alone that long."""
    pending = Q(status=AlertDelivery.Status.PENDING)
    if grace is not None:
        pending &= Q(created_at__lte=now - grace)
    retry_at = now - grace if grace is not None else now
    return (
        pending
        | Q(status=AlertDelivery.Status.RETRY, next_attempt_at__lte=retry_at)
        | Q(status=AlertDelivery.Status.SENDING, lease_expires_at__lte=now)
    )


def alert_deliveries_due(*, now: dt.datetime | None = None) -> list[int]:
    """Deliveries the sweep should (re)queue: unsent, retry due, or a lapsed lease."""
    now = now or timezone.now()
    return list(AlertDelivery.objects.filter(deliveries_due(now, SWEEP_GRACE)).values_list("pk", flat=True)[:1000])


@dataclass(frozen=True)
class DeliveryOutcome:
    status: str
    retry_in: float | None = None  # seconds until it may be tried again (None: nothing to do)
    error: str = ""


def _backoff(attempts: int) -> float:
    return float(min(30 * 2 ** max(attempts - 1, 0), 3600))


def _claim_delivery(delivery_id: int, now: dt.datetime) -> bool:
    return bool(
        AlertDelivery.objects.filter(pk=delivery_id)
        .filter(deliveries_due(now))
        .update(status=AlertDelivery.Status.SENDING, attempts=F("attempts") + 1, lease_expires_at=now + LEASE,
                updated_at=now)
    )  # fmt: skip


def alert_delivery_send(*, delivery_id: int, now: dt.datetime | None = None) -> DeliveryOutcome:
    """Send one delivery if it is due and this caller wins the claim; record the outcome."""
    now = now or timezone.now()
    if not _claim_delivery(delivery_id, now):
        current = AlertDelivery.objects.filter(pk=delivery_id).first()
        if current is None:
            return DeliveryOutcome("missing")
        wake = current.next_attempt_at if current.status == AlertDelivery.Status.RETRY else current.lease_expires_at
        if current.status in (AlertDelivery.Status.RETRY, AlertDelivery.Status.SENDING) and wake is not None:
            return DeliveryOutcome(current.status, retry_in=max((wake - now).total_seconds(), 1.0))
        return DeliveryOutcome(current.status)
    delivery = AlertDelivery.objects.select_related("channel", "event__rule", "tenant").get(pk=delivery_id)
    sending = AlertDelivery.objects.filter(pk=delivery_id, status=AlertDelivery.Status.SENDING)
    try:
        message = render_delivery(delivery)
        result = get_transport(delivery.channel.kind).send(delivery.channel.config, message)
    except TransportError as exc:
        attempts = delivery.attempts + max(exc.attempts - 1, 0)
        if exc.attempts == 0:  # deferred before any request (rate limit): not an attempt
            attempts = delivery.attempts - 1
        give_up = exc.permanent or attempts >= MAX_ATTEMPTS
        if exc.attempts == 0 and exc.retry_after is not None:
            retry_in: float | None = exc.retry_after  # deferred (rate limit): exactly as long as needed
        else:
            retry_in = None if give_up else max(exc.retry_after or 0, _backoff(attempts))
        status = AlertDelivery.Status.FAILED if give_up else AlertDelivery.Status.RETRY
        sending.update(
            status=status,
            attempts=attempts,
            error=str(exc)[:2000],
            error_kind=exc.kind,
            next_attempt_at=None if retry_in is None else now + dt.timedelta(seconds=retry_in),
            lease_expires_at=None,
            updated_at=timezone.now(),
        )
        logger.warning("delivery %s %s (%s): %s", delivery_id, status, exc.kind, exc)
        return DeliveryOutcome(status, retry_in=retry_in, error=str(exc))
    except BaseException as exc:
        # Crashed between the claim and a known outcome: hand the delivery back so the rerun
        # (task retry or the sweep) sends it, instead of waiting for the lease to lapse; a
        # delivery that keeps crashing stops after MAX_ATTEMPTS.
        exhausted = delivery.attempts >= MAX_ATTEMPTS
        logger.warning("delivery %s crashed after its claim: %r", delivery_id, exc)  # the detail stays here
        sending.update(
            status=AlertDelivery.Status.FAILED if exhausted else AlertDelivery.Status.PENDING,
            error=f"interrupted ({type(exc).__name__})",
            error_kind=AlertDelivery.ErrorKind.TRANSIENT,
            lease_expires_at=None,
            updated_at=timezone.now(),
        )
        raise
    sending.update(
        status=AlertDelivery.Status.DELIVERED,
        attempts=delivery.attempts + result.attempts - 1,
        error="",
        error_kind="",
        delivered_at=timezone.now(),
        lease_expires_at=None,
        next_attempt_at=None,
        updated_at=timezone.now(),
    )
    return DeliveryOutcome(AlertDelivery.Status.DELIVERED)


def _queue_delivery(delivery_id: int) -> None:
    from alerts.tasks import alert_delivery_send as send_task  # noqa: PLC0415 - tasks import this module

    try:
        send_task.delay(delivery_id)
    except (RedisError, BrokerError, OSError) as exc:  # the row is written: the sweep sends it
        logger.warning("could not queue delivery %s, the sweep will: %r", delivery_id, exc)


def alert_deliveries_prune(*, before: dt.datetime) -> int:
    """Delete deliveries that ended (delivered or failed) and were created before `before`
    (ALERT_DELIVERY_RETENTION_DAYS). Pending and retrying ones stay; so do the alert events,
    which keep an alert from being sent twice in its period."""
    ended = AlertDelivery.objects.filter(
        status__in=[AlertDelivery.Status.DELIVERED, AlertDelivery.Status.FAILED], created_at__lt=before
    )
    return delete_in_batches(ended)
