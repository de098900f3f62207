"""What metering tells the layers above it (alerts) without importing them."""

import logging

from django.db import transaction
from django.dispatch import Signal

logger = logging.getLogger(__name__)

# Sent once the transaction that stored new usage for a tenant has committed; kwargs: tenant_id.
usage_recorded = Signal()


def usage_recorded_on_commit(*, tenant_id: int) -> None:
    """Call inside the ingest transaction. A failing receiver never fails the ingest request."""
    transaction.on_commit(lambda: _send(tenant_id))


def _send(tenant_id: int) -> None:
    for receiver, result in usage_recorded.send_robust(sender=usage_recorded, tenant_id=tenant_id):
        if isinstance(result, Exception):
            logger.warning("usage_recorded receiver %r failed: %r", receiver, result)
