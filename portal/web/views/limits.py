"""The tenant's rate limits (over all of its keys together) and every active key's controls.

Every member may read the page; owners and admins (keys.manage) change the tenant's limits.
A key's own controls are changed on its page (views/keys.py).
"""

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.utils import timezone
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST

from accounts import selectors as account_selectors
from accounts import services as account_services
from accounts.key_controls import LIMIT_FIELDS
from accounts.models import Tenant
from portal.web.access import PortalContext, portal_view
from portal.web.forms import LimitsForm
from portal.web.views.common import page


def _limits_page(request: HttpRequest, tenant: Tenant, *, form: LimitsForm | None = None, status: int = 200):
    now = timezone.now()
    keys = [key for key in account_selectors.api_keys_for_tenant(tenant_id=tenant.pk) if not key.revoked_at]
    for key in keys:
        key.expired = key.is_expired(now)  # type: ignore[attr-defined]
    form = form or LimitsForm(initial={field: getattr(tenant, field) for field in LIMIT_FIELDS})
    return page(request, "portal/limits.html", {"form": form, "keys": keys}, status=status)


@portal_view("usage.view")
def limits(request: HttpRequest, portal: PortalContext) -> HttpResponse:
    assert portal.tenant is not None
    return _limits_page(request, portal.tenant)


@portal_view("keys.manage")
@require_POST
def limits_update(request: HttpRequest, portal: PortalContext) -> HttpResponse:
    tenant = portal.tenant
    assert tenant is not None
    form = LimitsForm(request.POST)
    if form.is_valid():
        try:
            changed = account_services.tenant_set_limits(tenant=tenant, actor=request.user, **form.cleaned_data)
        except ValidationError as error:
            form.add_error(None, error)
        else:
            if changed:
                messages.success(request, _("Tenant limits saved: they apply from the next request."))
            else:
                messages.info(request, _("Nothing to change."))
            return redirect("limits", slug=tenant.slug)
    return _limits_page(request, tenant, form=form, status=400)
