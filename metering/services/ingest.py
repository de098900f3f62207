"""Recording usage: validate, rate, store exactly once, and charge the wallet.

`usage_record_batch` is the one write path for usage; the single-event endpoint is a batch of
one. Per tenant, one transaction stores the new events and posts one ledger charge for their
summed cost, so a batch costs one wallet row update, not one per event.
"""

import datetime as dt
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.utils import timezone

from accounts.models import ApiKey, Tenant
from billing import selectors as billing_selectors
from billing.rating import PriceTerms, limits_exceeded, rate_with_basis, tier_applies
from billing.services.balances import balance_backend
from billing.services.balances.limits import LimitedScopes
from billing.services.settlement import SettleResult, usage_settle_batch, usage_settle_undo_mirror
from infra.db import pipelined_atomic
from metering import metrics
from metering.models import UsageEvent
from metering.services.event_store import NewEvent, insert_new, stored_keys
from metering.signals import usage_recorded_on_commit
from metering.validation import EventInput, EventInvalid, event_time_bounds, keyed_body_hash, parse_event

ACCEPTED, DUPLICATE, REJECTED = "accepted", "duplicate", "rejected"


@dataclass(slots=True)
class ItemResult:
    index: int
    status: str
    request_id: str | None = None
    event_id: int | None = None
    error: dict[str, Any] | None = None
    http_status: int = 200  # what the single-event endpoint answers for this outcome

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"index": self.index, "status": self.status}
        if self.request_id is not None:
            data["request_id"] = self.request_id
        if self.event_id is not None:
            data["id"] = self.event_id
        if self.error is not None:
            data["error"] = self.error
        return data


@dataclass
class BatchResult:
    items: list[ItemResult]
    events: dict[int, UsageEvent | NewEvent] = field(default_factory=dict)  # by id, filled when asked for

    def count(self, status: str) -> int:
        return sum(1 for item in self.items if item.status == status)

    def counts(self) -> dict[str, int]:
        """{accepted, duplicate, rejected: n} in one pass."""
        tally = dict.fromkeys((ACCEPTED, DUPLICATE, REJECTED), 0)
        for item in self.items:
            tally[item.status] += 1
        return tally


@dataclass(frozen=True, slots=True)
class RelayFacts:
    """What the relay knows of a call besides its usage (relay/, docs/relay.md)."""

    upstream: str
    ttft_ms: int | None
    encoding: str = ""  # the tiktoken encoding when the relay counted the tokens, else ""


KeyResolver = Callable[[str | int], ApiKey]


class KeyRejected(Exception):
    """The api_key named by a service token cannot be used (unknown, revoked, suspended)."""

    def __init__(self, code: str, message: str, http_status: int) -> None:
        super().__init__(message)
        self.code, self.message, self.http_status = code, message, http_status


def _reject(
    index: int, request_id: Any, *, code: str, message: str, field_name: str | None, http_status: int
) -> ItemResult:
    rid = request_id if isinstance(request_id, str) else None
    error = {"code": code, "message": message, "field": field_name}
    return ItemResult(index=index, status=REJECTED, request_id=rid, error=error, http_status=http_status)


def usage_record_batch(
    *,
    raw_events: list[Any],
    api_key: ApiKey | None,
    resolve_key: KeyResolver | None = None,
    with_events: bool = False,
    relayed: dict[str, RelayFacts] | None = None,
) -> BatchResult:
    """Record events for `api_key`'s tenant, or (service token) for the key each event names.

    Every item gets a result in input order; a rejected item never stops the valid ones.
    `relayed` (the relay only) gives each request_id's RelayFacts.
    """
    now = timezone.now()
    bounds = event_time_bounds(
        now=now, max_past_days=settings.INGEST_MAX_PAST_DAYS, max_future_seconds=settings.INGEST_MAX_FUTURE_SECONDS
    )
    results: list[ItemResult | None] = [None] * len(raw_events)
    by_key: dict[int, list[tuple[int, EventInput]]] = defaultdict(list)
    keys: dict[int, ApiKey] = {}
    if resolve_key is not None:
        resolve_key = _once_per_ref(resolve_key)

    allow_api_key = api_key is None
    for index, raw in enumerate(raw_events):
        try:
            event = parse_event(raw, now=now, bounds=bounds, allow_api_key=allow_api_key)
            key = api_key if api_key is not None else _resolve(event, resolve_key)
            event.body_hash = keyed_body_hash(event.body_hash, key.id)
        except EventInvalid as exc:
            results[index] = _reject(
                index, _request_id(raw), code=exc.code, message=exc.message, field_name=exc.field, http_status=400
            )
            continue
        except KeyRejected as exc:
            results[index] = _reject(
                index,
                _request_id(raw),
                code=exc.code,
                message=exc.message,
                field_name="api_key",
                http_status=exc.http_status,
            )
            continue
        if key.id not in keys:
            keys[key.id] = key
        by_key[key.id].append((index, event))

    by_tenant: dict[int, list[tuple[int, EventInput, ApiKey]]] = defaultdict(list)
    for key_id, items in by_key.items():
        key = keys[key_id]
        by_tenant[key.tenant_id].extend((index, event, key) for index, event in items)

    fresh: dict[int, NewEvent] | None = {} if with_events else None
    for tenant_items in by_tenant.values():
        for item in _record_for_tenant(tenant_items, now=now, fresh=fresh, relayed=relayed):
            results[item.index] = item

    final = [item for item in results if item is not None]
    assert len(final) == len(raw_events)
    # One metric update per (outcome, reason) and request, not per event.
    tally: dict[tuple[str, str], int] = defaultdict(int)
    for item in final:
        tally[(item.status, item.error["code"] if item.status == REJECTED and item.error else "")] += 1
    for (outcome, reason), n in tally.items():
        metrics.EVENTS.labels(outcome=outcome, reason=reason).inc(n)
    events_out: dict[int, UsageEvent | NewEvent] = {}
    if fresh is not None:
        # Events stored just now are answered from memory; only replays read the stored row.
        events_out = dict(fresh)
        stored = [item.event_id for item in final if item.event_id is not None and item.event_id not in fresh]
        if stored:
            events_out.update((event.pk, event) for event in UsageEvent.objects.filter(pk__in=stored))
    return BatchResult(items=final, events=events_out)


def _request_id(raw: Any) -> Any:
    return raw.get("request_id") if isinstance(raw, dict) else None


def _once_per_ref(resolve_key: KeyResolver) -> KeyResolver:
    """Resolve each distinct api_key of a batch once (a gateway names the same few keys)."""
    seen: dict[str | int, ApiKey | KeyRejected] = {}

    def resolve(ref: str | int) -> ApiKey:
        found = seen.get(ref)
        if found is None:
            try:
                found = resolve_key(ref)
            except KeyRejected as exc:
                found = exc
            seen[ref] = found
        if isinstance(found, KeyRejected):
            raise KeyRejected(found.code, found.message, found.http_status)
        return found

    return resolve


def _resolve(event: EventInput, resolve_key: KeyResolver | None) -> ApiKey:
    if event.api_key_ref is None:
        raise EventInvalid("api_key", "A service token must name the consuming tenant key in api_key.")
    assert resolve_key is not None
    return resolve_key(event.api_key_ref)


def _record_for_tenant(
    items: list[tuple[int, EventInput, ApiKey]],
    *,
    now: dt.datetime,
    fresh: dict[int, NewEvent] | None = None,
    relayed: dict[str, RelayFacts] | None = None,
) -> list[ItemResult]:
    """Store, charge and answer one tenant's events; `fresh` (when given) gets {id: event} of those stored now."""
    tenant = items[0][2].tenant
    tenant_id = tenant.id
    out: list[ItemResult] = []
    # Repeats inside one batch: the first occurrence is the one stored.
    first_by_request: dict[str, tuple[int, EventInput, ApiKey]] = {}
    repeats: list[tuple[int, EventInput, ApiKey]] = []
    for item in items:
        if item[1].request_id in first_by_request:
            repeats.append(item)
        else:
            first_by_request[item[1].request_id] = item

    book = billing_selectors.price_book_for_tenant(tenant=tenant, models={event.model for _, event, _ in items})
    currency = book.currency if book is not None else tenant.currency
    terms_for = book.terms_for if book is not None else None
    new_events: list[NewEvent] = []
    for _, event, key in first_by_request.values():
        terms = terms_for(event.model, event.occurred_at, event.service_tier) if terms_for is not None else None
        # Dual rating: the tenant's price and, for a resold price, our cost of the same tokens.
        cost, cost_basis = (
            rate_with_basis(
                terms,
                input_tokens=event.input_tokens,
                output_tokens=event.output_tokens,
                cached_input_tokens=event.cached_input_tokens,
                cache_write_tokens=event.cache_write_tokens,
                cache_write_1h_tokens=event.cache_write_1h_tokens,
                reasoning_tokens=event.reasoning_tokens,
            )
            if terms is not None
            else (None, None)
        )
        facts = relayed.get(event.request_id) if relayed is not None else None
        new_events.append(
            NewEvent(
                tenant_id=tenant_id,
                api_key_id=key.id,
                request_id=event.request_id,
                model=event.model,
                input_tokens=event.input_tokens,
                output_tokens=event.output_tokens,
                cached_input_tokens=event.cached_input_tokens,
                cache_write_tokens=event.cache_write_tokens,
                occurred_at=event.occurred_at,
                received_at=now,
                latency_ms=event.latency_ms,
                metadata=event.metadata,
                # The relay counted the tokens itself when the upstream sent no usage.
                token_source=UsageEvent.TokenSource.COUNTED if facts and facts.encoding else event.token_source,
                encoding=facts.encoding if facts and facts.encoding else event.encoding,
                cost=cost,
                currency=currency,
                price_id=terms.price_id if terms is not None else None,
                body_hash=event.body_hash,
                flags=_flags(key, event, terms),
                long_context=terms is not None and tier_applies(terms, input_tokens=event.input_tokens),
                service_tier=event.service_tier,
                cache_write_1h_tokens=event.cache_write_1h_tokens,
                reasoning_tokens=event.reasoning_tokens,
                upstream=facts.upstream if facts else "",
                ttft_ms=facts.ttft_ms if facts else None,
                cost_basis=cost_basis,
            )
        )

    settled: SettleResult | None = None
    try:
        # The balance lock, the insert and its hold claim are one statement, sent with BEGIN
        # (pipelined); the money and quota writes go with COMMIT, after the hot counters moved.
        with pipelined_atomic():
            lock = balance_backend().lock_statement(tenant_id)  # None: the backend needs no lock
            stored = insert_new(new_events, settle_holds_at=now, lock=lock)
            inserted = stored.inserted
            stored_now = [e for e in new_events if e.request_id in inserted] if inserted else []
            unpriced = sum(1 for e in stored_now if e.cost is None)
            if stored_now:
                # One call per tenant batch: the usage charge, the holds these events settled,
                # the quota counters and the hot balance counters, in this transaction.
                settled = usage_settle_batch(
                    tenant_id=tenant_id,
                    tz_name=tenant.timezone,
                    currency=currency,
                    events=stored_now,
                    first_event_id=min(inserted.values()),
                    now=now,
                    claimed=stored.claimed,
                    limited=_limited_scopes(tenant, [key for _, _, key in items])
                    if stored.claimed
                    else LimitedScopes(),
                )
                usage_recorded_on_commit(tenant_id=tenant_id)  # alerts evaluate after commit, debounced
            missing = [rid for rid in first_by_request if rid not in inserted]
            # The keys, not the events: a key outlives its event's month when that is archived.
            existing = stored_keys(tenant_id=tenant_id, request_ids=missing) if missing else {}
    except BaseException:
        if settled is not None:
            usage_settle_undo_mirror(tenant_id=tenant_id, settled=settled)
        raise
    if unpriced:
        metrics.UNPRICED.inc(unpriced)
    if fresh is not None:
        fresh.update((inserted[event.request_id], event) for event in stored_now)

    # Stored now: accepted. Stored before (or by a concurrent request): duplicate or conflict.
    stored_hash: dict[str, tuple[int, str]] = dict(existing)
    for index, event, _ in first_by_request.values():
        event_id = inserted.get(event.request_id)
        if event_id is not None:
            out.append(ItemResult(index, ACCEPTED, event.request_id, event_id, None, 201))
            stored_hash[event.request_id] = (event_id, event.body_hash)
        else:
            out.append(_outcome(index, event, stored_hash))
    for index, event, _ in repeats:
        out.append(_outcome(index, event, stored_hash))
    return out


def _flags(key: ApiKey, event: EventInput, terms: PriceTerms | None) -> str:
    """What a control would have refused about this usage (UsageEvent.flags); "" for most."""
    flags = [] if key.allows_model(event.model) else [UsageEvent.FLAG_MODEL_NOT_ALLOWED]
    if terms is not None and limits_exceeded(terms, input_tokens=event.input_tokens, output_tokens=event.output_tokens):
        flags.append(UsageEvent.FLAG_CONTEXT_LENGTH_EXCEEDED)
    return ",".join(flags)


def _limited_scopes(tenant: Tenant, keys: list[ApiKey]) -> LimitedScopes:
    """The scopes whose token buckets and parallel slots settling holds must move."""
    return LimitedScopes(
        key_ids=frozenset(key.pk for key in keys if key.tpm_limit or key.max_parallel_requests),
        tenant=bool(tenant.tpm_limit or tenant.max_parallel_requests),
    )


def _outcome(index: int, event: EventInput, stored: dict[str, tuple[int, str]]) -> ItemResult:
    """An event whose request_id was stored before this item: a duplicate, or a conflict."""
    event_id, stored_body_hash = stored[event.request_id]
    if stored_body_hash == event.body_hash:
        return ItemResult(index=index, status=DUPLICATE, request_id=event.request_id, event_id=event_id)
    return _reject(
        index,
        event.request_id,
        code="request_id_conflict",
        message=f"request_id {event.request_id!r} was already used with a different body.",
        field_name="request_id",
        http_status=409,
    )
