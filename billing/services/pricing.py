"""Price plans and price versions. A price is never edited: a change adds a version."""

import datetime as dt
from decimal import Decimal

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from billing.models import Price, PricePlan
from portal.accounts.services import audit_record

RATE_FIELDS = (
    "input_per_mtok", "output_per_mtok", "cached_input_per_mtok", "cache_write_per_mtok",
    "tier_input_per_mtok", "tier_output_per_mtok", "tier_cached_input_per_mtok", "tier_cache_write_per_mtok",
)  # fmt: skip


def plan_get_or_create(*, slug: str, name: str = "", currency: str = "USD", actor_label: str = "") -> PricePlan:
    plan, created = PricePlan.objects.get_or_create(
        slug=slug, defaults={"name": name or slug, "currency": currency.upper()}
    )
    if created:
        audit_record(action="price_plan.create", target=plan, actor_label=actor_label, changes={"currency": currency})
    return plan


@transaction.atomic
def price_add(
    *,
    plan: PricePlan,
    model_pattern: str,
    input_per_mtok: Decimal,
    output_per_mtok: Decimal,
    effective_from: dt.datetime | None = None,
    tenant_id: int | None = None,
    source: str = "",
    actor_label: str = "",
    **optional_rates: Decimal | int | None,
) -> Price:
    """Add a price version (optional: cached/cache-write/tier rates and tier_threshold)."""
    unknown = set(optional_rates) - set(RATE_FIELDS) - {"tier_threshold"}
    if unknown:
        raise ValidationError(f"Unknown price field(s): {', '.join(sorted(unknown))}.")
    price = Price(
        plan=plan,
        tenant_id=tenant_id,
        model_pattern=model_pattern.strip(),
        effective_from=effective_from or timezone.now(),
        input_per_mtok=input_per_mtok,
        output_per_mtok=output_per_mtok,
        source=source,
        **optional_rates,
    )
    price.full_clean()
    price.save()
    audit_record(
        action="price.add",
        target=price,
        actor_label=actor_label,
        changes={field: str(getattr(price, field)) for field in ("model_pattern", *RATE_FIELDS, "tier_threshold")},
    )
    return price
