"""Alert evaluation and delivery: claim, then act.

Evaluation (`alerts_evaluate`) measures each enabled rule of a tenant and, for every threshold
crossed, claims the AlertEvent (rule, threshold, period) with an INSERT that the unique
constraint lets through once (get_or_create in a transaction); the one claim that wins also
writes a pending AlertDelivery per channel in the same transaction. A second evaluation of the
same facts (a redelivered task, two workers, two schedulers) finds the event and writes nothing.

Delivery (`alert_delivery_send`) claims the row with an UPDATE filtered on its state (pending,
retry due, or a sending lease that expired), sends through the channel's transport, and
records the outcome: delivered, retry later (transient error, exponential backoff) or failed
(permanent error, or out of attempts). A worker that dies after the claim leaves a lease that
expires; the redelivered task (acks_late) or the sweep then sends it. An exception between
claim and send releases the claim, so the rerun sends right away.

Periods re-arm the alerts: a quota's or spend rule's thresholds are per window (day, month,
lifetime); a balance rule's are per "episode", which a top-up that lifts the balance back
above the level ends.
"""

import datetime as dt
import functools
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone
from kombu.exceptions import OperationalError as BrokerError
from redis.exceptions import RedisError

from billing import selectors as billing_selectors
from billing.alerts.messages import render_delivery
from billing.alerts.models import AlertDelivery, AlertEvent, AlertRule, NotificationChannel
from billing.periods import local_date
from billing.services import tenant_jobs
from billing.services.tenant_jobs import TenantJob
from metering import selectors as metering_selectors
from portal.accounts.models import ApiKey, Tenant
from portal.cache import BoundedCache
from portal.notifications import ConfigError, TransportError, get_transport

logger = logging.getLogger(__name__)

LEASE = dt.timedelta(seconds=120)  # longer than a send can take (tasks' hard time limit is 90 s)
MAX_ATTEMPTS = 8  # transient failures, then the delivery is failed
PACE_DAYS = 7  # forecast and spike look at this many complete days before today
SWEEP_GRACE = dt.timedelta(seconds=60)  # the sweep leaves fresh work to its own task


class AlertConfigError(ValueError):
    """A rule or channel cannot be saved as given; the message says why."""


# --- Measuring --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Crossing:
    threshold: str
    period: str
    usage: Decimal
    limit: Decimal | None
    details: dict[str, Any]


def _text(value: Decimal) -> str:
    return format(value.normalize(), "f") if value == value.to_integral_value() else format(value, "f")


def _thresholds(rule: AlertRule) -> list[Decimal]:
    return sorted(Decimal(str(value)) for value in rule.thresholds)


def _threshold_key(rule: AlertRule, value: Decimal) -> str:
    return f"{_text(value)}%" if rule.threshold_unit == AlertRule.Unit.PERCENT else _text(value)


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
    _cache: dict[Any, Any] = field(default_factory=dict)

    @property
    def today(self) -> dt.date:
        return local_date(self.now, self.tenant.timezone)

    def quota(self, quota_id: int) -> Any:
        if self._quotas is None:
            usages = billing_selectors.quota_usage(tenant_id=self.tenant.pk, at=self.now)
            self._quotas = {usage.quota_id: usage for usage in usages}
        return self._quotas.get(quota_id)

    def balance(self) -> Decimal:
        if self._balance is None:
            self._balance = billing_selectors.wallet_balance(tenant_id=self.tenant.pk)
        return self._balance

    def so_far(self, start_day: dt.date | None, api_key_id: int | None) -> dict:
        key = ("so_far", start_day, api_key_id)
        if key not in self._cache:
            self._cache[key] = metering_selectors.usage_so_far(
                tenant_id=self.tenant.pk, tz_name=self.tenant.timezone, start_day=start_day, now=self.now,
                api_key_id=api_key_id,
            )  # fmt: skip
        return self._cache[key]

    def pace(self, api_key_id: int | None) -> dict:
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
    key = rule.api_key if rule.api_key_id else (rule.quota.api_key if rule.quota_id and rule.quota.api_key_id else None)
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
                    details | {"percent": str(percent) if percent is not None else "", "threshold": _text(value)},
                )
            )
    return crossings


def _quota_crossings(rule: AlertRule, ctx: _Tenant) -> list[Crossing]:
    usage = ctx.quota(rule.quota_id)
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
            details = {"metric": "money", "level": str(level), "threshold": _text(value), "scope": "tenant"}
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
        "factor": _text(rule.spike_factor),
        "ratio": str((today / average).quantize(Decimal("0.1"))),
    } | _scope(rule, rule.api_key_id)
    return [Crossing(f"x{_text(rule.spike_factor)}", ctx.today.isoformat(), today, average, details)]


_MEASURES = {
    AlertRule.Kind.QUOTA: _quota_crossings,
    AlertRule.Kind.SPEND: _spend_crossings,
    AlertRule.Kind.BALANCE: _balance_crossings,
    AlertRule.Kind.FORECAST: _forecast_crossings,
    AlertRule.Kind.SPIKE: _spike_crossings,
}


# --- Evaluating -------------------------------------------------------------------------------


@dataclass
class Evaluation:
    new_events: list[AlertEvent]
    due_delivery_ids: list[int]  # queue a send for each (new ones and any left unsent)


def _claim(rule: AlertRule, crossing: Crossing, now: dt.datetime, currency: str) -> AlertEvent | None:
    """Create the event and its deliveries, or nothing if this alert was already claimed."""
    with transaction.atomic():
        event, created = AlertEvent.objects.get_or_create(
            rule=rule,
            threshold=crossing.threshold,
            period=crossing.period,
            defaults={
                "tenant_id": rule.tenant_id,
                "fired_at": now,
                "usage": crossing.usage,
                "limit": crossing.limit,
                "details": crossing.details | {"kind": rule.kind, "currency": currency, "period": crossing.period},
            },
        )
        if not created:
            return None
        AlertDelivery.objects.bulk_create(
            AlertDelivery(tenant_id=rule.tenant_id, event=event, channel=channel)
            for channel in rule.channels.filter(enabled=True)
        )
    return event


def alerts_evaluate(*, tenant_id: int, now: dt.datetime | None = None) -> Evaluation:
    """Measure every enabled rule of the tenant and claim each newly crossed threshold."""
    now = now or timezone.now()
    tenant = Tenant.objects.filter(pk=tenant_id).first()
    if tenant is None:
        return Evaluation([], [])
    ctx = _Tenant(tenant, now)
    new_events = []
    rules = AlertRule.objects.filter(tenant_id=tenant_id, enabled=True).select_related("quota", "api_key")
    for rule in rules:
        for crossing in _MEASURES[rule.kind](rule, ctx):
            event = _claim(rule, crossing, now, tenant.currency)
            if event is not None:
                logger.info("alert %s: rule %s %s %s", event.pk, rule.pk, crossing.threshold, crossing.period)
                new_events.append(event)
    due = AlertDelivery.objects.filter(tenant_id=tenant_id).filter(_due(now))
    return Evaluation(new_events, list(due.values_list("pk", flat=True)))


def alerts_evaluate_recorded(*, tenant_id: int, now: dt.datetime | None = None) -> Evaluation:
    """`alerts_evaluate` for the tasks: a failure of the tenant's own data (a time zone no longer
    known, ...) is recorded and retried with backoff (billing/services/tenant_jobs.py) instead of
    raised, so the sweep goes on with the other tenants; skipped while that retry is not due."""
    job = TenantJob.begin(tenant_jobs.ALERTS, now=now)
    if not job.due(tenant_id):
        return Evaluation([], [])
    evaluation = job.run(tenant_id, functools.partial(alerts_evaluate, tenant_id=tenant_id, now=job.now))
    return evaluation if evaluation is not None else Evaluation([], [])


def _due(now: dt.datetime, grace: dt.timedelta | None = None) -> Q:
    """Deliveries that may be sent at `now`; with a grace, only those left alone that long."""
    pending = Q(status=AlertDelivery.Status.PENDING)
    if grace is not None:
        pending &= Q(created_at__lte=now - grace)
    retry_at = now - grace if grace is not None else now
    return (
        pending
        | Q(status=AlertDelivery.Status.RETRY, next_attempt_at__lte=retry_at)
        | Q(status=AlertDelivery.Status.SENDING, lease_expires_at__lte=now)
    )


def alert_deliveries_due(*, now: dt.datetime | None = None) -> list[int]:
    """Deliveries the sweep should (re)queue: unsent, retry due, or a lapsed lease."""
    now = now or timezone.now()
    return list(AlertDelivery.objects.filter(_due(now, SWEEP_GRACE)).values_list("pk", flat=True)[:1000])


def tenants_with_rules() -> list[int]:
    return list(AlertRule.objects.filter(enabled=True).values_list("tenant_id", flat=True).distinct().order_by())


# Ingest asks on every batch whether a tenant has rules at all; one query per process per
# RULES_MEMO_SECONDS answers it (a rule made in another process is seen that much later by the
# ingest hook; the sweep covers the gap). Only a cache: losing it costs one query.
RULES_MEMO_SECONDS = 30.0
_rules_memo: BoundedCache[frozenset[int]] = BoundedCache("alert_rule_tenants", max_size=1, ttl=RULES_MEMO_SECONDS)


def tenant_has_rules(*, tenant_id: int) -> bool:
    return tenant_id in _rules_memo.get_or_load("tenants", lambda: frozenset(tenants_with_rules()))


def _forget_rules_memo() -> None:
    _rules_memo.clear()


# --- Delivering -------------------------------------------------------------------------------


@dataclass(frozen=True)
class DeliveryOutcome:
    status: str
    retry_in: float | None = None  # seconds until it may be tried again (None: nothing to do)
    error: str = ""


def _backoff(attempts: int) -> float:
    return float(min(30 * 2 ** max(attempts - 1, 0), 3600))


def _claim_delivery(delivery_id: int, now: dt.datetime) -> bool:
    return bool(
        AlertDelivery.objects.filter(pk=delivery_id)
        .filter(_due(now))
        .update(status=AlertDelivery.Status.SENDING, attempts=F("attempts") + 1, lease_expires_at=now + LEASE,
                updated_at=now)
    )  # fmt: skip


def alert_delivery_send(*, delivery_id: int, now: dt.datetime | None = None) -> DeliveryOutcome:
    """Send one delivery if it is due and this caller wins the claim; record the outcome."""
    now = now or timezone.now()
    if not _claim_delivery(delivery_id, now):
        current = AlertDelivery.objects.filter(pk=delivery_id).first()
        if current is None:
            return DeliveryOutcome("missing")
        wake = current.next_attempt_at if current.status == AlertDelivery.Status.RETRY else current.lease_expires_at
        if current.status in (AlertDelivery.Status.RETRY, AlertDelivery.Status.SENDING) and wake is not None:
            return DeliveryOutcome(current.status, retry_in=max((wake - now).total_seconds(), 1.0))
        return DeliveryOutcome(current.status)
    delivery = AlertDelivery.objects.select_related("channel", "event__rule", "tenant").get(pk=delivery_id)
    sending = AlertDelivery.objects.filter(pk=delivery_id, status=AlertDelivery.Status.SENDING)
    try:
        message = render_delivery(delivery)
        result = get_transport(delivery.channel.kind).send(delivery.channel.config, message)
    except TransportError as exc:
        attempts = delivery.attempts + max(exc.attempts - 1, 0)
        if exc.attempts == 0:  # deferred before any request (rate limit): not an attempt
            attempts = delivery.attempts - 1
        give_up = exc.permanent or attempts >= MAX_ATTEMPTS
        if exc.attempts == 0 and exc.retry_after is not None:
            retry_in = exc.retry_after  # deferred (rate limit): exactly as long as needed
        else:
            retry_in = None if give_up else max(exc.retry_after or 0, _backoff(attempts))
        status = AlertDelivery.Status.FAILED if give_up else AlertDelivery.Status.RETRY
        sending.update(
            status=status,
            attempts=attempts,
            error=str(exc)[:2000],
            error_kind=exc.kind,
            next_attempt_at=None if retry_in is None else now + dt.timedelta(seconds=retry_in),
            lease_expires_at=None,
            updated_at=timezone.now(),
        )
        logger.warning("delivery %s %s (%s): %s", delivery_id, status, exc.kind, exc)
        return DeliveryOutcome(status, retry_in=retry_in, error=str(exc))
    except BaseException as exc:
        # Crashed between the claim and a known outcome: hand the delivery back so the rerun
        # (task retry or the sweep) sends it, instead of waiting for the lease to lapse; a
        # delivery that keeps crashing stops after MAX_ATTEMPTS.
        exhausted = delivery.attempts >= MAX_ATTEMPTS
        logger.warning("delivery %s crashed after its claim: %r", delivery_id, exc)  # the detail stays here
        sending.update(
            status=AlertDelivery.Status.FAILED if exhausted else AlertDelivery.Status.PENDING,
            error=f"interrupted ({type(exc).__name__})",
            error_kind=AlertDelivery.ErrorKind.TRANSIENT,
            lease_expires_at=None,
            updated_at=timezone.now(),
        )
        raise
    sending.update(
        status=AlertDelivery.Status.DELIVERED,
        attempts=delivery.attempts + result.attempts - 1,
        error="",
        error_kind="",
        delivered_at=timezone.now(),
        lease_expires_at=None,
        next_attempt_at=None,
        updated_at=timezone.now(),
    )
    return DeliveryOutcome(AlertDelivery.Status.DELIVERED)


# --- Channels and rules (the portal's forms call these) ---------------------------------------


def notification_channel_create(
    *, tenant: Tenant, kind: str, name: str, config: dict[str, Any], enabled: bool = True
) -> NotificationChannel:
    try:
        cleaned = get_transport(kind).validate(config)
    except (LookupError, ConfigError) as exc:
        raise AlertConfigError(str(exc)) from exc
    name = name.strip() or kind
    if NotificationChannel.objects.filter(tenant=tenant, name=name).exists():
        raise AlertConfigError(f"A channel named {name!r} already exists.")
    return NotificationChannel.objects.create(tenant=tenant, kind=kind, name=name, config=cleaned, enabled=enabled)


def notification_channel_update(
    *, channel: NotificationChannel, config: dict[str, Any] | None = None, enabled: bool | None = None
) -> NotificationChannel:
    if config is not None:
        try:
            channel.config = get_transport(channel.kind).validate(config)
        except ConfigError as exc:
            raise AlertConfigError(str(exc)) from exc
    if enabled is not None:
        channel.enabled = enabled
    channel.save(update_fields=["config", "enabled"])
    return channel


def notification_channel_send_test(*, channel: NotificationChannel) -> tuple[AlertDelivery, bool]:
    """Queue a test message (the portal's "send test" button): (its delivery, whether queued now).

    The delivery row is written here; a worker sends it after commit (alert_delivery_send, with
    the retries and the outbound policy of any alert), never the web request. A test of this
    channel that is still waiting for its first try is returned instead of queuing another, so
    a button pressed over and over does not fill the workers' queue.
    """
    with transaction.atomic():
        NotificationChannel.objects.select_for_update().filter(pk=channel.pk).first()  # one request at a time
        waiting = AlertDelivery.objects.filter(
            channel=channel, event__isnull=True, status__in=[AlertDelivery.Status.PENDING, AlertDelivery.Status.SENDING]
        ).first()
        if waiting is not None:
            return waiting, False
        delivery = AlertDelivery.objects.create(tenant_id=channel.tenant_id, channel=channel)
        transaction.on_commit(functools.partial(_queue_delivery, delivery.pk))
    return delivery, True


def _queue_delivery(delivery_id: int) -> None:
    from billing.alerts.tasks import alert_delivery_send as send_task  # noqa: PLC0415 - tasks import this module

    try:
        send_task.delay(delivery_id)
    except (RedisError, BrokerError, OSError) as exc:  # the row is written: the sweep sends it
        logger.warning("could not queue delivery %s, the sweep will: %r", delivery_id, exc)


def _check_thresholds(values: Iterable[object]) -> list[str]:
    cleaned = []
    for value in values:
        try:
            number = Decimal(str(value))
        except ArithmeticError:
            raise AlertConfigError(f"{value!r} is not a number.") from None
        if not number.is_finite() or number <= 0:
            raise AlertConfigError("Thresholds are positive numbers.")
        cleaned.append(_text(number))
    if not cleaned or len(cleaned) > 10:
        raise AlertConfigError("Give between one and ten thresholds.")
    return sorted(set(cleaned), key=Decimal)


def _rule_fields(
    *,
    tenant: Tenant,
    kind: str,
    channels: list[NotificationChannel],
    name: str,
    quota_id: int | None,
    api_key: ApiKey | None,
    window: str,
    amount: Decimal | None,
    threshold_unit: str,
    thresholds: Iterable[object],
    forecast_days: int,
    spike_factor: Decimal,
) -> dict[str, Any]:
    """A rule's fields, checked. Every referenced row must belong to `tenant`."""
    if kind not in AlertRule.Kind.values:
        raise AlertConfigError(f"kind must be one of {', '.join(AlertRule.Kind.values)}.")
    if any(channel.tenant_id != tenant.pk for channel in channels):
        raise AlertConfigError("A channel belongs to another tenant.")
    if api_key is not None and api_key.tenant_id != tenant.pk:
        raise AlertConfigError("The key belongs to another tenant.")
    if quota_id is not None and billing_selectors.quota_for_tenant(tenant_id=tenant.pk, quota_id=quota_id) is None:
        raise AlertConfigError("No such quota.")
    if kind == AlertRule.Kind.QUOTA and quota_id is None:
        raise AlertConfigError("A quota rule needs a quota.")
    if kind == AlertRule.Kind.SPEND and not (amount and amount > 0):
        raise AlertConfigError("A spend rule needs a budget amount above zero.")
    if kind == AlertRule.Kind.BALANCE and threshold_unit == AlertRule.Unit.PERCENT and not (amount and amount > 0):
        raise AlertConfigError("A balance rule in percent needs the reference amount (e.g. your usual top-up).")
    if window not in AlertRule.Window.values or threshold_unit not in AlertRule.Unit.values:
        raise AlertConfigError("Unknown window or threshold unit.")
    if forecast_days < 1 or spike_factor <= 1:
        raise AlertConfigError("forecast_days is at least 1 and spike_factor above 1.")
    return {
        "name": name,
        "quota_id": quota_id,
        "api_key": api_key,
        "window": window,
        "amount": amount,
        "threshold_unit": threshold_unit,
        "thresholds": _check_thresholds(thresholds),
        "forecast_days": forecast_days,
        "spike_factor": spike_factor,
    }


def alert_rule_create(
    *,
    tenant: Tenant,
    kind: str,
    channels: Iterable[NotificationChannel],
    name: str = "",
    quota_id: int | None = None,
    api_key: ApiKey | None = None,
    window: str = AlertRule.Window.MONTH,
    amount: Decimal | None = None,
    threshold_unit: str = AlertRule.Unit.PERCENT,
    thresholds: Iterable[object] = ("80", "100"),
    forecast_days: int = 7,
    spike_factor: Decimal = Decimal(3),
) -> AlertRule:
    """A rule with its channels. Every referenced row must belong to `tenant`."""
    channels = list(channels)
    fields = _rule_fields(
        tenant=tenant,
        kind=kind,
        channels=channels,
        name=name,
        quota_id=quota_id,
        api_key=api_key,
        window=window,
        amount=amount,
        threshold_unit=threshold_unit,
        thresholds=thresholds,
        forecast_days=forecast_days,
        spike_factor=spike_factor,
    )
    with transaction.atomic():
        rule = AlertRule.objects.create(tenant=tenant, kind=kind, **fields)
        rule.channels.set(channels)
    _forget_rules_memo()
    return rule


def alert_rule_update(
    *, rule: AlertRule, channels: Iterable[NotificationChannel], **values: Any
) -> dict[str, dict[str, Any]]:
    """Change a rule's settings and channels (its kind stays: another kind is another rule).

    Takes the fields alert_rule_create takes, all of them, checked the same way. Returns what
    changed, as the audit log keeps it: {field: {"before": ..., "after": ...}}. Alerts already
    sent stay in the history; a threshold that is new and already crossed fires at the next
    evaluation, one that stays does not fire again for the same period.
    """
    channels = list(channels)
    fields = _rule_fields(tenant=rule.tenant, kind=rule.kind, channels=channels, **values)
    before = {name: getattr(rule, name) for name in fields}
    before["channels"] = sorted(c.name for c in rule.channels.all())
    after = {**fields, "channels": sorted(c.name for c in channels)}
    with transaction.atomic():
        for name, value in fields.items():
            setattr(rule, name, value)
        rule.save(update_fields=[*fields.keys()])
        rule.channels.set(channels)
    _forget_rules_memo()
    return {
        name: {"before": _plain(before[name]), "after": _plain(after[name])}
        for name in after
        if before[name] != after[name]
    }


def _plain(value: Any) -> Any:
    """A value as the audit log stores it (JSON)."""
    if isinstance(value, ApiKey):
        return value.name or value.prefix
    return _text(value) if isinstance(value, Decimal) else value


def alert_rule_set_enabled(*, rule: AlertRule, enabled: bool) -> AlertRule:
    rule.enabled = enabled
    rule.save(update_fields=["enabled"])
    _forget_rules_memo()
    return rule


def alert_rule_delete(*, rule: AlertRule) -> None:
    """Delete a rule with its alert history (events and their deliveries)."""
    rule.delete()
    _forget_rules_memo()


def notification_channel_delete(*, channel: NotificationChannel) -> None:
    """Delete a channel and its delivery records; rules keep their other channels."""
    channel.delete()
