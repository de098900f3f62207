"""Alerts in the Django admin. Channel and rule edits are audited like the portal's
(accounts.admin_audit; a channel's secrets are recorded as changed, never by value);
fired alerts and their deliveries are the record of what was sent: read-only."""

from django.contrib import admin

from accounts.admin_audit import AuditedModelAdmin, ReadOnlyAdmin
from alerts.models import AlertDelivery, AlertEvent, AlertRule, NotificationChannel


@admin.register(NotificationChannel)
class NotificationChannelAdmin(AuditedModelAdmin):
    list_display = ("name", "tenant", "kind", "enabled", "created_at")
    list_filter = ("kind", "enabled")
    search_fields = ("name", "tenant__slug")


@admin.register(AlertRule)
class AlertRuleAdmin(AuditedModelAdmin):
    list_display = ("__str__", "tenant", "kind", "threshold_unit", "thresholds", "enabled")
    list_filter = ("kind", "enabled")
    search_fields = ("name", "tenant__slug")
    raw_id_fields = ("quota", "api_key")


class AlertDeliveryInline(admin.TabularInline):  # type: ignore[type-arg]  # generic only in the stubs, not at runtime
    model = AlertDelivery
    extra = 0
    can_delete = False
    readonly_fields = ("channel", "status", "attempts", "error", "error_kind", "next_attempt_at", "delivered_at")
    fields = readonly_fields


@admin.register(AlertEvent)
class AlertEventAdmin(ReadOnlyAdmin):
    """The record of what was sent: read-only (deleting one would let its alert fire again)."""

    list_display = ("fired_at", "tenant", "rule", "threshold", "period", "usage", "limit")
    list_filter = ("threshold",)
    search_fields = ("tenant__slug",)
    inlines = [AlertDeliveryInline]


@admin.register(AlertDelivery)
class AlertDeliveryAdmin(ReadOnlyAdmin):
    list_display = ("created_at", "tenant", "channel", "status", "attempts", "error_kind", "delivered_at")
    list_filter = ("status", "error_kind")
    search_fields = ("tenant__slug", "error")
