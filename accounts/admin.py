"""Tenants, credentials and the audit log in the Django admin.

Every edit here is audited (accounts.admin_audit): tenants and their memberships, key
names and scopes, service tokens. Keys and tokens are issued by the portal or the commands
(their secret is shown once there) and are revoked, never deleted: their rows stay for the
usage and audit rows that name them. The audit log itself is read-only.
"""

from django.contrib import admin

from accounts.admin_audit import AuditedModelAdmin, ReadOnlyAdmin
from accounts.admin_forms import ApiKeyAdminForm, TenantAdminForm
from accounts.models import ApiKey, AuditLog, Membership, ServiceToken, Tenant


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    autocomplete_fields = ["user"]


@admin.register(Tenant)
class TenantAdmin(AuditedModelAdmin):
    list_display = [
        "name",
        "slug",
        "status",
        "currency",
        "timezone",
        "price_plan",
        "rpm_limit",
        "tpm_limit",
        "max_parallel_requests",
        "created_at",
    ]
    list_filter = ["status", "currency"]
    search_fields = ["name", "slug"]
    form = TenantAdminForm  # limits checked as the portal checks them
    inlines = [MembershipInline]


@admin.register(ApiKey)
class ApiKeyAdmin(AuditedModelAdmin):
    """Keys are issued by the portal or `create_api_key` (the secret is shown once there)."""

    list_display = [
        "prefix",
        "name",
        "tenant",
        "scopes",
        "rpm_limit",
        "tpm_limit",
        "max_parallel_requests",
        "expires_at",
        "created_at",
        "last_used_at",
        "revoked_at",
    ]
    list_filter = ["tenant", ("expires_at", admin.EmptyFieldListFilter), ("revoked_at", admin.EmptyFieldListFilter)]
    form = ApiKeyAdminForm  # limits, expiry, models and networks checked as the portal checks them
    search_fields = ["prefix", "name", "tenant__slug"]
    readonly_fields = ["prefix", "secret_hash", "created_at", "last_used_at"]

    def has_add_permission(self, request) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False  # revoke instead: usage events and holds name the key


@admin.register(ServiceToken)
class ServiceTokenAdmin(AuditedModelAdmin):
    list_display = ["name", "prefix", "created_at", "last_used_at", "revoked_at"]
    readonly_fields = ["prefix", "secret_hash", "created_at", "last_used_at"]

    def has_add_permission(self, request) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False  # revoke instead: the audit log names the token


@admin.register(AuditLog)
class AuditLogAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "actor_label", "tenant", "action", "target_type", "target_id"]
    list_filter = ["action"]
    search_fields = ["actor_label", "action", "target_id"]
