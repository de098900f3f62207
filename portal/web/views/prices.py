"""The tenant's prices: per token kind, per 1K and 1M tokens, by service and context tier."""

from decimal import Decimal
from typing import Any

from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from billing import selectors as billing_selectors
from billing.rating import TOKEN_KINDS
from portal.web.access import PortalContext, portal_view
from portal.web.views.common import page

KIND_LABELS = {
    "input": _("Input"),
    "cached_input": _("Cached input"),
    "cache_write": _("Cache write"),
    "cache_write_1h": _("Cache write, 1 hour"),
    "output": _("Output"),
    "reasoning": _("Reasoning"),
}
_THOUSAND = Decimal(1000)


def _shown(value: Decimal) -> str:
    """A rate without trailing zeros, never in exponent form: 0.000150 -> '0.00015'."""
    text = f"{value.normalize():f}"
    return text


def _kinds(rates: dict[str, Decimal]) -> list[dict[str, Any]]:
    return [
        {
            "kind": kind,
            "label": KIND_LABELS[kind],
            "per_1k": _shown(rates[kind] / _THOUSAND),
            "per_1m": _shown(rates[kind]),
        }
        for kind in TOKEN_KINDS
    ]


@portal_view("usage.view")
def prices(request: HttpRequest, portal: PortalContext) -> HttpResponse:
    tenant = portal.tenant
    assert tenant is not None
    plan = tenant.price_plan
    now = timezone.now()
    rows = []
    if plan is not None:
        for price in billing_selectors.tenant_prices(tenant_id=tenant.pk, plan_id=plan.pk, at=now):
            rows.append(
                {
                    "price": price,
                    "kinds": _kinds(price.rates),
                    "tier_kinds": _kinds(price.tier_rates) if price.tier_rates is not None else None,
                }
            )
    currency = plan.currency if plan is not None else tenant.currency
    return page(request, "portal/prices.html", {"rows": rows, "plan": plan, "currency": currency, "now": now})
