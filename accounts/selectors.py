"""Read paths of the tenancy layer."""

import functools

from accounts import credentials
from accounts.models import ApiKey, AuditLog, Membership, ServiceToken, Tenant
from infra.db import hot_cursor, instance_from_row
from infra.paging import keyset_page

# Every API request authenticates, so the key lookup is written out once: the equivalent
# select_related("tenant__price_plan") queryset cost several times more CPU to compile than the
# query takes to run. The plan rides along because ingest and /authorize need it next (its
# version tells whether a cached price book is current); the model comes from the foreign key.
_KEY_FIELDS = ApiKey._meta.concrete_fields
_TENANT_FIELDS = Tenant._meta.concrete_fields


@functools.cache
def _key_lookup() -> tuple[type, tuple, str]:
    """(plan model, its fields, the SQL): built on first use, when every app's models are loaded."""
    plan_model = Tenant._meta.get_field("price_plan").related_model
    plan_fields = plan_model._meta.concrete_fields
    sql = (
        f"SELECT {', '.join(f'k.{f.column}' for f in _KEY_FIELDS)}, "  # noqa: S608
        f"{', '.join(f't.{f.column}' for f in _TENANT_FIELDS)}, {', '.join(f'p.{f.column}' for f in plan_fields)} "
        f"FROM {ApiKey._meta.db_table} k JOIN {Tenant._meta.db_table} t ON t.id = k.tenant_id "
        f"LEFT JOIN {plan_model._meta.db_table} p ON p.id = t.price_plan_id WHERE k.{{column}} = %s"
    )
    return plan_model, plan_fields, sql


def _key_with_tenant(column: str, value: str | int) -> ApiKey | None:
    """One query for the key, its tenant and the tenant's price plan (all cached on the key)."""
    plan_model, plan_fields, sql = _key_lookup()
    with hot_cursor() as cursor:
        cursor.execute(sql.format(column=column), [value])
        row = cursor.fetchone()
    if row is None:
        return None
    tenant_end = len(_KEY_FIELDS) + len(_TENANT_FIELDS)
    key = instance_from_row(ApiKey, _KEY_FIELDS, row[: len(_KEY_FIELDS)])
    tenant = instance_from_row(Tenant, _TENANT_FIELDS, row[len(_KEY_FIELDS) : tenant_end])
    plan = instance_from_row(plan_model, plan_fields, row[tenant_end:]) if tenant.price_plan_id is not None else None
    Tenant.price_plan.field.set_cached_value(tenant, plan)
    ApiKey.tenant.field.set_cached_value(key, tenant)
    return key


def api_key_by_secret(raw: str) -> ApiKey | None:
    """The key whose full secret is `raw` (revoked or not), or None. One indexed query."""
    parsed = credentials.parse(raw)
    if parsed is None or parsed.kind != credentials.API_KEY_KIND:
        return None
    key = _key_with_tenant("prefix", parsed.prefix)
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
    return _key_with_tenant("id", api_key_id)


def tenant_by_slug(slug: str) -> Tenant | None:
    return Tenant.objects.filter(slug=slug).first()


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
    after = (before_id,) if before_id is not None else None
    rows, cursor = keyset_page(entries, key=("id",), after=after, limit=limit)
    return rows, cursor[0] if cursor else None
