"""What the dashboard shows, assembled from selectors (the DailyUsage rollup, the wallet, quotas).

A handful of indexed queries, whatever the number of raw events: the daily series, the per-key
and per-model totals and the last week's spend for the forecast (rollup rows), the wallet, and
the quotas' usage from billing.selectors.quota_usage, the same read model (QuotaCounter cells
in the quota's window) that authorize, GET /balance and the alerts use.
"""

import datetime as dt
from dataclasses import dataclass, field
from decimal import Decimal

from django.utils.translation import gettext as _

from accounts import selectors as account_selectors
from accounts.models import Tenant
from billing import selectors as billing_selectors
from billing.models import Quota
from billing.selectors import QuotaUsage
from metering import selectors as usage_selectors
from portal.web import charts
from portal.web.ranges import DayRange, today_for

FORECAST_DAYS = 7  # days-left forecast: the average daily spend of the last week


@dataclass
class QuotaGauge:
    quota: QuotaUsage  # limit, window, metric, enforcement and usage of its current window
    used: Decimal
    percent: Decimal
    label: str
    chart: dict


@dataclass
class Dashboard:
    tenant: Tenant
    day_range: DayRange
    totals: dict
    balance: Decimal
    daily_spend: Decimal  # average over FORECAST_DAYS
    days_left: int | None  # None: no recent spend to extrapolate
    avg_tokens_per_request: int
    gauges: list[QuotaGauge] = field(default_factory=list)
    charts: dict = field(default_factory=dict)
    top_keys: list[dict] = field(default_factory=list)
    top_models: list[dict] = field(default_factory=list)
    by_tier: list[dict] = field(default_factory=list)  # usage per service tier, largest first


def quota_label(quota: Quota | QuotaUsage, key_names: dict[int, str]) -> str:
    windows = {"day": _("today"), "month": _("this month"), "lifetime": _("lifetime")}
    metric = _("Spend") if quota.metric == Quota.Metric.MONEY else _("Tokens")
    scope = key_names.get(quota.api_key_id, "") if quota.api_key_id else _("all keys")
    return f"{metric}, {windows.get(quota.window, quota.window)} · {scope}"


def quota_gauges(tenant: Tenant, key_names: dict[int, str]) -> list[QuotaGauge]:
    gauges = []
    for quota in billing_selectors.quota_usage(tenant_id=tenant.pk):
        used = quota.used
        percent = (used / quota.limit * 100) if quota.limit > 0 else Decimal(100)
        label = quota_label(quota, key_names)
        gauges.append(
            QuotaGauge(
                quota=quota,
                used=used,
                percent=percent,
                label=label,
                chart=charts.quota_gauge(used=used, limit=quota.limit, title=label),
            )
        )
    return gauges


def balance_forecast(tenant: Tenant) -> tuple[Decimal, Decimal, int | None]:
    """The balance, the average daily spend of the last FORECAST_DAYS local days, and how many
    days the balance lasts at that pace (None when nothing was spent: no pace to extrapolate)."""
    today = today_for(tenant.timezone)
    recent = usage_selectors.usage_totals(
        tenant_id=tenant.pk, start_day=today - dt.timedelta(days=FORECAST_DAYS - 1), end_day=today
    )
    daily_spend = recent["cost"] / FORECAST_DAYS
    balance = billing_selectors.wallet_balance(tenant_id=tenant.pk)
    if balance <= 0:
        return balance, daily_spend, 0
    if daily_spend > 0:
        return balance, daily_spend, int(balance / daily_spend)
    return balance, daily_spend, None


def key_labels(tenant_id: int) -> dict[int, str]:
    return {key.pk: key.name or key.prefix for key in account_selectors.api_keys_for_tenant(tenant_id=tenant_id)}


def dashboard_build(*, tenant: Tenant, day_range: DayRange) -> Dashboard:
    series = usage_selectors.usage_daily_series(tenant_id=tenant.pk, start_day=day_range.start, end_day=day_range.end)
    totals = {
        name: sum((row[name] for row in series), Decimal(0) if name == "cost" else 0)
        for name in ("requests", "input_tokens", "output_tokens", "cached_input_tokens", "tokens", "cost")
    }
    by_key = usage_selectors.usage_by_group(
        tenant_id=tenant.pk, start_day=day_range.start, end_day=day_range.end, group_by="api_key"
    )
    by_model = usage_selectors.usage_by_group(
        tenant_id=tenant.pk, start_day=day_range.start, end_day=day_range.end, group_by="model"
    )
    by_tier = usage_selectors.usage_by_group(
        tenant_id=tenant.pk, start_day=day_range.start, end_day=day_range.end, group_by="service_tier"
    )
    names = key_labels(tenant.pk)

    balance, daily_spend, days_left = balance_forecast(tenant)
    gauges = quota_gauges(tenant, names)
    figures = {
        "daily-tokens": charts.daily_tokens(series),
        "daily-cost": charts.daily_cost(series, tenant.currency),
        "daily-requests": charts.daily_requests(series),
        "top-keys": charts.top_groups(by_key, names, tenant.currency),
        "top-models": charts.top_groups(by_model, {}, tenant.currency),
    }
    for index, gauge in enumerate(gauges):
        figures[f"quota-{index}"] = gauge.chart
    for row in by_key:
        row["label"] = names.get(row["group"], str(row["group"]))
    return Dashboard(
        tenant=tenant,
        day_range=day_range,
        totals=totals,
        balance=balance,
        daily_spend=daily_spend,
        days_left=days_left,
        avg_tokens_per_request=totals["tokens"] // totals["requests"] if totals["requests"] else 0,
        gauges=gauges,
        charts=figures,
        top_keys=by_key[:8],
        top_models=by_model[:8],
        by_tier=by_tier,
    )
