"""Balance upkeep tasks (beat runs them; see CELERY_BEAT_SCHEDULE): thin calls into services.

Options for this family, declared once: acks_late + reject_on_worker_lost so a lost worker's
run is redelivered (both services are idempotent and safe in two schedulers at once: expired
holds are claimed with a conditional UPDATE, and reconciling SETs values read under the
tenant's balance lock); transient database or Redis errors retry with backoff; short time
limits because both run every few minutes anyway.

Each task is registered under its module path and function name (the names beat schedules and
queued messages carry) and is named like the service it calls.
"""

import datetime as dt

import structlog
from celery import shared_task
from django.conf import settings
from django.db import DatabaseError
from django.utils import timezone
from redis.exceptions import RedisError

from billing.services import holds, reconcile
from infra.task_options import TaskOptions

log = structlog.get_logger(__name__)

BALANCE_TASK_OPTIONS: TaskOptions = {
    "acks_late": True,
    "reject_on_worker_lost": True,
    "autoretry_for": (DatabaseError, RedisError),
    "retry_backoff": True,
    "retry_backoff_max": 120,
    "retry_jitter": True,
    "max_retries": 5,
    "soft_time_limit": 5 * 60,
    "time_limit": 6 * 60,
}


@shared_task(name="billing.tasks.holds_release_expired", **BALANCE_TASK_OPTIONS)
def holds_release_expired() -> int:
    """Give back the reservation of every hold whose usage never came."""
    result = holds.holds_release_expired()
    if result.released:
        log.info("holds.released", holds=result.released, tenants=result.tenants, amount=str(result.amount))
    return result.released


@shared_task(name="billing.tasks.balances_reconcile", **BALANCE_TASK_OPTIONS)
def balances_reconcile() -> int:
    """Compare the hot counters with the ledger, fix drift, and report it (0 when clean)."""
    report = reconcile.balances_reconcile(fix=True)
    drifted = len(report.wallets) + len(report.drifts)
    if drifted:
        log.warning("balances.drift_fixed", wallets=len(report.wallets), counters=len(report.drifts))
    return drifted


@shared_task(name="billing.tasks.holds_prune_closed", autoretry_for=(DatabaseError,), max_retries=3, time_limit=3600)
def holds_prune_closed() -> int:
    """Delete holds closed more than HOLD_RETENTION_DAYS ago (0: keep forever). Not acks_late:
    a lost run is the next day's, and the prune deletes by age (idempotent)."""
    if not settings.HOLD_RETENTION_DAYS:
        return 0
    return holds.holds_prune_closed(before=timezone.now() - dt.timedelta(days=settings.HOLD_RETENTION_DAYS))
