from django.contrib import admin

from metering.models import DailyUsage, UsageEvent


@admin.register(UsageEvent)
class UsageEventAdmin(admin.ModelAdmin):
    """Append-only: events are viewed here, never edited (re-rating is an audited service)."""

    list_display = ["occurred_at", "tenant", "api_key", "model", "input_tokens", "output_tokens", "cost", "request_id"]
    list_filter = ["tenant", "model"]
    search_fields = ["request_id", "model"]
    date_hierarchy = "occurred_at"
    show_full_result_count = False  # COUNT(*) over millions of rows is not worth a page load

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(DailyUsage)
class DailyUsageAdmin(admin.ModelAdmin):
    list_display = ["day", "tenant", "api_key", "model", "requests", "input_tokens", "output_tokens", "cost"]
    list_filter = ["tenant"]

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False
