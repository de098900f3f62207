from django.contrib import admin

from billing.alerts.models import AlertDelivery, AlertEvent, AlertRule, NotificationChannel


@admin.register(NotificationChannel)
class NotificationChannelAdmin(admin.ModelAdmin):
    list_display = ("name", "tenant", "kind", "enabled", "created_at")
    list_filter = ("kind", "enabled")
    search_fields = ("name", "tenant__slug")


@admin.register(AlertRule)
class AlertRuleAdmin(admin.ModelAdmin):
    list_display = ("__str__", "tenant", "kind", "threshold_unit", "thresholds", "enabled")
    list_filter = ("kind", "enabled")
    search_fields = ("name", "tenant__slug")
    raw_id_fields = ("quota", "api_key")


class AlertDeliveryInline(admin.TabularInline):
    model = AlertDelivery
    extra = 0
    can_delete = False
    readonly_fields = ("channel", "status", "attempts", "error", "error_kind", "next_attempt_at", "delivered_at")
    fields = readonly_fields


@admin.register(AlertEvent)
class AlertEventAdmin(admin.ModelAdmin):
    """The record of what was sent: read-only."""

    list_display = ("fired_at", "tenant", "rule", "threshold", "period", "usage", "limit")
    list_filter = ("threshold",)
    search_fields = ("tenant__slug",)
    inlines = [AlertDeliveryInline]

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_add_permission(self, request) -> bool:
        return False


@admin.register(AlertDelivery)
class AlertDeliveryAdmin(admin.ModelAdmin):
    list_display = ("created_at", "tenant", "channel", "status", "attempts", "error_kind", "delivered_at")
    list_filter = ("status", "error_kind")
    search_fields = ("tenant__slug", "error")

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_add_permission(self, request) -> bool:
        return False
