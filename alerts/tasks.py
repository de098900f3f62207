"""Alert tasks: thin wrappers that reload by id and call one service.

Options for this family, declared once: acks_late + reject_on_worker_lost, so a worker killed
mid-task has its message redelivered instead of lost; that is safe because every step is
claim-then-act (AlertEvent is unique per rule x threshold x period, a delivery is claimed with
a conditional UPDATE and a lease). Database and broker hiccups retry with exponential backoff
and jitter. The hard time limit (90 s) stays under the delivery lease (120 s), so a stuck send
is killed before another worker may claim the same delivery.
"""

import datetime as dt

from celery import Task, shared_task
from django.conf import settings
from django.db import DatabaseError
from django.utils import timezone
from redis.exceptions import RedisError

from alerts import services
from infra.task_options import TaskOptions

MAX_COUNTDOWN = 1800  # seconds; the service says again how long to wait if it is early

ALERT_TASK_OPTIONS: TaskOptions = {
    "acks_late": True,
    "reject_on_worker_lost": True,
    "autoretry_for": (DatabaseError, RedisError),
    "retry_backoff": True,
    "retry_backoff_max": 600,
    "retry_jitter": True,
    "max_retries": 10,
    "soft_time_limit": 60,
    "time_limit": 90,
}


@shared_task(name="alerts.tasks.alerts_evaluate_tenant", **ALERT_TASK_OPTIONS)
def alerts_evaluate_tenant(tenant_id: int) -> int:
    evaluation = services.alerts_evaluate_recorded(tenant_id=tenant_id)
    for delivery_id in evaluation.due_delivery_ids:
        alert_delivery_send.delay(delivery_id)
    return len(evaluation.new_events)


@shared_task(bind=True, name="alerts.tasks.alert_delivery_send", **ALERT_TASK_OPTIONS)
def alert_delivery_send(self: Task[[int], str], delivery_id: int) -> str:
    outcome = services.alert_delivery_send(delivery_id=delivery_id)
    if outcome.retry_in is not None and not self.request.is_eager:
        # Transient failure, rate limit or another worker's lease: come back when it is due
        # (at most half the visibility timeout away: a held ETA task is not redelivered early).
        raise self.retry(countdown=min(outcome.retry_in, MAX_COUNTDOWN), max_retries=None)
    return outcome.status


@shared_task(name="alerts.tasks.alerts_sweep", **ALERT_TASK_OPTIONS)
def alerts_sweep() -> int:
    """The safety net: evaluate every tenant with rules; requeue deliveries left behind."""
    tenant_ids = services.tenants_with_rules()
    for tenant_id in tenant_ids:
        alerts_evaluate_tenant.delay(tenant_id)
    for delivery_id in services.alert_deliveries_due():
        alert_delivery_send.delay(delivery_id)
    return len(tenant_ids)


@shared_task(name="alerts.tasks.alert_deliveries_prune", autoretry_for=(DatabaseError,), max_retries=3, time_limit=3600)
def alert_deliveries_prune() -> int:
    """Delete ended deliveries older than ALERT_DELIVERY_RETENTION_DAYS (0: keep forever).
    Not acks_late: a lost run is the next day's, and the prune deletes by age (idempotent)."""
    if not settings.ALERT_DELIVERY_RETENTION_DAYS:
        return 0
    return services.alert_deliveries_prune(
        before=timezone.now() - dt.timedelta(days=settings.ALERT_DELIVERY_RETENTION_DAYS)
    )
