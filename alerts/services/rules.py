"""Alert rules (the portal's forms call these): create, update, pause, delete; which tenants have any."""

from collections.abc import Iterable
from decimal import Decimal
from typing import Any

from django.contrib.auth.base_user import AbstractBaseUser
from django.db import transaction

from accounts.models import ApiKey, Tenant
from accounts.services import audit_record
from alerts.models import AlertRule, NotificationChannel
from alerts.services.errors import AlertConfigError
from alerts.services.measures import number_text
from billing import selectors as billing_selectors
from infra.cache import BoundedCache


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


def _check_thresholds(values: Iterable[object]) -> list[str]:
    cleaned = []
    for value in values:
        try:
            number = Decimal(str(value))
        except ArithmeticError:
            raise AlertConfigError(f"{value!r} is not a number.") from None
        if not number.is_finite() or number <= 0:
            raise AlertConfigError("Thresholds are positive numbers.")
        cleaned.append(number_text(number))
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
    actor: AbstractBaseUser | None = None,
    actor_label: str = "",
) -> AlertRule:
    """A rule with its channels, audited. Every referenced row must belong to `tenant`."""
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
        audit_record(
            action="alert_rule.create",
            target=rule,
            actor=actor,
            actor_label=actor_label,
            tenant=tenant,
            changes={"kind": rule.kind, "thresholds": rule.thresholds, "channels": [c.name for c in channels]},
        )
    _forget_rules_memo()
    return rule


def alert_rule_update(
    *,
    rule: AlertRule,
    channels: Iterable[NotificationChannel],
    actor: AbstractBaseUser | None = None,
    actor_label: str = "",
    **values: Any,
) -> dict[str, dict[str, Any]]:
    """Change a rule's settings and channels (its kind stays: another kind is another rule).

    Takes the fields alert_rule_create takes, all of them, checked the same way. Returns what
    changed, as the audit log keeps it (audited when anything did): {field: {"before": ...,
    "after": ...}}. Alerts already
    sent stay in the history; a threshold that is new and already crossed fires at the next
    evaluation, one that stays does not fire again for the same period.
    """
    channels = list(channels)
    fields = _rule_fields(tenant=rule.tenant, kind=rule.kind, channels=channels, **values)
    before = {name: getattr(rule, name) for name in fields}
    before["channels"] = sorted(c.name for c in rule.channels.all())
    after = {**fields, "channels": sorted(c.name for c in channels)}
    changed = {
        name: {"before": _plain(before[name]), "after": _plain(after[name])}
        for name in after
        if before[name] != after[name]
    }
    with transaction.atomic():
        for name, value in fields.items():
            setattr(rule, name, value)
        rule.save(update_fields=[*fields.keys()])
        rule.channels.set(channels)
        if changed:
            audit_record(
                action="alert_rule.update",
                target=rule,
                actor=actor,
                actor_label=actor_label,
                tenant=rule.tenant,
                changes=changed,
            )
    _forget_rules_memo()
    return changed


def _plain(value: Any) -> Any:
    """A value as the audit log stores it (JSON)."""
    if isinstance(value, ApiKey):
        return value.name or value.prefix
    return number_text(value) if isinstance(value, Decimal) else value


def alert_rule_set_enabled(
    *, rule: AlertRule, enabled: bool, actor: AbstractBaseUser | None = None, actor_label: str = ""
) -> AlertRule:
    """Pause or resume a rule (its history stays), audited."""
    with transaction.atomic():
        rule.enabled = enabled
        rule.save(update_fields=["enabled"])
        audit_record(
            action="alert_rule.enable" if enabled else "alert_rule.disable",
            target=rule,
            actor=actor,
            actor_label=actor_label,
            tenant=rule.tenant,
        )
    _forget_rules_memo()
    return rule


def alert_rule_delete(*, rule: AlertRule, actor: AbstractBaseUser | None = None, actor_label: str = "") -> None:
    """Delete a rule with its alert history (events and their deliveries), audited."""
    with transaction.atomic():
        audit_record(
            action="alert_rule.delete",
            target=rule,
            actor=actor,
            actor_label=actor_label,
            tenant=rule.tenant,
            changes={"kind": rule.kind, "name": rule.name},
        )
        rule.delete()
    _forget_rules_memo()
