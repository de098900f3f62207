from django.contrib import admin

from portal.accounts.models import ApiKey, AuditLog, Membership, ServiceToken, Tenant


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    autocomplete_fields = ["user"]


@admin.register(Tenant)
class TenantAdmin(admin.ModelAdmin):
    list_display = ["name", "slug", "status", "currency", "timezone", "price_plan", "created_at"]
    list_filter = ["status", "currency"]
    search_fields = ["name", "slug"]
    inlines = [MembershipInline]


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    """Keys are issued by the portal or `create_api_key` (the secret is shown once there)."""

    list_display = ["prefix", "name", "tenant", "scopes", "created_at", "last_used_at", "revoked_at"]
    list_filter = ["tenant"]
    search_fields = ["prefix", "name", "tenant__slug"]
    readonly_fields = ["prefix", "secret_hash", "created_at", "last_used_at"]

    def has_add_permission(self, request) -> bool:
        return False


@admin.register(ServiceToken)
class ServiceTokenAdmin(admin.ModelAdmin):
    list_display = ["name", "prefix", "created_at", "last_used_at", "revoked_at"]
    readonly_fields = ["prefix", "secret_hash", "created_at", "last_used_at"]

    def has_add_permission(self, request) -> bool:
        return False


@admin.register(AuditLog)
class AuditLogAdmin(admin.ModelAdmin):
    list_display = ["created_at", "actor_label", "tenant", "action", "target_type", "target_id"]
    list_filter = ["action"]
    search_fields = ["actor_label", "action", "target_id"]

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False
