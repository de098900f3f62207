"""Write paths of the tenancy layer: tenants, users, memberships, credentials, audit."""

import datetime as dt
import logging
import secrets

from django.contrib.auth import get_user_model, password_validation
from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.models import Group, Permission
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone
from django.utils.text import slugify

from accounts import credentials, key_controls
from accounts.models import ApiKey, AuditLog, Membership, ServiceToken, Tenant
from infra.retention import delete_in_batches

# Touching last_used_at on every request would turn each API call into a row update;
# once a minute per credential is precise enough for people reading it.
LAST_USED_RESOLUTION = dt.timedelta(minutes=1)

# Staff users who are not superusers get their admin rights from this group: read everything,
# plus the few changes operators make in the admin (docs/deploy.md, "Operators").
OPERATORS_GROUP = "operators"
OPERATORS_VIEW_APPS = (
    "accounts", "billing", "metering", "alerts", "invoicing", "relay", "axes", "django_celery_beat",
)  # fmt: skip
OPERATORS_EXTRA_PERMISSIONS = (
    "auth.view_user",
    "billing.add_ledgerentry",  # the wallets' top-up action (the ops page's top-up, in the admin)
    "django_celery_beat.change_periodictask",  # pause or retime a beat job
    "axes.delete_accessattempt",  # unlock an account or address locked out by login throttling
    "relay.add_upstream",  # the relay's upstreams (docs/relay.md): operators route the traffic
    "relay.change_upstream",
)


def audit_record(
    *,
    action: str,
    target: object,
    actor: AbstractBaseUser | None = None,
    actor_label: str = "",
    tenant: Tenant | None = None,
    changes: dict | None = None,
) -> AuditLog:
    label = actor_label or (str(actor) if actor is not None else "system")
    return AuditLog.objects.create(
        actor=actor if actor is not None and actor.pk else None,
        actor_label=label,
        tenant=tenant,
        action=action,
        target_type=type(target).__name__,
        target_id=str(getattr(target, "pk", "") or ""),
        changes=changes or {},
    )


@transaction.atomic
def tenant_create(
    *,
    name: str,
    slug: str = "",
    timezone_name: str = "UTC",
    currency: str = "USD",
    language: str = Tenant.Language.ENGLISH,
    price_plan_id: int | None = None,
    actor: AbstractBaseUser | None = None,
    actor_label: str = "",
) -> Tenant:
    tenant = Tenant(
        name=name.strip(),
        slug=slug or slugify(name),
        timezone=timezone_name,
        currency=currency.upper(),
        language=language,
        price_plan_id=price_plan_id,
    )
    if not tenant.slug:
        raise ValidationError({"slug": "Cannot derive a slug from the name; give one."})
    tenant.full_clean()
    tenant.save()
    audit_record(
        action="tenant.create",
        target=tenant,
        actor=actor,
        actor_label=actor_label,
        tenant=tenant,
        changes={"name": tenant.name, "currency": tenant.currency, "timezone": tenant.timezone},
    )
    return tenant


def login_lockout_record(*, username: str | None, ip_address: str | None, path: str, failures: int) -> AuditLog:
    """Audit a login lockout (the moment the failure limit is reached) for operators."""
    user = get_user_model().objects.filter(username=username).first() if username else None
    return AuditLog.objects.create(
        actor_label=f"address:{ip_address or 'unknown'}",
        action="login.lockout",
        target_type="User",
        target_id=str(user.pk) if user is not None else "",
        changes={
            "username": (username or "")[:150],
            "ip_address": ip_address or "",
            "path": path[:200],
            "failures": failures,
        },
    )


def operators_group_sync() -> Group:
    """Create or update the operators group with exactly its permissions; idempotent."""
    group, _ = Group.objects.get_or_create(name=OPERATORS_GROUP)
    extra = [name.split(".", 1) for name in OPERATORS_EXTRA_PERMISSIONS]
    wanted = Permission.objects.filter(content_type__app_label__in=OPERATORS_VIEW_APPS, codename__startswith="view_")
    for app_label, codename in extra:
        wanted = wanted | Permission.objects.filter(content_type__app_label=app_label, codename=codename)
    group.permissions.set(wanted)
    return group


@transaction.atomic
def user_create(
    *,
    email: str,
    password: str | None = None,
    is_staff: bool = False,
    is_superuser: bool = False,
    tenant: Tenant | None = None,
    role: str = Membership.Role.VIEWER,
    actor_label: str = "",
) -> tuple[AbstractBaseUser, str | None]:
    """Create a portal user (username = email). Returns the user and a generated password.

    A given password must pass AUTH_PASSWORD_VALIDATORS. Staff users are operators (the ops
    pages, and the admin through the operators group); only `is_superuser` gives every right.
    """
    user_model = get_user_model()
    email = user_model.objects.normalize_email(email.strip())
    if user_model.objects.filter(username__iexact=email).exists():
        raise ValidationError({"email": f"A user with email {email} already exists."})
    generated = None
    if password is None:
        generated = password = secrets.token_urlsafe(12)
    is_staff = is_staff or is_superuser
    user = user_model(username=email, email=email, is_staff=is_staff, is_superuser=is_superuser)
    try:
        password_validation.validate_password(password, user=user)
    except ValidationError as exc:
        raise ValidationError({"password": exc.messages}) from None
    user.set_password(password)
    user.full_clean(exclude=["password"])
    user.save()
    if is_staff and not is_superuser:
        user.groups.add(operators_group_sync())
    if tenant is not None:
        membership_set(user=user, tenant=tenant, role=role, actor_label=actor_label)
    return user, generated


def membership_set(*, user: AbstractBaseUser, tenant: Tenant, role: str, actor_label: str = "") -> Membership:
    if role not in Membership.Role.values:
        raise ValidationError({"role": f"Unknown role {role!r}; use one of {', '.join(Membership.Role.values)}."})
    membership, _ = Membership.objects.update_or_create(user=user, tenant=tenant, defaults={"role": role})
    audit_record(
        action="membership.set", target=membership, actor_label=actor_label, tenant=tenant, changes={"role": role}
    )
    return membership


def _validate_scopes(scopes: list[str]) -> list[str]:
    unknown = sorted(set(scopes) - set(ApiKey.Scope.values))
    if unknown:
        raise ValidationError({"scopes": f"Unknown scope(s) {', '.join(unknown)}; use ingest and/or read."})
    if not scopes:
        raise ValidationError({"scopes": "Give at least one scope (ingest, read)."})
    return sorted(set(scopes))


@transaction.atomic
def api_key_create(
    *,
    tenant: Tenant,
    name: str = "",
    scopes: list[str] | None = None,
    expires_at: dt.datetime | None = None,
    allowed_models: list[str] | None = None,
    allowed_networks: list[str] | None = None,
    rpm_limit: int | None = None,
    tpm_limit: int | None = None,
    max_parallel_requests: int | None = None,
    actor: AbstractBaseUser | None = None,
    actor_label: str = "",
) -> tuple[ApiKey, str]:
    """Issue a key, with its controls if given (checked as api_key_set_controls checks them).
    Returns the row and the secret, which is not stored and never shown again."""
    valid_scopes = _validate_scopes(scopes if scopes is not None else ["ingest", "read"])
    controls = key_controls.clean_key_controls(
        expires_at=expires_at,
        allowed_models=allowed_models or [],
        allowed_networks=allowed_networks or [],
        rpm_limit=rpm_limit,
        tpm_limit=tpm_limit,
        max_parallel_requests=max_parallel_requests,
        now=timezone.now(),
    )
    issued = credentials.issue(credentials.API_KEY_KIND)
    key = ApiKey.objects.create(
        tenant=tenant,
        name=name.strip()[:100],
        prefix=issued.prefix,
        secret_hash=issued.secret_hash,
        scopes=valid_scopes,
        **controls,
    )
    changes = {"name": key.name, "scopes": key.scopes, "prefix": key.prefix}
    changes.update({field: _audit_value(value) for field, value in controls.items() if value not in (None, [])})
    audit_record(
        action="api_key.create", target=key, actor=actor, actor_label=actor_label, tenant=tenant, changes=changes
    )
    return key, issued.secret


def api_key_update(
    *,
    api_key: ApiKey,
    name: str,
    scopes: list[str],
    actor: AbstractBaseUser | None = None,
    actor_label: str = "",
) -> bool:
    """Rename a key or change its scopes, effective from its next request; audited with the
    values before and after. Returns False when nothing changed. A revoked key stays as it was."""
    new_name, new_scopes = name.strip()[:100], _validate_scopes(scopes)
    with transaction.atomic():
        locked = ApiKey.objects.select_for_update().select_related("tenant").get(pk=api_key.pk)
        if locked.revoked_at is not None:
            raise ValidationError("A revoked key cannot be changed.")
        before = {"name": locked.name, "scopes": locked.scopes}
        after = {"name": new_name, "scopes": new_scopes}
        if before == after:
            return False
        ApiKey.objects.filter(pk=locked.pk).update(name=new_name, scopes=new_scopes)
        audit_record(
            action="api_key.update",
            target=locked,
            actor=actor,
            actor_label=actor_label,
            tenant=locked.tenant,
            changes={"before": before, "after": after},
        )
    api_key.name, api_key.scopes = new_name, new_scopes
    return True


def _audit_value(value: object) -> object:
    """A control's value as the audit log's JSON holds it (datetimes as ISO 8601 text)."""
    return value.isoformat() if isinstance(value, dt.datetime) else value


def _set_and_audit(*, row: ApiKey | Tenant, values: dict, action: str, actor, actor_label: str, tenant: Tenant) -> dict:
    """Write the fields of `values` that differ from the locked `row`; audit their before and
    after. Returns the changed fields (empty: nothing written, nothing recorded)."""
    changed = {field: value for field, value in values.items() if getattr(row, field) != value}
    if not changed:
        return {}
    type(row).objects.filter(pk=row.pk).update(**changed)
    audit_record(
        action=action,
        target=row,
        actor=actor,
        actor_label=actor_label,
        tenant=tenant,
        changes={
            "before": {field: _audit_value(getattr(row, field)) for field in changed},
            "after": {field: _audit_value(value) for field, value in changed.items()},
        },
    )
    return changed


def api_key_set_controls(
    *,
    api_key: ApiKey,
    expires_at: dt.datetime | None,
    allowed_models: list[str],
    allowed_networks: list[str],
    rpm_limit: int | None,
    tpm_limit: int | None,
    max_parallel_requests: int | None,
    actor: AbstractBaseUser | None = None,
    actor_label: str = "",
) -> bool:
    """Set a key's expiry, allowed models and networks and its per-minute limits, all at once
    (None or [] for none), checked by accounts.key_controls; audited with the changed
    fields before and after. Returns False when nothing changed. A revoked key stays as it was."""
    with transaction.atomic():
        locked = ApiKey.objects.select_for_update().select_related("tenant").get(pk=api_key.pk)
        if locked.revoked_at is not None:
            raise ValidationError("A revoked key cannot be changed.")
        values = key_controls.clean_key_controls(
            expires_at=expires_at,
            allowed_models=allowed_models,
            allowed_networks=allowed_networks,
            rpm_limit=rpm_limit,
            tpm_limit=tpm_limit,
            max_parallel_requests=max_parallel_requests,
            now=timezone.now(),
            current_expires_at=locked.expires_at,
        )
        changed = _set_and_audit(
            row=locked,
            values=values,
            action="api_key.set_controls",
            actor=actor,
            actor_label=actor_label,
            tenant=locked.tenant,
        )
    for field, value in values.items():
        setattr(api_key, field, value)
    return bool(changed)


def tenant_set_limits(
    *,
    tenant: Tenant,
    rpm_limit: int | None,
    tpm_limit: int | None,
    max_parallel_requests: int | None,
    actor: AbstractBaseUser | None = None,
    actor_label: str = "",
) -> bool:
    """Set the per-minute limits over all of a tenant's keys together (None: no limit), checked
    by accounts.key_controls; audited with the changed fields before and after. Returns
    False when nothing changed."""
    values = key_controls.clean_tenant_limits(
        rpm_limit=rpm_limit, tpm_limit=tpm_limit, max_parallel_requests=max_parallel_requests
    )
    with transaction.atomic():
        locked = Tenant.objects.select_for_update().get(pk=tenant.pk)
        changed = _set_and_audit(
            row=locked, values=values, action="tenant.set_limits", actor=actor, actor_label=actor_label, tenant=locked
        )
    for field, value in values.items():
        setattr(tenant, field, value)
    return bool(changed)


def api_key_revoke(*, api_key: ApiKey, actor: AbstractBaseUser | None = None, actor_label: str = "") -> bool:
    """Revoke once; revoking an already revoked key changes nothing and returns False."""
    with transaction.atomic():
        changed = ApiKey.objects.filter(pk=api_key.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())
        if changed:
            audit_record(
                action="api_key.revoke", target=api_key, actor=actor, actor_label=actor_label, tenant=api_key.tenant
            )
    api_key.refresh_from_db(fields=["revoked_at"])
    return bool(changed)


@transaction.atomic
def service_token_create(*, name: str, actor_label: str = "") -> tuple[ServiceToken, str]:
    issued = credentials.issue(credentials.SERVICE_TOKEN_KIND)
    token = ServiceToken.objects.create(name=name.strip()[:100], prefix=issued.prefix, secret_hash=issued.secret_hash)
    audit_record(action="service_token.create", target=token, actor_label=actor_label, changes={"name": token.name})
    return token, issued.secret


def credential_touch(*, credential: ApiKey | ServiceToken) -> None:
    """Record use, at most once per LAST_USED_RESOLUTION, with a claim-style conditional UPDATE."""
    now = timezone.now()
    if credential.last_used_at and now - credential.last_used_at < LAST_USED_RESOLUTION:
        return
    type(credential).objects.filter(pk=credential.pk).exclude(last_used_at__gte=now - LAST_USED_RESOLUTION).update(
        last_used_at=now
    )
    credential.last_used_at = now


def audit_log_prune(*, before: dt.datetime) -> int:
    """Delete audit entries created before `before` (AUDIT_LOG_RETENTION_DAYS, at least seven
    years). Never silently: a WARNING line and a new audit entry say how many went and up to when."""
    old = AuditLog.objects.filter(created_at__lt=before)
    oldest = old.order_by("created_at").values_list("created_at", flat=True).first()
    if oldest is None:
        return 0
    deleted = delete_in_batches(old)
    logging.getLogger("accounts.audit").warning(
        "audit_log.pruned", extra={"deleted": deleted, "before": before.isoformat(), "oldest": oldest.isoformat()}
    )
    audit_record(
        action="audit_log.prune",
        target=AuditLog(),
        actor_label="system",
        changes={"deleted": deleted, "before": before.isoformat(), "oldest": oldest.isoformat()},
    )
    return deleted
