"""Read paths of the tenancy layer."""

from django.db import connection

from portal.accounts import credentials
from portal.accounts.models import ApiKey, AuditLog, Membership, ServiceToken, Tenant

# Every API request authenticates, so the key lookup is written out once: the equivalent
# select_related queryset cost several times more CPU to compile than the query takes to run.
_KEY_FIELDS = ApiKey._meta.concrete_fields
_TENANT_FIELDS = Tenant._meta.concrete_fields
_KEY_WITH_TENANT_SQL = (
    f"SELECT {', '.join(f'k.{f.column}' for f in _KEY_FIELDS)}, {', '.join(f't.{f.column}' for f in _TENANT_FIELDS)} "  # noqa: S608
    f"FROM {ApiKey._meta.db_table} k JOIN {Tenant._meta.db_table} t ON t.id = k.tenant_id WHERE k.{{column}} = %s"
)


def _from_row(model, fields, values):
    """Build a model instance from raw values with the converters the ORM would apply.

    The backend's converters matter: SQLite returns datetimes as naive strings that only
    Django's converter makes aware (UTC); PostgreSQL's are already aware.
    """
    converted = []
    for field, value in zip(fields, values, strict=True):
        column = field.get_col(model._meta.db_table)
        for converter in connection.ops.get_db_converters(column) + field.get_db_converters(connection):
            value = converter(value, column, connection)  # noqa: PLW2901 - applying the chain
        converted.append(value)
    return model.from_db(connection.alias, [field.attname for field in fields], converted)


def _key_with_tenant(column: str, value: str | int) -> ApiKey | None:
    """One query for the key and its tenant (what select_related("tenant") would load)."""
    with connection.cursor() as cursor:
        cursor.execute(_KEY_WITH_TENANT_SQL.format(column=column), [value])
        row = cursor.fetchone()
    if row is None:
        return None
    key = _from_row(ApiKey, _KEY_FIELDS, row[: len(_KEY_FIELDS)])
    ApiKey.tenant.field.set_cached_value(key, _from_row(Tenant, _TENANT_FIELDS, row[len(_KEY_FIELDS) :]))
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
