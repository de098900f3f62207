"""Money: the balance, the forecast, top-ups, the ledger, invoices."""

from django.http import HttpRequest, HttpResponse

from billing import selectors as billing_selectors
from invoicing import selectors as invoice_selectors
from portal.web.access import PortalContext, portal_view
from portal.web.dashboard import FORECAST_DAYS, balance_forecast
from portal.web.views.common import int_param, page

PAGE_SIZE = 50
INVOICES_SHOWN = 24


@portal_view("billing.view")
def billing(request: HttpRequest, portal: PortalContext) -> HttpResponse:
    tenant = portal.tenant
    assert tenant is not None
    balance, daily_spend, days_left = balance_forecast(tenant)
    topups, _ = billing_selectors.ledger_entries_page(tenant_id=tenant.pk, kinds=["topup"], limit=10)
    entries, next_before = billing_selectors.ledger_entries_page(
        tenant_id=tenant.pk, before_id=int_param(request.GET.get("before")), limit=PAGE_SIZE
    )
    return page(
        request,
        "portal/billing.html",
        {
            "balance": balance,
            "daily_spend": daily_spend,
            "days_left": days_left,
            "forecast_days": FORECAST_DAYS,
            "topups": topups,
            "entries": entries,
            "next_before": next_before,
            "is_first_page": not request.GET.get("before"),
            "invoices": list(invoice_selectors.invoices_for_tenant(tenant_id=tenant.pk)[:INVOICES_SHOWN]),
        },
    )
