"""Periodic jobs, tenant by tenant: one tenant's failure is recorded and retried, never fatal.

The rollup, the alert sweep, hold expiry and the monthly close each work through many
tenants in one run. Bad data of one tenant (an event from year 1 stored before timestamps
were bounded, a time zone name no longer known) must not stop the others, nor make the job
fail on every run. So each tenant's share runs through `TenantJob.run`:

- in a savepoint, so a database error leaves the run's transaction usable;
- an error is recorded: a log line `job.tenant_failed` with the job, tenant id and exception
  class, the counter `tokenbill_job_tenant_failures_total{job}`, and a JobFailure row (shown
  on the ops page "Failing jobs") with the attempts and when the tenant is tried again;
- the job moves on to the next tenant; later runs skip the tenant until `next_retry_at`
  (exponential backoff, RETRY_FIRST doubling up to RETRY_MAX), then try again;
- the first success deletes the row.

Errors that are nobody's data (the database or Redis unreachable, a task's time limit) are
not recorded per tenant: they propagate and the task retries as a whole.
"""

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

import structlog
from celery.exceptions import SoftTimeLimitExceeded
from django.db import InterfaceError, OperationalError, transaction
from django.utils import timezone
from prometheus_client import Counter
from redis.exceptions import RedisError

from billing.models import JobFailure
from billing.services.balances.base import BalanceUnavailable

log = structlog.get_logger(__name__)

ROLLUP = "rollup"
ALERTS = "alerts"
HOLDS = "holds"
INVOICES_CLOSE = "invoices_close"
JOBS = (ROLLUP, ALERTS, HOLDS, INVOICES_CLOSE)

RETRY_FIRST = dt.timedelta(minutes=5)
RETRY_MAX = dt.timedelta(hours=6)
# Failures of the platform, not of a tenant's data: the whole task retries (its autoretry_for).
NOT_THE_TENANTS = (OperationalError, InterfaceError, RedisError, BalanceUnavailable, SoftTimeLimitExceeded)

TENANT_FAILURES = Counter(
    "tokenbill_job_tenant_failures_total",
    "Tenants a periodic job failed for (the job went on with the others), by job.",
    ["job"],
)

T = TypeVar("T")


def retry_delay(attempts: int) -> dt.timedelta:
    """How long after its `attempts`-th failure a tenant is tried again."""
    delay: dt.timedelta = RETRY_FIRST * 2 ** min(attempts - 1, 20)
    return min(delay, RETRY_MAX)


def _describe(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".splitlines()[0] if str(exc) else type(exc).__name__
    return text[:500]


@dataclass
class TenantJob:
    """One run of a job over many tenants. Start it with `TenantJob.begin(job)`."""

    job: str
    now: dt.datetime
    failures: dict[int, JobFailure]  # the job's failing tenants as the run began
    failed: dict[int, JobFailure] = field(default_factory=dict)  # tenants that failed in this run

    retry_now: bool = False  # an operator fixed the data: try every failing tenant in this run

    @classmethod
    def begin(cls, job: str, *, now: dt.datetime | None = None, retry_now: bool = False) -> "TenantJob":
        assert job in JOBS, job
        failures = {failure.tenant_id: failure for failure in JobFailure.objects.filter(job=job)}
        return cls(job=job, now=now or timezone.now(), failures=failures, retry_now=retry_now)

    def due(self, tenant_id: int) -> bool:
        """False while a failing tenant waits for its next retry."""
        failure = self.failures.get(tenant_id)
        return failure is None or self.retry_now or failure.next_retry_at <= self.now

    def retries_due(self) -> list[JobFailure]:
        """The failing tenants whose next try is due (a job with its own tenant list adds them)."""
        return [failure for failure in self.failures.values() if self.due(failure.tenant_id)]

    def run(
        self,
        tenant_id: int,
        work: Callable[[], T],
        *,
        resume_from: dt.datetime | None = None,
        settle: bool = True,
        savepoint: bool = True,
    ) -> T | None:
        """`work()` for one tenant; on a failure of the tenant's own, record it (with
        `resume_from`, where the job must pick up again) and return None.

        `savepoint`: run it in one (False for work that writes nothing, or opens its own
        transactions and should commit as it goes). `settle`: a success clears the tenant's
        failure (False when this is only part of the tenant's work: call `succeed` after all).
        """
        try:
            if savepoint:
                with transaction.atomic():
                    result = work()
            else:
                result = work()
        except NOT_THE_TENANTS:
            raise
        except Exception as exc:  # noqa: BLE001 - recorded, counted and retried; the other tenants go on
            self.fail(tenant_id, exc, resume_from=resume_from)
            return None
        if settle:
            self.succeed(tenant_id)
        return result

    def fail(self, tenant_id: int, exc: BaseException, *, resume_from: dt.datetime | None = None) -> JobFailure:
        """Record that the job failed for this tenant now (once per run: the first error counts)."""
        if tenant_id in self.failed:
            return self.failed[tenant_id]
        TENANT_FAILURES.labels(job=self.job).inc()
        previous = self.failures.get(tenant_id)
        attempts = previous.attempts + 1 if previous is not None else 1
        if previous is not None and previous.resume_from is not None:
            resume_from = min(previous.resume_from, resume_from or previous.resume_from)
        failure, _ = JobFailure.objects.update_or_create(
            job=self.job,
            tenant_id=tenant_id,
            defaults={
                "error": _describe(exc),
                "last_seen": self.now,
                "attempts": attempts,
                "next_retry_at": self.now + retry_delay(attempts),
                "resume_from": resume_from,
            },
            create_defaults={
                "error": _describe(exc),
                "first_seen": self.now,
                "last_seen": self.now,
                "attempts": attempts,
                "next_retry_at": self.now + retry_delay(attempts),
                "resume_from": resume_from,
            },
        )
        self.failed[tenant_id] = failure
        log.warning(
            "job.tenant_failed",
            job=self.job,
            tenant_id=tenant_id,
            error=type(exc).__name__,
            attempts=attempts,
            next_retry_at=failure.next_retry_at.isoformat(),
            exc_info=exc,
        )
        return failure

    def succeed(self, tenant_id: int) -> None:
        """The job did its work for this tenant: forget an earlier failure."""
        if tenant_id in self.failed:
            return  # failed earlier in this same run (another day, another batch): keep it
        if tenant_id in self.failures and JobFailure.objects.filter(job=self.job, tenant_id=tenant_id).delete()[0]:
            log.info("job.tenant_recovered", job=self.job, tenant_id=tenant_id)
            del self.failures[tenant_id]
