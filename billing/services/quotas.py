"""Quota write paths: set and remove limits on a tenant's (or one key's) tokens or money."""

from decimal import Decimal

from django.contrib.auth.base_user import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import transaction

from accounts.models import ApiKey, Tenant
from accounts.services import audit_record
from billing.models import Quota


@transaction.atomic
def quota_create(
    *,
    tenant: Tenant,
    metric: str,
    window: str,
    limit: Decimal,
    enforcement: str = Quota.Enforcement.HARD,
    api_key: ApiKey | None = None,
    actor: AbstractBaseUser | None = None,
    actor_label: str = "",
) -> Quota:
    """A new limit. `limit` is tokens for a token quota, currency units for a money quota."""
    if api_key is not None and api_key.tenant_id != tenant.pk:
        raise ValidationError({"api_key": "The key belongs to another tenant."})
    quota = Quota(
        tenant=tenant, api_key=api_key, metric=metric, window=window, limit=Decimal(limit), enforcement=enforcement
    )
    if quota.metric == Quota.Metric.TOKENS and quota.limit != quota.limit.to_integral_value():
        raise ValidationError({"limit": "A token limit is a whole number of tokens."})
    quota.full_clean()
    quota.save()
    audit_record(
        action="quota.create",
        target=quota,
        actor=actor,
        actor_label=actor_label,
        tenant=tenant,
        changes={
            "api_key": api_key.prefix if api_key else None,
            "metric": metric,
            "window": window,
            "limit": str(quota.limit),
            "enforcement": enforcement,
        },
    )
    return quota


@transaction.atomic
def quota_delete(*, quota: Quota, actor: AbstractBaseUser | None = None, actor_label: str = "") -> None:
    changes = {"metric": quota.metric, "window": quota.window, "limit": str(quota.limit)}
    target_id = quota.pk
    tenant = quota.tenant
    quota.delete()
    quota.pk = target_id
    audit_record(
        action="quota.delete", target=quota, actor=actor, actor_label=actor_label, tenant=tenant, changes=changes
    )
