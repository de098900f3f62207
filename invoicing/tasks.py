"""Celery tasks for the monthly close: thin, idempotent, safe from two schedulers at once.

The service claims each draft with SELECT ... FOR UPDATE and re-checks its state, so a
redelivered or doubly scheduled run finalizes nothing twice and numbers stay gapless.
"""

from typing import Any

from celery import shared_task

from invoicing import services


# acks_late + reject_on_worker_lost: a worker lost mid-close gives the task back to the queue
# (acks_late alone covers a whole worker killed; a pool child killed, by the OOM killer say, is
# otherwise acknowledged as failed and the close waits for the next hourly run); the run is
# idempotent. time_limit: a month's close is a few queries per tenant; far below the broker's visibility.
@shared_task(acks_late=True, reject_on_worker_lost=True, time_limit=1800, soft_time_limit=1700)
def invoices_close_due() -> dict[str, Any]:
    results = services.invoices_close_due()
    counts: dict[str, int] = {}
    for result in results:
        counts[result.outcome] = counts.get(result.outcome, 0) + 1
    return counts
