"""Quotas and their usage: one read model (QuotaCounter cells) for authorize, GET /balance,
alerts and the dashboard's gauges."""

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Protocol

from django.db.models import F, Q
from django.utils import timezone

from accounts.models import Tenant
from billing.models import Quota, QuotaCounter
from billing.money import from_micros
from billing.windows import PERIODS, TENANT_SCOPE, Cell, window_period, window_starts


def tenant_quotas(*, tenant_id: int, api_key_id: int | None = None) -> list[Quota]:
    """The tenant's quotas (tenant-wide first, then per key); only one key's when api_key_id is set."""
    quotas = Quota.objects.filter(tenant_id=tenant_id).select_related("api_key")
    if api_key_id is not None:
        quotas = quotas.filter(api_key_id=api_key_id)
    return list(quotas.order_by(F("api_key_id").asc(nulls_first=True), "id"))


def quota_for_tenant(*, tenant_id: int, quota_id: int) -> Quota | None:
    return Quota.objects.filter(tenant_id=tenant_id, pk=quota_id).first()


@dataclass(frozen=True, slots=True)
class CellUsage:
    """One quota cell: settled usage and what open holds reserve in it (tokens, micro-units)."""

    tokens: int = 0
    micros: int = 0
    held_tokens: int = 0
    held_micros: int = 0


def quota_cells_usage(*, tenant_id: int, tz_name: str, cells: Iterable[Cell]) -> dict[Cell, CellUsage]:
    """Settled usage and open-hold reservations of each cell (QuotaCounter rows): one query.

    `tz_name` is the tenant's zone, which the cells' start dates are already cut in.
    """
    cells = list(cells)
    if not cells:
        return {}
    rows = QuotaCounter.objects.filter(
        tenant_id=tenant_id,
        period_start__in={cell.start for cell in cells},
        api_key_ref__in={cell.api_key_ref for cell in cells},
    ).values_list("api_key_ref", "period", "period_start", "tokens", "micros", "held_tokens", "held_micros")
    found = {Cell(ref, period, start): CellUsage(*values) for ref, period, start, *values in rows}
    return {cell: found.get(cell, CellUsage()) for cell in cells}


@dataclass(frozen=True)
class QuotaUsage:
    """A quota's state in its current window. Tokens are whole numbers; money is in currency units.

    `used` is settled usage; `held` is what open authorizations reserve; remaining = limit -
    used - held (never below zero). period_start/end are UTC (end excluded); None for lifetime.
    """

    quota_id: int
    metric: str  # "tokens" | "money"
    window: str  # "day" | "month" | "lifetime"
    enforcement: str  # "hard" | "soft"
    api_key_id: int | None  # None: the whole tenant
    limit: Decimal
    used: Decimal
    held: Decimal
    period_start: dt.datetime | None
    period_end: dt.datetime | None

    @property
    def remaining(self) -> Decimal:
        return max(self.limit - self.used - self.held, Decimal(0))

    @property
    def fraction_used(self) -> Decimal:
        """Settled usage over the limit (1 for a zero limit): what alert thresholds compare."""
        return self.used / self.limit if self.limit else Decimal(1)

    def as_dict(self) -> dict[str, Any]:
        def show(value: Decimal) -> int | str:
            return int(value) if self.metric == Quota.Metric.TOKENS else str(value)

        return {
            "id": self.quota_id,
            "metric": self.metric,
            "window": self.window,
            "enforcement": self.enforcement,
            "scope": "tenant" if self.api_key_id is None else "api_key",
            "api_key_id": self.api_key_id,
            "limit": show(self.limit),
            "used": show(self.used),
            "held": show(self.held),
            "remaining": show(self.remaining),
            "period_start": self.period_start,
            "period_end": self.period_end,
        }


def quota_cell_index(*, tenant_scope: bool, window: str) -> int:
    """Where a quota's cell sits in windows.cells_for(...): tenant d/m/l, then key d/m/l."""
    return (0 if tenant_scope else 3) + PERIODS.index(window)


class QuotaFields(Protocol):
    """What a quota's usage needs of it: a Quota row, or a cached copy of its fields."""

    @property
    def id(self) -> int: ...
    @property
    def api_key_id(self) -> int | None: ...
    @property
    def metric(self) -> str: ...
    @property
    def window(self) -> str: ...
    @property
    def limit(self) -> Decimal: ...
    @property
    def enforcement(self) -> str: ...


def quota_usage_from_cell(quota: QuotaFields, usage: CellUsage, cell: Cell, tz_name: str) -> QuotaUsage:
    """Build a QuotaUsage from any object with Quota's fields and a cell's counters."""
    period = window_period(cell.period, cell.start, tz_name)
    if quota.metric == Quota.Metric.TOKENS:
        used, held = Decimal(usage.tokens), Decimal(usage.held_tokens)
    else:
        used, held = from_micros(usage.micros), from_micros(usage.held_micros)
    return QuotaUsage(
        quota_id=quota.id,
        metric=quota.metric,
        window=quota.window,
        enforcement=quota.enforcement,
        api_key_id=quota.api_key_id,
        limit=Decimal(quota.limit),
        used=used,
        held=held,
        period_start=period.start if period else None,
        period_end=period.end if period else None,
    )


def quota_usage(*, tenant_id: int, api_key_id: int | None = None, at: dt.datetime | None = None) -> list[QuotaUsage]:
    """Limit, used, held, remaining and window of the tenant's quotas at `at` (default now).

    api_key_id None: every quota of the tenant; a key id: the quotas that apply to that key's
    requests (tenant-wide ones and the key's own). From PostgreSQL, the source of truth.
    """
    tenant = Tenant.objects.filter(pk=tenant_id).only("timezone").first()
    if tenant is None:
        return []
    at = at or timezone.now()
    quotas = Quota.objects.filter(tenant_id=tenant_id)
    if api_key_id is not None:
        quotas = quotas.filter(Q(api_key__isnull=True) | Q(api_key_id=api_key_id))
    ordered = list(quotas.order_by(F("api_key_id").asc(nulls_first=True), "id"))
    starts = window_starts(at, tenant.timezone)
    cell_of = {q.pk: Cell(q.api_key_id or TENANT_SCOPE, q.window, starts[q.window]) for q in ordered}
    usage = quota_cells_usage(tenant_id=tenant_id, tz_name=tenant.timezone, cells=set(cell_of.values()))
    return [quota_usage_from_cell(q, usage[cell_of[q.pk]], cell_of[q.pk], tenant.timezone) for q in ordered]
