"""Usage in the Django admin: read-only. Events are append-only (re-rating is an audited
service); daily rollups are derived from them and rebuilt by the rollup service."""

from django.contrib import admin

from accounts.admin_audit import ReadOnlyAdmin
from metering.models import DailyUsage, UsageArchive, UsageEvent


@admin.register(UsageEvent)
class UsageEventAdmin(ReadOnlyAdmin):
    """Append-only: events are viewed here, never edited (re-rating is an audited service)."""

    list_display = ["occurred_at", "tenant", "api_key", "model", "input_tokens", "output_tokens", "cost", "request_id"]
    list_filter = ["tenant", "model"]
    search_fields = ["request_id", "model"]
    date_hierarchy = "occurred_at"
    show_full_result_count = False  # COUNT(*) over millions of rows is not worth a page load


@admin.register(DailyUsage)
class DailyUsageAdmin(ReadOnlyAdmin):
    list_display = ["day", "tenant", "api_key", "model", "requests", "input_tokens", "output_tokens", "cost"]
    list_filter = ["tenant"]


@admin.register(UsageArchive)
class UsageArchiveAdmin(ReadOnlyAdmin):
    """Archived usage months (docs/operations.md "Retention"): where the file is, what it holds."""

    list_display = ["period", "status", "rows", "file_name", "file_bytes", "table_bytes", "dropped_at"]
    exclude = ["manifest"]
