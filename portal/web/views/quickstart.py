"""Quick start: how this tenant calls the relay (base URL, its keys, copy-paste snippets)."""

from django.conf import settings
from django.http import HttpRequest, HttpResponse

from accounts import selectors as account_selectors
from accounts.models import ApiKey
from portal.web.access import PortalContext, portal_view
from portal.web.views.common import page
from relay.selectors import relay_models_served


@portal_view("usage.view")
def quickstart(request: HttpRequest, portal: PortalContext) -> HttpResponse:
    tenant = portal.tenant
    assert tenant is not None
    keys = [
        key
        for key in account_selectors.api_keys_for_tenant(tenant_id=tenant.pk)
        if not key.revoked_at and key.has_scope(ApiKey.Scope.INGEST)
    ]
    models = [name for name in relay_models_served() if not keys or any(key.allows_model(name) for key in keys)]
    context = {
        "base_url": settings.RELAY_BASE_URL,
        "keys": keys,
        "models": models,
        "model": models[0] if models else "gpt-4o-mini",
    }
    return page(request, "portal/quickstart.html", context)
