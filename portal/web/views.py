"""Browser views: thin. Pick the tenant the user may see, read selectors, render."""

import datetime as dt

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone

from billing import selectors as billing_selectors
from metering import selectors as usage_selectors
from portal.accounts import selectors as account_selectors


@login_required
def dashboard(request: HttpRequest) -> HttpResponse:
    tenants = account_selectors.tenants_for_user(request.user)
    tenant = None
    wanted = request.GET.get("tenant")
    if tenants:
        tenant = next((t for t in tenants if t.slug == wanted), tenants[0])
    context: dict = {"tenants": tenants, "tenant": tenant}
    if tenant is not None:
        end = timezone.now()
        start = end - dt.timedelta(days=30)
        by_model = usage_selectors.usage_aggregate(
            tenant_id=tenant.pk, tz_name=tenant.timezone, start=start, end=end, group_by="model"
        )
        context.update(
            by_model=by_model,
            total_requests=sum(row["requests"] for row in by_model),
            total_tokens=sum(row["input_tokens"] + row["output_tokens"] for row in by_model),
            total_cost=sum((row["cost"] for row in by_model), 0),
            balance=billing_selectors.wallet_balance(tenant_id=tenant.pk),
        )
    return render(request, "portal/dashboard.html", context)
