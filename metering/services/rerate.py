"""Re-rating usage that was stored without a price: explicit, audited, charged once.

Ingest never drops usage for want of a price: such an event is stored with a null cost and
counted in `tokenbill_unpriced_events_total`. Once an operator adds the price, this service
rates each of those events at its own `occurred_at` (the price version in effect then), and:

- claims each row with an UPDATE filtered on `cost IS NULL`, so an event priced by another run
  (or a concurrent one) is skipped, never rated twice;
- charges the wallet for the claimed events in the same transaction, with the ledger key
  `rerate:<first claimed id>:<count>` (disjoint claims have different first ids; a replay of the
  same claim is a no-op in the ledger);
- adds the cost to the money quota counters of each event's own day, month and lifetime
  (the tokens were counted at ingest), and mirrors both into the balance backend's counters;
- writes one AuditLog entry per charge, naming the events, the amount and who asked;
- rebuilds the daily rollups of the tenant-local days whose cost changed.

A second run finds nothing to price and changes nothing. Events whose model still has no price
stay unpriced and are counted in the result.
"""

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from django.db import transaction

from accounts.models import Tenant
from accounts.services import audit_record
from billing import selectors as billing_selectors
from billing.money import round_to_ledger, to_micros
from billing.periods import local_date
from billing.rating import rate_with_basis, tier_applies
from billing.services.balances import MirrorDelta, balance_backend
from billing.services.ledger import ledger_post
from billing.services.quota_counters import quota_counters_add
from billing.windows import Cell, cells_for
from metering.models import UsageEvent
from metering.services.rollup import rollup_day

CHUNK = 1000  # events per transaction (and per ledger charge)


@dataclass
class RerateResult:
    priced: int = 0  # events priced by this run
    charged: dict[str, Decimal] = field(default_factory=dict)  # currency -> wallet charge (ledger units)
    still_unpriced: int = 0  # events whose model has no price yet (or none at their time)
    # Tenant-local days whose usage changed cost (their rollups are rebuilt).
    days: dict[int, set[dt.date]] = field(default_factory=lambda: defaultdict(set))


def usage_rerate_unpriced(*, tenant_id: int | None = None, actor_label: str) -> RerateResult:
    """Price every unpriced event (of one tenant, or all) whose price now exists."""
    if not actor_label:
        raise ValueError("actor_label is required: re-rating is audited.")
    unpriced = UsageEvent.objects.filter(cost__isnull=True)
    if tenant_id is not None:
        unpriced = unpriced.filter(tenant_id=tenant_id)
    tenant_ids = sorted(set(unpriced.values_list("tenant_id", flat=True).distinct().order_by()))
    result = RerateResult()
    for tenant in Tenant.objects.filter(pk__in=tenant_ids).order_by("pk"):
        _rerate_tenant(tenant, actor_label=actor_label, result=result)
        for day in sorted(result.days.get(tenant.pk, ())):
            rollup_day(day=day, tenants={tenant.pk: tenant.timezone})
    return result


def _rerate_tenant(tenant: Tenant, *, actor_label: str, result: RerateResult) -> None:
    unpriced = UsageEvent.objects.filter(tenant_id=tenant.pk, cost__isnull=True)
    models = set(unpriced.values_list("model", flat=True).distinct().order_by())
    book = billing_selectors.price_book_for(plan_id=tenant.price_plan_id, tenant_id=tenant.pk, models=models)
    if book is None:
        result.still_unpriced += unpriced.count()
        return
    after_id = 0
    while True:
        chunk = list(
            unpriced.filter(pk__gt=after_id)
            .order_by("pk")
            .only("pk", "api_key_id", "model", "occurred_at", "input_tokens", "output_tokens",
                  "cached_input_tokens", "cache_write_tokens")[:CHUNK]
        )  # fmt: skip
        if not chunk:
            return
        after_id = chunk[-1].pk
        rated = []
        for event in chunk:
            terms = book.terms_for(event.model, event.occurred_at)
            if terms is None:
                result.still_unpriced += 1
                continue
            cost, cost_basis = rate_with_basis(
                terms,
                input_tokens=event.input_tokens,
                output_tokens=event.output_tokens,
                cached_input_tokens=event.cached_input_tokens,
                cache_write_tokens=event.cache_write_tokens,
            )
            long_context = tier_applies(terms, input_tokens=event.input_tokens)
            rated.append((event, cost, cost_basis, terms.price_id, long_context))
        if rated:
            _price_and_charge(tenant, rated, currency=book.currency, actor_label=actor_label, result=result)


def _price_and_charge(
    tenant: Tenant, rated: list[Any], *, currency: str, actor_label: str, result: RerateResult
) -> None:
    with transaction.atomic():
        claimed = []
        for event, cost, cost_basis, price_id, long_context in rated:
            # Claim, then act: only a row that is still unpriced is priced (and charged) here.
            # Both sides of the margin are set together, from the same price version.
            changed = UsageEvent.objects.filter(pk=event.pk, cost__isnull=True).update(
                cost=cost, cost_basis=cost_basis, price_id=price_id, currency=currency, long_context=long_context
            )
            if changed:
                claimed.append((event, cost))
        if not claimed:
            return
        total = sum((cost for _, cost in claimed), Decimal(0))
        first_id, last_id = claimed[0][0].pk, claimed[-1][0].pk
        entry = None
        if total:
            entry, _ = ledger_post(
                tenant_id=tenant.pk,
                currency=currency,
                kind="usage",
                amount=-total,
                idempotency_key=f"rerate:{first_id}:{len(claimed)}",
                reference="rerate",
                actor_label=actor_label,
                metadata={"events": len(claimed), "first_event_id": first_id, "last_event_id": last_id},
            )
            _count_against_quotas(tenant, claimed)  # under the balance lock ledger_post took
        audit_record(
            action="usage.rerate",
            target=tenant,
            actor_label=actor_label,
            tenant=tenant,
            changes={
                "events": len(claimed),
                "first_event_id": first_id,
                "last_event_id": last_id,
                "cost": str(total),
                "currency": currency,
                "ledger_entry_id": entry.pk if entry is not None else None,
            },
        )
    result.priced += len(claimed)
    result.charged[currency] = result.charged.get(currency, Decimal(0)) + round_to_ledger(total)
    for event, _ in claimed:
        result.days[tenant.pk].add(local_date(event.occurred_at, tenant.timezone))


def _count_against_quotas(tenant: Tenant, claimed: list[Any]) -> None:
    """Money quota counters of each event's own windows; tokens were counted at ingest."""
    cost_by_cell: dict[Cell, Decimal] = defaultdict(Decimal)
    for event, cost in claimed:
        for cell in cells_for(event.occurred_at, tenant.timezone, event.api_key_id):
            cost_by_cell[cell] += cost
    deltas = {cell: (0, to_micros(cost)) for cell, cost in cost_by_cell.items()}
    quota_counters_add(tenant_id=tenant.pk, deltas=deltas)
    mirror = MirrorDelta()
    for cell, (_, micros) in deltas.items():
        mirror.add(cell, micros=micros)
    balance_backend().mirror(tenant.pk, mirror)
