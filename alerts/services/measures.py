"""Measuring: what each of the five rule kinds reads, and the thresholds it has crossed.

A measure takes a rule and the tenant's facts (`_Tenant`, each read at most once per
evaluation) and returns its Crossings: (threshold, period, usage, limit, details). The period
re-arms an alert: a quota's or spend rule's thresholds are per window (day, month, lifetime);
a balance rule's are per "episode", which a top-up that lifts the balance back above the level
ends. Quota usage comes from billing.selectors.quota_usage, the read model authorize and
GET /balance use.
"""

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from accounts.models import Tenant
from alerts.models import AlertEvent, AlertRule
from billing import selectors as billing_selectors
from billing.periods import local_date
from billing.selectors import QuotaUsage
from metering import selectors as metering_selectors

PACE_DAYS = 7  # forecast and spike look at this many complete days before today


@dataclass(frozen=True)
class Crossing:
    threshold: str
    period: str
    usage: Decimal
    limit: Decimal | None
    details: dict[str, Any]


def number_text(value: Decimal) -> str:
    """A threshold or factor as text: 80 rather than 8E+1, 1.5 as it is."""
    return format(value.normalize(), "f") if value == value.to_integral_value() else format(value, "f")


def _thresholds(rule: AlertRule) -> list[Decimal]:
    return sorted(Decimal(str(value)) for value in rule.thresholds)


def _threshold_key(rule: AlertRule, value: Decimal) -> str:
    return f"{number_text(value)}%" if rule.threshold_unit == AlertRule.Unit.PERCENT else number_text(value)


def _percent(usage: Decimal, limit: Decimal) -> Decimal | None:
    return (usage * 100 / limit).quantize(Decimal("0.1")) if limit > 0 else None


def _window_period(window: str, start: dt.date | None) -> str:
    if window == "day" and start is not None:
        return start.isoformat()
    if window == "month" and start is not None:
        return f"{start:%Y-%m}"
    return "lifetime"


@dataclass
class _Tenant:
    """What one evaluation reads, each at most once."""

    tenant: Tenant
    now: dt.datetime
    _quotas: dict[int, Any] | None = None
    _balance: Decimal | None = None
    _cache: dict[tuple[object, ...], dict[str, Any]] = field(default_factory=dict)

    @property
    def today(self) -> dt.date:
        return local_date(self.now, self.tenant.timezone)

    def quota(self, quota_id: int) -> QuotaUsage | None:
        if self._quotas is None:
            usages = billing_selectors.quota_usage(tenant_id=self.tenant.pk, at=self.now)
            self._quotas = {usage.quota_id: usage for usage in usages}
        return self._quotas.get(quota_id)

    def balance(self) -> Decimal:
        if self._balance is None:
            self._balance = billing_selectors.wallet_balance(tenant_id=self.tenant.pk)
        return self._balance

    def so_far(self, start_day: dt.date | None, api_key_id: int | None) -> dict[str, Any]:
        key = ("so_far", start_day, api_key_id)
        if key not in self._cache:
            self._cache[key] = metering_selectors.usage_so_far(
                tenant_id=self.tenant.pk, tz_name=self.tenant.timezone, start_day=start_day, now=self.now,
                api_key_id=api_key_id,
            )  # fmt: skip
        return self._cache[key]

    def pace(self, api_key_id: int | None) -> dict[str, Any]:
        """Average per day over the PACE_DAYS complete days before today."""
        key = ("pace", api_key_id)
        if key not in self._cache:
            days = metering_selectors.usage_per_day(
                tenant_id=self.tenant.pk, start_day=self.today - dt.timedelta(days=PACE_DAYS),
                end_day=self.today - dt.timedelta(days=1), api_key_id=api_key_id,
            )  # fmt: skip
            self._cache[key] = {
                "tokens": Decimal(sum(row["tokens"] for row in days.values())) / PACE_DAYS,
                "cost": sum((row["cost"] for row in days.values()), Decimal(0)) / PACE_DAYS,
            }
        return self._cache[key]


def _scope(rule: AlertRule, api_key_id: int | None) -> dict[str, Any]:
    key = rule.api_key if rule.api_key is not None else (rule.quota.api_key if rule.quota is not None else None)
    return {"scope": "key" if api_key_id else "tenant", "key_name": (key.name or key.prefix) if key else ""}


def _level_crossings(
    rule: AlertRule, *, usage: Decimal, limit: Decimal, period: str, details: dict[str, Any]
) -> list[Crossing]:
    """Usage against a limit: percent thresholds of the limit, or absolute usage levels."""
    crossings = []
    percent = _percent(usage, limit)
    for value in _thresholds(rule):
        if rule.threshold_unit == AlertRule.Unit.PERCENT:
            crossed = usage * 100 >= value * limit if limit > 0 else usage > 0
        else:
            crossed = usage >= value
        if crossed:
            crossings.append(
                Crossing(
                    _threshold_key(rule, value),
                    period,
                    usage,
                    limit,
                    details | {"percent": str(percent) if percent is not None else "", "threshold": number_text(value)},
                )
            )
    return crossings


def _quota_crossings(rule: AlertRule, ctx: _Tenant) -> list[Crossing]:
    usage = ctx.quota(rule.quota_id) if rule.quota_id is not None else None
    if usage is None:
        return []
    start = local_date(usage.period_start, ctx.tenant.timezone) if usage.period_start else None
    details = {"metric": usage.metric, "window": usage.window} | _scope(rule, usage.api_key_id)
    return _level_crossings(
        rule, usage=usage.used, limit=usage.limit, period=_window_period(usage.window, start), details=details
    )


def _spend_start(rule: AlertRule, ctx: _Tenant) -> dt.date:
    return ctx.today if rule.window == AlertRule.Window.DAY else ctx.today.replace(day=1)


def _spend_crossings(rule: AlertRule, ctx: _Tenant) -> list[Crossing]:
    start = _spend_start(rule, ctx)
    spent = ctx.so_far(start, rule.api_key_id)["cost"]
    details = {"metric": "money", "window": rule.window} | _scope(rule, rule.api_key_id)
    return _level_crossings(
        rule, usage=spent, limit=rule.amount or Decimal(0), period=_window_period(rule.window, start), details=details
    )


def _balance_period(rule: AlertRule, threshold: str, level: Decimal | None) -> str:
    """The episode a low-balance alert belongs to: it starts anew once a top-up after the last
    alert lifted the balance back above `level` (None: any top-up)."""
    last = AlertEvent.objects.filter(rule=rule, threshold=threshold).order_by("-fired_at", "-id").first()
    if last is None:
        return "balance:0"
    lifting = [
        topup.entry_id
        for topup in billing_selectors.topups_since(tenant_id=rule.tenant_id, since=last.fired_at)
        if level is None or topup.balance_after > level
    ]
    return f"balance:{lifting[-1]}" if lifting else last.period


def _balance_crossings(rule: AlertRule, ctx: _Tenant) -> list[Crossing]:
    balance = ctx.balance()
    crossings = []
    for value in _thresholds(rule):
        if rule.threshold_unit == AlertRule.Unit.PERCENT:
            level = (rule.amount or Decimal(0)) * (100 - value) / 100  # value % of `amount` used up
        else:
            level = value
        if balance <= level:
            key = _threshold_key(rule, value)
            details = {"metric": "money", "level": str(level), "threshold": number_text(value), "scope": "tenant"}
            crossings.append(Crossing(key, _balance_period(rule, key, level), balance, level, details))
    return crossings


def _forecast_crossings(rule: AlertRule, ctx: _Tenant) -> list[Crossing]:
    if rule.quota_id:
        usage = ctx.quota(rule.quota_id)
        if usage is None:
            return []
        pace = ctx.pace(usage.api_key_id)["tokens" if usage.metric == "tokens" else "cost"]
        remaining = usage.limit - usage.used
        start = local_date(usage.period_start, ctx.tenant.timezone) if usage.period_start else None
        period, ends = _window_period(usage.window, start), usage.period_end
        details = {"metric": usage.metric, "window": usage.window, "target": "quota"} | _scope(rule, usage.api_key_id)
        used, limit = usage.used, usage.limit
    else:
        pace = ctx.pace(None)["cost"]
        remaining = ctx.balance()
        period, ends = None, None
        details = {"metric": "money", "target": "balance", "scope": "tenant"}
        used, limit = remaining, None
    if pace <= 0 or remaining <= 0:
        return []  # no recent usage, or already out (the 100 % alert says so)
    days_left = remaining / pace
    if days_left > rule.forecast_days:
        return []
    if ends is not None and ctx.now + dt.timedelta(days=float(days_left)) >= ends:
        return []  # the window resets before it would run out
    if period is None:
        period = _balance_period(rule, "forecast", None)
    details |= {"days_left": str(days_left.quantize(Decimal("0.1"))), "pace": str(pace), "days": rule.forecast_days}
    return [Crossing("forecast", period, used, limit, details)]


def _spike_crossings(rule: AlertRule, ctx: _Tenant) -> list[Crossing]:
    today = ctx.so_far(ctx.today, rule.api_key_id)["cost"]
    average = ctx.pace(rule.api_key_id)["cost"]
    if average <= 0 or today <= rule.spike_factor * average:
        return []
    details = {
        "metric": "money",
        "average": str(average),
        "factor": number_text(rule.spike_factor),
        "ratio": str((today / average).quantize(Decimal("0.1"))),
    } | _scope(rule, rule.api_key_id)
    return [Crossing(f"x{number_text(rule.spike_factor)}", ctx.today.isoformat(), today, average, details)]


# Keyed by AlertRule.Kind values (str): a rule's kind reads back from the database as a str.
MEASURES: dict[str, Callable[[AlertRule, _Tenant], list[Crossing]]] = {
    AlertRule.Kind.QUOTA: _quota_crossings,
    AlertRule.Kind.SPEND: _spend_crossings,
    AlertRule.Kind.BALANCE: _balance_crossings,
    AlertRule.Kind.FORECAST: _forecast_crossings,
    AlertRule.Kind.SPIKE: _spike_crossings,
}
