"""The monthly close: every tenant's draft refreshed and, once its grace period is over, issued.

Each tenant is its own transaction; one whose data breaks its close is recorded (JobFailure)
and retried with backoff, and the other tenants are closed.
"""

import datetime as dt
import functools
import zoneinfo
from dataclasses import dataclass

from django.conf import settings
from django.utils import timezone

from accounts.models import Tenant
from billing.periods import month_period
from billing.services import tenant_jobs
from billing.services.tenant_jobs import TenantJob
from invoicing import selectors
from invoicing.models import Invoice
from invoicing.services.drafts import invoice_draft_refresh
from invoicing.services.errors import InvoiceError
from invoicing.services.finalize import invoice_finalize
from invoicing.services.periods import period_label, previous_month


@dataclass
class CloseResult:
    tenant: str
    period: str
    outcome: str  # created / updated / unchanged / finalized / already issued / skipped / failed
    invoice: Invoice | None = None
    message: str = ""


FAILED = "failed"  # the tenant's data broke its close: recorded (JobFailure), retried with backoff


def invoices_close_month(
    *,
    year: int,
    month: int,
    tenant: Tenant | None = None,
    finalize: bool = False,
    actor_label: str = "",
    now: dt.datetime | None = None,
) -> list[CloseResult]:
    """Draft (and with finalize, issue) the month's invoice of every tenant, or of one.

    Idempotent: a second run creates nothing new. Each tenant is its own transaction.
    """
    now = now or timezone.now()
    job = TenantJob.begin(tenant_jobs.INVOICES_CLOSE, now=now)
    tenants = [tenant] if tenant is not None else selectors.tenants_to_bill()
    label = period_label(year, month)
    results = []
    for one in tenants:
        # Each tenant is its own transaction; one whose data breaks the close is recorded.
        result = job.run(
            one.pk,
            functools.partial(
                _close_month_of, tenant=one, year=year, month=month, finalize=finalize, actor_label=actor_label, now=now
            ),
        )
        results.append(result or _failed(job, one, label))
    return results


def _failed(job: TenantJob, tenant: Tenant, label: str) -> CloseResult:
    return CloseResult(tenant.slug, label, FAILED, None, job.failed[tenant.pk].error)


def _close_month_of(
    *, tenant: Tenant, year: int, month: int, finalize: bool, actor_label: str, now: dt.datetime
) -> CloseResult:
    label = period_label(year, month)
    try:
        invoice, changed = invoice_draft_refresh(tenant=tenant, year=year, month=month, now=now, skip_empty=True)
    except InvoiceError as exc:
        return CloseResult(tenant.slug, label, "skipped", None, str(exc))
    if invoice is None:
        return CloseResult(tenant.slug, label, "no usage")
    if not invoice.is_draft:
        return CloseResult(tenant.slug, label, "already issued", invoice)
    outcome = "updated" if changed else "unchanged"
    if finalize:
        try:
            invoice, done = invoice_finalize(invoice=invoice, actor_label=actor_label, now=now)
        except InvoiceError as exc:
            return CloseResult(tenant.slug, label, "draft", invoice, str(exc))
        outcome = "finalized" if done else "already issued"
    return CloseResult(tenant.slug, label, outcome, invoice)


def invoices_close_due(*, now: dt.datetime | None = None) -> list[CloseResult]:
    """The periodic close: refresh each tenant's draft for last month (tenant-local) and issue
    every draft whose grace period is over, oldest first."""
    now = now or timezone.now()
    job = TenantJob.begin(tenant_jobs.INVOICES_CLOSE, now=now)
    results: list[CloseResult] = []
    for tenant in selectors.tenants_to_bill():
        if not job.due(tenant.pk):
            continue  # its data broke an earlier close; tried again when its retry is due
        # Each tenant is its own transaction (a number taken by a close that then fails is
        # rolled back with it: numbers stay gapless); one whose data breaks it is recorded.
        done = job.run(tenant.pk, functools.partial(_close_due_of, tenant=tenant, now=now))
        results.extend(done if done is not None else [_failed(job, tenant, "")])
    return results


def _close_due_of(*, tenant: Tenant, now: dt.datetime) -> list[CloseResult]:
    grace = dt.timedelta(days=settings.INVOICE_GRACE_DAYS)
    settle = dt.timedelta(seconds=settings.INVOICE_SETTLE_SECONDS)
    results = []
    local = now.astimezone(zoneinfo.ZoneInfo(tenant.timezone))
    current = month_period(local.year, local.month, tenant.timezone)
    year, month = previous_month(local.year, local.month)
    try:
        invoice_draft_refresh(tenant=tenant, year=year, month=month, now=now, skip_empty=True)
    except InvoiceError as exc:
        results.append(CloseResult(tenant.slug, period_label(year, month), "skipped", None, str(exc)))
    for draft in selectors.invoice_drafts_between(tenant_id=tenant.pk, after=None, before=current.start):
        if now < draft.period_end + max(grace, settle):
            continue
        try:
            invoice, done = invoice_finalize(invoice=draft, actor_label="close_due", now=now)
        except InvoiceError as exc:
            results.append(CloseResult(tenant.slug, draft.period, "draft", draft, str(exc)))
            break
        results.append(CloseResult(tenant.slug, draft.period, "finalized" if done else "already issued", invoice))
    return results
