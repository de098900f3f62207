"""Ingest -> alerts: after usage commits, queue one evaluation per tenant per debounce window.

Tenants without alert rules cost nothing (a per-process memo of which tenants have rules).
For the others the hot path pays one Redis SET NX EX (Django's cache.add) per batch; only the
batch that wins the key queues a task, delayed by the window so it sees the whole burst (the
key is set after each batch commits, so every batch that lost the race committed before the
key expired, hence before the evaluation runs). Failures are logged, never raised into ingest:
the periodic sweep evaluates anyway.
"""

import logging

from django.conf import settings
from django.core.cache import cache
from django.db import DatabaseError
from django.dispatch import receiver
from kombu.exceptions import OperationalError as BrokerError
from redis.exceptions import RedisError

from alerts import services
from metering.signals import usage_recorded

logger = logging.getLogger(__name__)


def debounce_key(tenant_id: int) -> str:
    return f"alerts-debounce:{{{tenant_id}}}"


@receiver(usage_recorded, dispatch_uid="alerts-evaluate-on-usage")
def evaluate_soon(sender: object, *, tenant_id: int, **kwargs: object) -> None:
    from alerts.tasks import alerts_evaluate_tenant  # noqa: PLC0415 - tasks import the app's services

    window = settings.ALERTS_DEBOUNCE_SECONDS
    try:
        if services.tenant_has_rules(tenant_id=tenant_id) and cache.add(debounce_key(tenant_id), 1, timeout=window):
            alerts_evaluate_tenant.apply_async(args=(tenant_id,), countdown=window)
    except (RedisError, BrokerError, OSError, DatabaseError) as exc:
        logger.warning("could not queue the alert evaluation of tenant %s: %r", tenant_id, exc)
