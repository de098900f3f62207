"""Audit log retention (beat runs it; see CELERY_BEAT_SCHEDULE): a thin call into the service.

Not acks_late: a lost run is the next day's; the prune is idempotent (it deletes by age).
"""

import datetime as dt

from celery import shared_task
from django.conf import settings
from django.db import DatabaseError
from django.utils import timezone

from accounts.services import audit_log_prune as prune


@shared_task(name="accounts.tasks.audit_log_prune", autoretry_for=(DatabaseError,), max_retries=3, time_limit=3600)
def audit_log_prune() -> int:
    """Delete audit entries older than AUDIT_LOG_RETENTION_DAYS (0, the default: keep forever)."""
    if not settings.AUDIT_LOG_RETENTION_DAYS:
        return 0
    return prune(before=timezone.now() - dt.timedelta(days=settings.AUDIT_LOG_RETENTION_DAYS))
