"""The front door: pick the tenant to show, switch tenants."""

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.views.decorators.http import require_POST

from portal.web.access import SESSION_TENANT, portal_context, tenant_switch
from portal.web.views.common import page


@login_required
def home(request: HttpRequest) -> HttpResponse:
    """The session's tenant (or the first membership); operators without one land on operations."""
    context = portal_context(request)
    current = request.session.get(SESSION_TENANT)
    membership = next((m for m in context.memberships if m.tenant.slug == current), None)
    membership = membership or (context.memberships[0] if context.memberships else None)
    if membership is not None:
        return redirect("dashboard", slug=membership.tenant.slug)
    if request.user.is_staff:
        return redirect("ops-tenants")
    return page(request, "portal/no_tenant.html")


@login_required
@require_POST
def switch(request: HttpRequest) -> HttpResponse:
    """The tenant switcher: remember the chosen tenant (404 unless a member) and open its dashboard."""
    tenant = tenant_switch(request, request.POST.get("tenant", ""))
    return redirect("dashboard", slug=tenant.slug)
