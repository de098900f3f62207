"""API keys: list, create (the secret shown once), rename and rescope, limits and restrictions,
per-key quotas, revoke."""

import datetime as dt
import zoneinfo

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.db import transaction
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.utils import timezone
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST

from accounts import selectors as account_selectors
from accounts import services as account_services
from accounts.models import ApiKey, Tenant
from billing import selectors as billing_selectors
from billing.models import Quota
from billing.services import quotas
from metering import selectors as usage_selectors
from portal.web.access import PortalContext, portal_view, tenant_object
from portal.web.forms import ApiKeyCreateForm, ApiKeyUpdateForm, KeyControlsForm, QuotaForm
from portal.web.ranges import today_for
from portal.web.views.common import page

KEY_USAGE_DAYS = 30


def _tenant_key(tenant: Tenant, key_id: int) -> ApiKey | None:
    return account_selectors.api_key_for_tenant(tenant_id=tenant.pk, api_key_id=key_id)


def _tenant_quota(tenant: Tenant, quota_id: int) -> Quota | None:
    return billing_selectors.quota_for_tenant(tenant_id=tenant.pk, quota_id=quota_id)


with_key = tenant_object("key_id", _tenant_key, name="key")
with_quota = tenant_object("quota_id", _tenant_quota, name="quota")


@portal_view("keys.view")
def keys_list(request: HttpRequest, portal: PortalContext) -> HttpResponse:
    assert portal.tenant is not None
    keys = account_selectors.api_keys_for_tenant(tenant_id=portal.tenant.pk)
    quota_counts: dict[int, int] = {}
    for quota in billing_selectors.tenant_quotas(tenant_id=portal.tenant.pk):
        if quota.api_key_id:
            quota_counts[quota.api_key_id] = quota_counts.get(quota.api_key_id, 0) + 1
    now = timezone.now()
    for key in keys:
        key.quota_count = quota_counts.get(key.pk, 0)  # type: ignore[attr-defined]
        key.expired = key.is_expired(now)  # type: ignore[attr-defined]
    return page(request, "portal/keys.html", {"keys": keys, "form": ApiKeyCreateForm()})


@portal_view("keys.manage")
def key_create(request: HttpRequest, portal: PortalContext) -> HttpResponse:
    """GET: the form. POST: issue the key and show its secret, once (never stored, never redirected)."""
    tenant = portal.tenant
    assert tenant is not None
    form = ApiKeyCreateForm(request.POST or None)
    if request.method != "POST" or not form.is_valid():
        return page(request, "portal/key_new.html", {"form": form}, status=400 if request.method == "POST" else 200)
    data = form.cleaned_data
    try:
        with transaction.atomic():
            key, secret = account_services.api_key_create(
                tenant=tenant, name=data["name"], scopes=data["scopes"], actor=request.user
            )
            if data.get("quota_limit") is not None:
                quotas.quota_create(
                    tenant=tenant,
                    api_key=key,
                    metric=data["quota_metric"] or "tokens",
                    window=data["quota_window"] or "month",
                    limit=data["quota_limit"],
                    enforcement=data["quota_enforcement"] or "hard",
                    actor=request.user,
                )
    except ValidationError as error:
        for message in error.messages:
            form.add_error(None, message)
        return page(request, "portal/key_new.html", {"form": form}, status=400)
    response = page(request, "portal/key_created.html", {"key": key, "secret": secret})
    response["Cache-Control"] = "no-store"
    return response


def _controls_form(key: ApiKey, data=None) -> KeyControlsForm:
    return KeyControlsForm(
        data,
        initial=KeyControlsForm.initial_for(key),
        zone=zoneinfo.ZoneInfo(key.tenant.timezone),
        current_expires_at=key.expires_at,
    )


def _key_page(
    request: HttpRequest,
    tenant: Tenant,
    key: ApiKey,
    *,
    controls_form: KeyControlsForm | None = None,
    status: int = 200,
) -> HttpResponse:
    key.expired = key.is_expired(timezone.now())  # type: ignore[attr-defined]
    return page(
        request,
        "portal/key_detail.html",
        {
            "key": key,
            "quotas": billing_selectors.tenant_quotas(tenant_id=tenant.pk, api_key_id=key.pk),
            "usage": usage_selectors.usage_totals(
                tenant_id=tenant.pk,
                api_key_id=key.pk,
                start_day=today_for(tenant.timezone) - dt.timedelta(days=KEY_USAGE_DAYS - 1),
            ),
            "quota_form": QuotaForm(),
            "key_form": ApiKeyUpdateForm(initial={"name": key.name, "scopes": key.scopes}),
            "controls_form": controls_form or _controls_form(key),
        },
        status=status,
    )


@portal_view("keys.view")
@with_key
def key_detail(request: HttpRequest, portal: PortalContext, key: ApiKey) -> HttpResponse:
    assert portal.tenant is not None
    return _key_page(request, portal.tenant, key)


@portal_view("keys.manage")
@with_key
@require_POST
def key_controls(request: HttpRequest, portal: PortalContext, key: ApiKey) -> HttpResponse:
    """Save the key's limits, expiry and allowed models and networks; a refused value comes
    back on the key's page beside its field, and nothing is saved."""
    assert portal.tenant is not None
    form = _controls_form(key, request.POST)
    if form.is_valid():
        try:
            changed = account_services.api_key_set_controls(api_key=key, actor=request.user, **form.cleaned_data)
        except ValidationError as error:
            if not hasattr(error, "error_dict"):  # not about a value: the key was revoked meanwhile
                messages.error(request, " ".join(error.messages))
                return redirect("key-detail", slug=key.tenant.slug, key_id=key.pk)
            form.add_error(None, error)
        else:
            if changed:
                messages.success(request, _("Limits and restrictions saved: they apply from the key's next request."))
            else:
                messages.info(request, _("Nothing to change."))
            return redirect("key-detail", slug=key.tenant.slug, key_id=key.pk)
    return _key_page(request, portal.tenant, key, controls_form=form, status=400)


@portal_view("keys.manage")
@with_key
@require_POST
def key_update(request: HttpRequest, portal: PortalContext, key: ApiKey) -> HttpResponse:
    form = ApiKeyUpdateForm(request.POST)
    if not form.is_valid():
        messages.error(request, _("The key was not changed: give a name of at most 100 characters and a scope."))
        return redirect("key-detail", slug=key.tenant.slug, key_id=key.pk)
    try:
        changed = account_services.api_key_update(api_key=key, actor=request.user, **form.cleaned_data)
    except ValidationError as error:
        messages.error(request, " ".join(error.messages))
    else:
        if changed:
            messages.success(request, _("Key saved: the new name and scopes apply from its next request."))
        else:
            messages.info(request, _("Nothing to change."))
    return redirect("key-detail", slug=key.tenant.slug, key_id=key.pk)


@portal_view("keys.manage")
@with_key
@require_POST
def key_revoke(request: HttpRequest, portal: PortalContext, key: ApiKey) -> HttpResponse:
    if account_services.api_key_revoke(api_key=key, actor=request.user):
        label = key.name or key.prefix
        messages.success(request, _("Key %(name)s revoked: it is refused from now on.") % {"name": label})
    else:
        messages.info(request, _("That key was already revoked."))
    return redirect("key-detail", slug=key.tenant.slug, key_id=key.pk)


@portal_view("keys.manage")
@with_key
@require_POST
def key_quota_add(request: HttpRequest, portal: PortalContext, key: ApiKey) -> HttpResponse:
    form = QuotaForm(request.POST)
    if form.is_valid():
        try:
            quotas.quota_create(tenant=key.tenant, api_key=key, actor=request.user, **form.cleaned_data)
        except ValidationError as error:
            messages.error(request, " ".join(error.messages))
        else:
            messages.success(request, _("Quota added."))
    else:
        messages.error(request, _("The quota was not added: check the limit."))
    return redirect("key-detail", slug=key.tenant.slug, key_id=key.pk)


@portal_view("keys.manage")
@with_key
@with_quota
@require_POST
def key_quota_delete(request: HttpRequest, portal: PortalContext, key: ApiKey, quota: Quota) -> HttpResponse:
    if quota.api_key_id != key.pk:
        raise Http404("No such quota on this key.")
    quotas.quota_delete(quota=quota, actor=request.user)
    messages.success(request, _("Quota removed."))
    return redirect("key-detail", slug=key.tenant.slug, key_id=key.pk)
