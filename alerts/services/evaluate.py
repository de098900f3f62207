"""Evaluating: claim, then act.

`alerts_evaluate` measures each enabled rule of a tenant (measures.py) and, for every
threshold crossed, claims the AlertEvent (rule, threshold, period) with an INSERT that the
unique constraint lets through once (get_or_create in a transaction); the one claim that wins
also writes a pending AlertDelivery per channel in the same transaction. A second evaluation of
the same facts (a redelivered task, two workers, two schedulers) finds the event and writes
nothing.
"""

import datetime as dt
import functools
import logging
from dataclasses import dataclass

from django.db import transaction
from django.utils import timezone

from accounts.models import Tenant
from alerts.models import AlertDelivery, AlertEvent, AlertRule
from alerts.services.deliveries import deliveries_due
from alerts.services.measures import MEASURES, Crossing, _Tenant
from billing.services import tenant_jobs
from billing.services.tenant_jobs import TenantJob

logger = logging.getLogger(__name__)


@dataclass
class Evaluation:
    new_events: list[AlertEvent]
    due_delivery_ids: list[int]  # queue a send for each (new ones and any left unsent)


def _claim(rule: AlertRule, crossing: Crossing, now: dt.datetime, currency: str) -> AlertEvent | None:
    """Create the event and its deliveries, or nothing if this alert was already claimed."""
    with transaction.atomic():
        event, created = AlertEvent.objects.get_or_create(
            rule=rule,
            threshold=crossing.threshold,
            period=crossing.period,
            defaults={
                "tenant_id": rule.tenant_id,
                "fired_at": now,
                "usage": crossing.usage,
                "limit": crossing.limit,
                "details": crossing.details | {"kind": rule.kind, "currency": currency, "period": crossing.period},
            },
        )
        if not created:
            return None
        AlertDelivery.objects.bulk_create(
            AlertDelivery(tenant_id=rule.tenant_id, event=event, channel=channel)
            for channel in rule.channels.filter(enabled=True)
        )
    return event


def alerts_evaluate(*, tenant_id: int, now: dt.datetime | None = None) -> Evaluation:
    """Measure every enabled rule of the tenant and claim each newly crossed threshold."""
    now = now or timezone.now()
    tenant = Tenant.objects.filter(pk=tenant_id).first()
    if tenant is None:
        return Evaluation([], [])
    ctx = _Tenant(tenant, now)
    new_events = []
    rules = AlertRule.objects.filter(tenant_id=tenant_id, enabled=True).select_related("quota", "api_key")
    for rule in rules:
        for crossing in MEASURES[rule.kind](rule, ctx):
            event = _claim(rule, crossing, now, tenant.currency)
            if event is not None:
                logger.info("alert %s: rule %s %s %s", event.pk, rule.pk, crossing.threshold, crossing.period)
                new_events.append(event)
    due = AlertDelivery.objects.filter(tenant_id=tenant_id).filter(deliveries_due(now))
    return Evaluation(new_events, list(due.values_list("pk", flat=True)))


def alerts_evaluate_recorded(*, tenant_id: int, now: dt.datetime | None = None) -> Evaluation:
    """`alerts_evaluate` for the tasks: a failure of the tenant's own data (a time zone no longer
    known, ...) is recorded and retried with backoff (billing/services/tenant_jobs.py) instead of
    raised, so the sweep goes on with the other tenants; skipped while that retry is not due."""
    job = TenantJob.begin(tenant_jobs.ALERTS, now=now)
    if not job.due(tenant_id):
        return Evaluation([], [])
    evaluation = job.run(tenant_id, functools.partial(alerts_evaluate, tenant_id=tenant_id, now=job.now))
    return evaluation if evaluation is not None else Evaluation([], [])
