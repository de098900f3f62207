"""Drafts of different tenants finalized at the same instant race for the same number counter.

Each draft's own row lock keeps two workers of one invoice apart, but it does nothing for two
different invoices: only the counter row's lock (SELECT ... FOR UPDATE in _allocate_number) keeps
their numbers unique and gap-free. The test makes the race certain instead of likely: it holds
the counter row itself, starts the workers, and waits until PostgreSQL shows every one of them
inside the counter query and waiting for a lock. Only then does it let go, so all of them reach
the counter before any of them has written it. With the lock, they queue and read one another's
value; without it, each has already read the same last value and they issue the same number.
"""

import datetime as dt
import threading
import time

import pytest
from django.db import connection, transaction
from django.utils import timezone

from invoicing import services
from invoicing.models import Invoice, NumberSequence
from tests import factories
from tests.invoicing.helpers import record

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

WORKERS = 3


def _last_month(now: dt.datetime) -> tuple[int, int]:
    return (now.year - 1, 12) if now.month == 1 else (now.year, now.month - 1)


def _backend_pid() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return cursor.fetchone()[0]


def _waiting_at_the_counter(pids: list[int]) -> set[int]:
    """The backends among `pids` that hold a lock on the counter table (they are in the counter
    query) and wait for a row lock they have not been granted (live, from pg_locks)."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT DISTINCT waiting.pid FROM pg_locks waiting
            WHERE NOT waiting.granted AND waiting.pid = ANY(%s)
              AND EXISTS (
                SELECT 1 FROM pg_locks held
                WHERE held.pid = waiting.pid AND held.granted AND held.locktype = 'relation'
                  AND held.relation = %s::regclass
              )
            """,
            [pids, NumberSequence._meta.db_table],
        )
        return {row[0] for row in cursor.fetchall()}


def test_drafts_of_different_tenants_finalized_at_once_get_unique_gapless_numbers(settings, plan):
    settings.INVOICE_SETTLE_SECONDS = 0
    now = timezone.now()
    year, month = _last_month(now)
    drafts = []
    for index in range(WORKERS + 1):
        tenant = factories.TenantFactory(slug=f"race-{index}", price_plan=plan)
        key, _ = factories.issue_api_key(tenant)
        record(key, at=dt.datetime(year, month, 2 + index, 12, tzinfo=dt.UTC), input_tokens=1000 * (index + 1))
        draft, _ = services.invoice_draft_refresh(tenant=tenant, year=year, month=month, now=now)
        drafts.append(draft)
    # The first invoice of the year creates the counter row; the others race on that row.
    first, _ = services.invoice_finalize(invoice=drafts[0], actor_label="test", now=now)
    assert first.number == f"INV-{now.year}-000001"

    pids: list[int] = []
    errors: list[BaseException] = []
    issued: list[tuple[int, bool]] = []
    ready = threading.Barrier(WORKERS + 1)

    def worker(draft: Invoice) -> None:
        try:
            pids.append(_backend_pid())
            ready.wait(timeout=10)
            invoice, finalized_now = services.invoice_finalize(invoice=draft, actor_label="test", now=now)
            issued.append((invoice.pk, finalized_now))
        except BaseException as exc:  # reported by the assertions below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, args=(draft,)) for draft in drafts[1:]]
    with transaction.atomic():
        NumberSequence.objects.select_for_update().get(kind=NumberSequence.Kind.INVOICE, year=now.year)
        for thread in threads:
            thread.start()
        ready.wait(timeout=10)
        deadline = time.monotonic() + 30
        while _waiting_at_the_counter(pids) != set(pids):
            assert time.monotonic() < deadline, "the workers never all reached the number counter"
            time.sleep(0.02)
        # Every worker is now in the counter query, blocked by this transaction: release them.
    for thread in threads:
        thread.join(timeout=60)

    assert errors == []
    assert sorted(issued) == sorted((draft.pk, True) for draft in drafts[1:])
    numbers = sorted(Invoice.objects.filter(pk__in=[d.pk for d in drafts]).values_list("number", flat=True))
    assert numbers == [f"INV-{now.year}-{n:06d}" for n in range(1, WORKERS + 2)]
    assert NumberSequence.objects.get(kind=NumberSequence.Kind.INVOICE, year=now.year).last_value == WORKERS + 1
