"""Price plans and price versions. A price is never edited: a change adds a version."""

import datetime as dt
from collections.abc import Iterable
from decimal import Decimal

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from accounts.services import audit_record
from billing.models import PRICE_RATE_FIELDS, Price, PricePlan, ServiceTier
from billing.periods import EARLIEST

# Usage can arrive stamped long before its model's first price: client retry queues, backfills,
# clock skew, or a deployment whose prices were imported today. So the FIRST plan-wide version
# of a model (or glob) applies from the beginning, the earliest time ingest accepts, unless the
# caller gives a date; later versions take effect when they say. A tenant override's first
# version starts now: it changes one tenant's terms, it does not reach back over usage the plan
# priced. docs/billing-rules.md section 4.
PRICED_FROM_BEGINNING = EARLIEST

RATE_FIELDS = PRICE_RATE_FIELDS  # every *_per_mtok column of Price (billing/models.py)
# Whole-number fields a price may set besides its rates.
COUNT_FIELDS = ("tier_threshold", "max_input_tokens", "max_output_tokens")


def plan_get_or_create(*, slug: str, name: str = "", currency: str = "USD", actor_label: str = "") -> PricePlan:
    plan, created = PricePlan.objects.get_or_create(
        slug=slug, defaults={"name": name or slug, "currency": currency.upper()}
    )
    if created:
        audit_record(action="price_plan.create", target=plan, actor_label=actor_label, changes={"currency": currency})
    return plan


def patterns_without_versions(*, plan: PricePlan, patterns: Iterable[str]) -> set[str]:
    """The patterns of `patterns` with no plan-wide version in `plan` yet (their next version is the first)."""
    wanted = set(patterns)
    existing = Price.objects.filter(plan=plan, tenant__isnull=True, model_pattern__in=wanted)
    return wanted - set(existing.values_list("model_pattern", flat=True).distinct().order_by())


def default_effective_from(*, first: bool, now: dt.datetime | None = None) -> dt.datetime:
    """When a version added without a date takes effect: a first version from the beginning, else now."""
    return PRICED_FROM_BEGINNING if first else (now or timezone.now())


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
    service_tier: str = ServiceTier.DEFAULT,
    **optional_rates: Decimal | int | None,
) -> Price:
    """Add a price version (optional: cached/cache-write/tier rates, tier_threshold and the
    length limits), or a service tier's row of one.

    Without `effective_from`, the first plan-wide version of the pattern applies from the
    beginning (PRICED_FROM_BEGINNING), any other version from now; a service tier's row joins
    the newest version of the pattern (a version's tiers share its effective_from).
    """
    unknown = set(optional_rates) - set(RATE_FIELDS) - set(COUNT_FIELDS)
    if unknown:
        raise ValidationError(f"Unknown price field(s): {', '.join(sorted(unknown))}.")
    model_pattern = model_pattern.strip()
    if effective_from is None and service_tier != ServiceTier.DEFAULT:
        versions = Price.objects.filter(plan=plan, model_pattern=model_pattern)
        versions = versions.filter(tenant__pk=tenant_id) if tenant_id is not None else versions.filter(tenant=None)
        newest = versions.order_by("-effective_from").values_list("effective_from", flat=True).first()
        if newest is None:
            raise ValidationError(f"Add the default-tier price of {model_pattern!r} before its {service_tier} row.")
        effective_from = newest
    if effective_from is None:
        # Serialize with imports into this plan: "is this the first version?" must not race.
        PricePlan.objects.select_for_update().filter(pk=plan.pk).first()
        first = tenant_id is None and bool(patterns_without_versions(plan=plan, patterns=[model_pattern]))
        effective_from = default_effective_from(first=first)
    price = Price(
        plan=plan,
        tenant_id=tenant_id,
        model_pattern=model_pattern,
        effective_from=effective_from,
        service_tier=service_tier,
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
        changes={
            field: str(getattr(price, field))
            for field in ("model_pattern", "effective_from", "service_tier", *RATE_FIELDS, *COUNT_FIELDS)
        },
    )
    return price
