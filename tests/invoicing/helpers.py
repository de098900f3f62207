"""Helpers for invoicing tests: usage events with chosen times, rated like ingest rates them.

Ingest stamps received_at with the present; the close depends on when events arrived, so most
tests store events through the event store (the same INSERT ... ON CONFLICT that ingest uses)
with the times they need, rated by billing.rating with the tenant's price book, and charged to
the ledger the way ingest charges them.
"""

import datetime as dt
import hashlib
import itertools

from billing.models import LedgerEntry
from billing.rating import rate_with_basis, tier_applies
from billing.selectors import price_book_for
from billing.services.ledger import ledger_post
from metering.models import UsageEvent
from metering.services.event_store import NewEvent, insert_new

_ids = itertools.count(1)


def utc(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=dt.UTC)


def record(
    key,
    *,
    model: str = "gpt-4o",
    at: dt.datetime,
    received: dt.datetime | None = None,
    input_tokens: int = 1000,
    output_tokens: int = 500,
    cached: int = 0,
    cache_write: int = 0,
    cache_write_1h: int = 0,
    reasoning: int = 0,
    service_tier: str = "default",
    charge: bool = True,
) -> UsageEvent:
    """Store one event of `key`'s tenant as ingest would, with explicit times."""
    tenant = key.tenant
    book = price_book_for(plan_id=tenant.price_plan_id, tenant_id=tenant.pk, models={model})
    terms = book.terms_for(model, at, service_tier) if book is not None else None
    cost, cost_basis = (
        rate_with_basis(
            terms,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cached_input_tokens=cached,
            cache_write_tokens=cache_write,
            cache_write_1h_tokens=cache_write_1h,
            reasoning_tokens=reasoning,
        )
        if terms is not None
        else (None, None)
    )
    request_id = f"req-{next(_ids)}"
    currency = book.currency if book is not None else tenant.currency
    stored = insert_new(
        [
            NewEvent(
                tenant_id=tenant.pk,
                api_key_id=key.pk,
                request_id=request_id,
                model=model,
                input_tokens=input_tokens,
                output_tokens=output_tokens,
                cached_input_tokens=cached,
                cache_write_tokens=cache_write,
                occurred_at=at,
                received_at=received or at,
                latency_ms=None,
                metadata={},
                token_source="reported",
                encoding="",
                cost=cost,
                currency=currency,
                price_id=terms.price_id if terms is not None else None,
                body_hash=hashlib.sha256(request_id.encode()).hexdigest(),
                long_context=terms is not None and tier_applies(terms, input_tokens=input_tokens),
                service_tier=service_tier,
                cache_write_1h_tokens=cache_write_1h,
                reasoning_tokens=reasoning,
                cost_basis=cost_basis,
            )
        ]
    )
    event_id = stored.inserted[request_id]
    if charge and cost:
        entry, _ = ledger_post(
            tenant_id=tenant.pk,
            currency=currency,
            kind="usage",
            amount=-cost,
            idempotency_key=f"usage:{event_id}:1",
        )
        # Ingest charges at receipt: date the entry then, as the reconciliation expects.
        LedgerEntry.objects.filter(pk=entry.pk).update(created_at=received or at)
    return UsageEvent.objects.get(pk=event_id)


def record_generated(key, events: list[dict], *, year: int = 2026, month: int = 10) -> None:
    """Store generated usage (property tests: model, day, token counts) at noon UTC of each day."""
    for event in events:
        record(
            key,
            model=event["model"],
            at=dt.datetime(year, month, event["day"], 12, tzinfo=dt.UTC),
            input_tokens=event["input_tokens"],
            output_tokens=event["output_tokens"],
            cached=event["cached"],
            cache_write=event["cache_write"],
            charge=False,
        )
