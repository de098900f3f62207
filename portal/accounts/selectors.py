"""Read paths of the tenancy layer."""

from portal.accounts import credentials
from portal.accounts.models import ApiKey, AuditLog, Membership, ServiceToken, Tenant


def api_key_by_secret(raw: str) -> ApiKey | None:
    """The key whose full secret is `raw` (revoked or not), or None. One indexed query."""
    parsed = credentials.parse(raw)
    if parsed is None or parsed.kind != credentials.API_KEY_KIND:
        return None
    key = ApiKey.objects.select_related("tenant").filter(prefix=parsed.prefix).first()
    if key is None or not credentials.matches(raw, key.secret_hash):
        return None
    return key


def service_token_by_secret(raw: str) -> ServiceToken | None:
    parsed = credentials.parse(raw)
    if parsed is None or parsed.kind != credentials.SERVICE_TOKEN_KIND:
        return None
    token = ServiceToken.objects.filter(prefix=parsed.prefix).first()
    if token is None or not credentials.matches(raw, token.secret_hash):
        return None
    return token


def api_key_by_id(api_key_id: int) -> ApiKey | None:
    return ApiKey.objects.select_related("tenant").filter(pk=api_key_id).first()


def tenant_by_slug(slug: str) -> Tenant | None:
    return Tenant.objects.filter(slug=slug).first()


def tenants_for_user(user) -> list[Tenant]:
    if user.is_staff:
        return list(Tenant.objects.all())
    return [m.tenant for m in Membership.objects.filter(user=user).select_related("tenant")]


def membership_role(*, user, tenant: Tenant) -> str | None:
    return Membership.objects.filter(user=user, tenant=tenant).values_list("role", flat=True).first()


# --- Portal pages ------------------------------------------------------------------------------


def memberships_for_user(user) -> list[Membership]:
    """The user's own memberships (staff included: being an operator is not a membership)."""
    return list(Membership.objects.filter(user=user).select_related("tenant").order_by("tenant__name"))


def all_tenants() -> list[Tenant]:
    return list(Tenant.objects.order_by("name"))


def api_keys_for_tenant(*, tenant_id: int) -> list[ApiKey]:
    return list(ApiKey.objects.filter(tenant_id=tenant_id).order_by("revoked_at", "-created_at"))


def api_key_for_tenant(*, tenant_id: int, api_key_id: int) -> ApiKey | None:
    return ApiKey.objects.select_related("tenant").filter(tenant_id=tenant_id, pk=api_key_id).first()


def audit_log_page(
    *, tenant_id: int | None = None, action_prefix: str = "", before_id: int | None = None, limit: int = 50
) -> tuple[list[AuditLog], int | None]:
    """Newest first, keyset-paginated on id. Returns the rows and the id to continue before."""
    entries = AuditLog.objects.select_related("tenant")
    if tenant_id is not None:
        entries = entries.filter(tenant_id=tenant_id)
    if action_prefix:
        entries = entries.filter(action__startswith=action_prefix)
    if before_id is not None:
        entries = entries.filter(pk__lt=before_id)
    rows = list(entries.order_by("-id")[: limit + 1])
    if len(rows) <= limit:
        return rows, None
    return rows[:limit], rows[limit - 1].pk
