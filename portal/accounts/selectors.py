"""Read paths of the tenancy layer."""

from portal.accounts import credentials
from portal.accounts.models import ApiKey, Membership, ServiceToken, Tenant


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
