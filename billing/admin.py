from django.contrib import admin

from billing.models import Hold, LedgerEntry, Price, PricePlan, Quota, Wallet


class ReadOnlyAdmin(admin.ModelAdmin):
    """Append-only records: visible, never edited or deleted by hand."""

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(PricePlan)
class PricePlanAdmin(admin.ModelAdmin):
    list_display = ["name", "slug", "currency", "allow_unpriced_models", "created_at"]
    search_fields = ["name", "slug"]


@admin.register(Price)
class PriceAdmin(admin.ModelAdmin):
    """Prices are versioned: add a new version with a later effective_from, never edit one."""

    list_display = [
        "plan", "tenant", "model_pattern", "effective_from", "input_per_mtok", "output_per_mtok",
        "cached_input_per_mtok", "cache_write_per_mtok", "tier_threshold",
    ]  # fmt: skip
    list_filter = ["plan"]
    search_fields = ["model_pattern"]

    def has_change_permission(self, request, obj=None) -> bool:
        return obj is None

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Wallet)
class WalletAdmin(ReadOnlyAdmin):
    list_display = ["tenant", "balance", "currency", "updated_at"]


@admin.register(LedgerEntry)
class LedgerEntryAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "tenant", "kind", "amount", "idempotency_key", "reference", "actor_label"]
    list_filter = ["kind", "tenant"]
    search_fields = ["idempotency_key", "reference"]


@admin.register(Hold)
class HoldAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "tenant", "request_id", "model", "amount", "status", "expires_at"]
    list_filter = ["status"]


@admin.register(Quota)
class QuotaAdmin(admin.ModelAdmin):
    list_display = ["tenant", "api_key", "metric", "window", "limit", "enforcement"]
    list_filter = ["metric", "window", "enforcement"]
