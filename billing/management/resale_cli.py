"""What the resale commands share: finding a plan and printing a derivation."""

from django.core.management.base import CommandError, OutputWrapper

from billing.models import PricePlan
from billing.services.resale import DeriveResult


def plan_or_error(slug: str, *, option: str = "--plan") -> PricePlan:
    plan = PricePlan.objects.select_related("cost_plan").filter(slug=slug).first()
    if plan is None:
        known = ", ".join(PricePlan.objects.order_by("slug").values_list("slug", flat=True)[:20]) or "none yet"
        raise CommandError(f"{option}: no price plan {slug!r} (plans: {known}).")
    return plan


def write_derived(out: OutputWrapper, results: list[DeriveResult], *, verbosity: int) -> None:
    for result in results:
        out.write(f"Derived {result.summary()}")
        if verbosity > 1 and result.created:
            out.write(f"  new versions: {', '.join(result.created)}")
        if result.no_markup:
            shown = ", ".join(result.no_markup[:10]) + (" ..." if len(result.no_markup) > 10 else "")
            out.write(f"  not sold (no markup covers them): {shown}")
