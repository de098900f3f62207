"""Periodic jobs' failures per tenant, for the ops page."""

import datetime as dt
from dataclasses import dataclass

from billing.models import JobFailure


@dataclass(frozen=True)
class FailingTenant:
    job: str
    tenant_id: int
    tenant_slug: str
    tenant_name: str
    error: str
    first_seen: dt.datetime
    last_seen: dt.datetime
    attempts: int
    next_retry_at: dt.datetime


def failing_tenants() -> list[FailingTenant]:
    """Every tenant a periodic job is failing for (billing/services/tenant_jobs.py), the
    longest-failing first: the ops page "Failing jobs"."""
    rows = JobFailure.objects.select_related("tenant").order_by("first_seen", "job", "tenant_id")
    return [
        FailingTenant(
            job=row.job,
            tenant_id=row.tenant_id,
            tenant_slug=row.tenant.slug,
            tenant_name=row.tenant.name,
            error=row.error,
            first_seen=row.first_seen,
            last_seen=row.last_seen,
            attempts=row.attempts,
            next_retry_at=row.next_retry_at,
        )
        for row in rows
    ]
