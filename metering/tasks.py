"""Rollup and unpriced-usage tasks (beat runs them; see CELERY_BEAT_SCHEDULE): thin calls into their services.

Options for this family, declared once: acks_late + reject_on_worker_lost, so a worker lost
mid-rebuild has its task redelivered (a rebuild is idempotent: running it twice, or in two
workers at once, gives the same rows); database errors retry with exponential backoff; time
limits far under the broker's visibility timeout (an hour) so a slow run is not redelivered
while still running.
"""

import datetime as dt

from celery import shared_task
from django.db import DatabaseError
from django.utils import timezone

from infra.task_options import TaskOptions
from metering.services import archive, rollup, unpriced

ROLLUP_TASK_OPTIONS: TaskOptions = {
    "acks_late": True,
    "reject_on_worker_lost": True,
    "autoretry_for": (DatabaseError,),
    "retry_backoff": True,
    "retry_backoff_max": 300,
    "retry_jitter": True,
    "max_retries": 5,
    "soft_time_limit": 15 * 60,
    "time_limit": 20 * 60,
}


@shared_task(name="metering.tasks.rollup_refresh", **ROLLUP_TASK_OPTIONS)
def rollup_refresh() -> int:
    """Fold events received since the last run into their tenant-days."""
    return len(rollup.rollup_refresh())


@shared_task(name="metering.tasks.rollup_finalize", **ROLLUP_TASK_OPTIONS)
def rollup_finalize() -> int:
    """Rebuild each tenant's previous local day in the first hours after its midnight."""
    return len(rollup.rollup_finalize())


@shared_task(name="metering.tasks.rollup_day", **ROLLUP_TASK_OPTIONS)
def rollup_day(day: str) -> int:
    """Rebuild one local day (ISO date) for every tenant."""
    return rollup.rollup_day(day=dt.date.fromisoformat(day)).groups


@shared_task(
    name="metering.tasks.unpriced_usage_check",
    # Not acks_late: a lost run is simply the next one (beat, UNPRICED_CHECK_SECONDS); the
    # claim rows make a run twice send nothing twice. Database errors retry with backoff.
    autoretry_for=(DatabaseError,),
    retry_backoff=True,
    max_retries=3,
    soft_time_limit=5 * 60,
    time_limit=6 * 60,
)
def unpriced_usage_check() -> int:
    """Log still-unpriced usage; email staff about each model at most once a day."""
    return len(unpriced.unpriced_usage_check().notified)


# Retention (docs/operations.md "Retention"). Not acks_late: a run lost with its worker is the
# next one; both are idempotent (a partition is created once; a month is archived once, in one
# transaction, and an archived month is skipped). Long time limits: archiving a busy month
# reads and writes gigabytes.
@shared_task(name="metering.tasks.usage_partitions_ensure", autoretry_for=(DatabaseError,), max_retries=3)
def usage_partitions_ensure() -> int:
    """Create the usage table's monthly partitions ahead of time (PostgreSQL)."""
    return len(archive.usage_partitions_ensure(now=timezone.now()))


@shared_task(name="metering.tasks.usage_archive_due", soft_time_limit=3 * 3600, time_limit=3 * 3600 + 300)
def usage_archive_due() -> int:
    """Archive the usage months older than USAGE_RETENTION_MONTHS."""
    return len(archive.usage_archive_due(now=timezone.now()))
