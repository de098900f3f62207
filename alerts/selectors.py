"""Read paths for the portal's alert pages: a tenant's rules, channels, alerts and deliveries."""

from alerts.models import AlertDelivery, AlertEvent, AlertRule, NotificationChannel


def channels_for_tenant(*, tenant_id: int) -> list[NotificationChannel]:
    return list(NotificationChannel.objects.filter(tenant_id=tenant_id).order_by("name"))


def channel_for_tenant(*, tenant_id: int, channel_id: int) -> NotificationChannel | None:
    return NotificationChannel.objects.filter(tenant_id=tenant_id, pk=channel_id).first()


def rules_for_tenant(*, tenant_id: int) -> list[AlertRule]:
    rules = AlertRule.objects.filter(tenant_id=tenant_id).select_related("quota", "api_key")
    return list(rules.prefetch_related("channels").order_by("id"))


def rule_for_tenant(*, tenant_id: int, rule_id: int) -> AlertRule | None:
    return AlertRule.objects.filter(tenant_id=tenant_id, pk=rule_id).first()


def alert_events_for_tenant(*, tenant_id: int, limit: int = 50) -> list[AlertEvent]:
    """Newest first, each with its deliveries (channel, status, attempts, last error)."""
    events = AlertEvent.objects.filter(tenant_id=tenant_id).select_related("rule")
    return list(events.prefetch_related("deliveries__channel").order_by("-fired_at", "-id")[:limit])


def deliveries_for_tenant(*, tenant_id: int, channel_id: int | None = None, limit: int = 50) -> list[AlertDelivery]:
    """Newest first, tests included (event None)."""
    deliveries = AlertDelivery.objects.filter(tenant_id=tenant_id).select_related("channel", "event")
    if channel_id is not None:
        deliveries = deliveries.filter(channel_id=channel_id)
    return list(deliveries.order_by("-created_at", "-id")[:limit])
