"""Alerts: rules and the channels they notify (add, edit, send a test), and what was sent."""

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST

from accounts import selectors as account_selectors
from accounts.models import Tenant
from alerts import selectors as alert_selectors
from alerts import services as alert_services
from alerts.models import AlertRule, NotificationChannel
from billing import selectors as billing_selectors
from portal.web.access import PortalContext, portal_view, tenant_object
from portal.web.forms import AlertRuleForm, ChannelForm, quota_choice_label
from portal.web.views.common import page

HISTORY_SIZE = 50


def _tenant_channel(tenant: Tenant, channel_id: int) -> NotificationChannel | None:
    return alert_selectors.channel_for_tenant(tenant_id=tenant.pk, channel_id=channel_id)


def _tenant_rule(tenant: Tenant, rule_id: int) -> AlertRule | None:
    return alert_selectors.rule_for_tenant(tenant_id=tenant.pk, rule_id=rule_id)


with_channel = tenant_object("channel_id", _tenant_channel, name="channel")
with_rule = tenant_object("rule_id", _tenant_rule, name="rule")


def _rule_form(tenant: Tenant, data=None, initial: dict | None = None) -> AlertRuleForm:
    return AlertRuleForm(
        data,
        initial=initial,
        quotas=billing_selectors.tenant_quotas(tenant_id=tenant.pk),
        keys=[k for k in account_selectors.api_keys_for_tenant(tenant_id=tenant.pk) if not k.revoked_at],
        channels=alert_selectors.channels_for_tenant(tenant_id=tenant.pk),
    )


@portal_view("alerts.view")
def alerts(request: HttpRequest, portal: PortalContext) -> HttpResponse:
    tenant = portal.tenant
    assert tenant is not None
    key_names = {k.pk: k.name or k.prefix for k in account_selectors.api_keys_for_tenant(tenant_id=tenant.pk)}
    rules = alert_selectors.rules_for_tenant(tenant_id=tenant.pk)
    for rule in rules:
        rule.quota_label = quota_choice_label(rule.quota, key_names) if rule.quota else ""  # type: ignore[attr-defined]
    return page(
        request,
        "portal/alerts.html",
        {
            "rules": rules,
            "channels": alert_selectors.channels_for_tenant(tenant_id=tenant.pk),
            "events": alert_selectors.alert_events_for_tenant(tenant_id=tenant.pk, limit=HISTORY_SIZE),
            "tests": [
                d
                for d in alert_selectors.deliveries_for_tenant(tenant_id=tenant.pk, limit=HISTORY_SIZE)
                if d.event_id is None
            ][:10],
        },
    )


def _rule_values(tenant: Tenant, data: dict) -> tuple[list[NotificationChannel], dict]:
    """The form's cleaned data as the alert services take it: rows of this tenant only."""
    channels = [c for c in alert_selectors.channels_for_tenant(tenant_id=tenant.pk) if c.pk in data["channels"]]
    api_key = (
        account_selectors.api_key_for_tenant(tenant_id=tenant.pk, api_key_id=data["api_key"])
        if data["api_key"]
        else None
    )
    values = {
        "name": data["name"],
        "quota_id": data["quota"],
        "api_key": api_key,
        "window": data["window"],
        "amount": data["amount"],
        "threshold_unit": data["threshold_unit"],
        "thresholds": data["thresholds"],
        "forecast_days": data["forecast_days"],
        "spike_factor": data["spike_factor"],
    }
    return channels, values


@portal_view("alerts.manage")
def rule_create(request: HttpRequest, portal: PortalContext) -> HttpResponse:
    tenant = portal.tenant
    assert tenant is not None
    form = _rule_form(tenant, request.POST or None)
    if request.method == "POST" and form.is_valid():
        channels, values = _rule_values(tenant, form.cleaned_data)
        try:
            alert_services.alert_rule_create(
                tenant=tenant, kind=form.cleaned_data["kind"], channels=channels, actor=request.user, **values
            )
        except alert_services.AlertConfigError as error:
            form.add_error(None, str(error))
        else:
            messages.success(request, _("Alert rule added."))
            return redirect("alerts", slug=tenant.slug)
    status = 400 if request.method == "POST" else 200
    return page(request, "portal/alert_rule_form.html", {"form": form, "rule": None}, status=status)


@portal_view("alerts.manage")
@with_rule
def rule_edit(request: HttpRequest, portal: PortalContext, rule: AlertRule) -> HttpResponse:
    """GET: the rule's form, filled in. POST: save it (the kind stays)."""
    tenant = portal.tenant
    assert tenant is not None
    form = _rule_form(tenant, request.POST or None, initial=_rule_initial(rule))
    form.fields["kind"].disabled = True  # another kind is another rule: the posted value is ignored
    if request.method == "POST" and form.is_valid():
        channels, values = _rule_values(tenant, form.cleaned_data)
        try:
            changed = alert_services.alert_rule_update(rule=rule, channels=channels, actor=request.user, **values)
        except alert_services.AlertConfigError as error:
            form.add_error(None, str(error))
        else:
            if changed:
                messages.success(request, _("Alert rule saved."))
            else:
                messages.info(request, _("Nothing to change."))
            return redirect("alerts", slug=tenant.slug)
    status = 400 if request.method == "POST" else 200
    return page(request, "portal/alert_rule_form.html", {"form": form, "rule": rule}, status=status)


def _rule_initial(rule: AlertRule) -> dict:
    return {
        "name": rule.name,
        "kind": rule.kind,
        "quota": rule.quota_id,
        "api_key": rule.api_key_id,
        "window": rule.window,
        "amount": rule.amount,
        "threshold_unit": rule.threshold_unit,
        "thresholds": ", ".join(rule.thresholds),
        "forecast_days": rule.forecast_days,
        "spike_factor": rule.spike_factor,
        "channels": [channel.pk for channel in rule.channels.all()],
    }


@portal_view("alerts.manage")
def channel_create(request: HttpRequest, portal: PortalContext) -> HttpResponse:
    tenant = portal.tenant
    assert tenant is not None
    form = ChannelForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            alert_services.notification_channel_create(
                tenant=tenant,
                kind=form.cleaned_data["kind"],
                name=form.cleaned_data["name"],
                config=form.config(),
                enabled=form.cleaned_data["enabled"],
                actor=request.user,
            )
        except alert_services.AlertConfigError as error:
            form.add_error(None, str(error))
        else:
            messages.success(request, _("Channel added. Send it a test to check it works."))
            return redirect("alerts", slug=tenant.slug)
    status = 400 if request.method == "POST" else 200
    return page(request, "portal/alert_channel_form.html", {"form": form, "channel": None}, status=status)


def _channel_initial(channel: NotificationChannel) -> dict:
    config = channel.config
    return {
        "kind": channel.kind,
        "name": channel.name,
        "enabled": channel.enabled,
        "recipients": ", ".join(config.get("recipients", [])),
        "webhook_url": config.get("webhook_url", ""),
        "keyword": config.get("keyword", ""),
        "url": config.get("url", ""),
    }


def _channel_page(
    request: HttpRequest, portal: PortalContext, channel: NotificationChannel, form: ChannelForm, status: int = 200
) -> HttpResponse:
    assert portal.tenant is not None
    deliveries = alert_selectors.deliveries_for_tenant(tenant_id=portal.tenant.pk, channel_id=channel.pk, limit=20)
    return page(
        request,
        "portal/alert_channel_form.html",
        {"form": form, "channel": channel, "deliveries": deliveries},
        status=status,
    )


def _channel_form(channel: NotificationChannel, data=None) -> ChannelForm:
    form = ChannelForm(data, initial=_channel_initial(channel))
    form.fields["kind"].disabled = True  # a channel keeps its kind and name
    form.fields["name"].disabled = True
    return form


@portal_view("alerts.view")
@with_channel
def channel_edit(request: HttpRequest, portal: PortalContext, channel: NotificationChannel) -> HttpResponse:
    """The channel's settings and its recent deliveries (the form posts to channel_update)."""
    return _channel_page(request, portal, channel, _channel_form(channel))


@portal_view("alerts.manage")
@with_channel
@require_POST
def channel_update(request: HttpRequest, portal: PortalContext, channel: NotificationChannel) -> HttpResponse:
    form = _channel_form(channel, request.POST)
    if form.is_valid():
        try:
            alert_services.notification_channel_update(
                channel=channel,
                config=form.config(current=channel.config),
                enabled=form.cleaned_data["enabled"],
                actor=request.user,
            )
        except alert_services.AlertConfigError as error:
            form.add_error(None, str(error))
        else:
            messages.success(request, _("Channel saved."))
            return redirect("alert-channel", slug=channel.tenant.slug, channel_id=channel.pk)
    return _channel_page(request, portal, channel, form, status=400)


@portal_view("alerts.manage")
@with_channel
@require_POST
def channel_test(request: HttpRequest, portal: PortalContext, channel: NotificationChannel) -> HttpResponse:
    """Queue a test message; a worker sends it, and its delivery record shows how it went."""
    _delivery, queued = alert_services.notification_channel_send_test(channel=channel)
    if queued:
        messages.info(
            request,
            _("Test queued for %(name)s. Refresh the page in a few seconds to see how it went.")
            % {"name": channel.name},
        )
    else:
        messages.info(request, _("A test for %(name)s is already queued.") % {"name": channel.name})
    if request.POST.get("back") == "list":
        return redirect("alerts", slug=channel.tenant.slug)
    return redirect("alert-channel", slug=channel.tenant.slug, channel_id=channel.pk)


@portal_view("alerts.manage")
@with_rule
@require_POST
def rule_toggle(request: HttpRequest, portal: PortalContext, rule: AlertRule) -> HttpResponse:
    """Pause or resume a rule (its history stays)."""
    enabled = not rule.enabled
    alert_services.alert_rule_set_enabled(rule=rule, enabled=enabled, actor=request.user)
    messages.success(request, _("Rule resumed.") if enabled else _("Rule paused."))
    return redirect("alerts", slug=rule.tenant.slug)


@portal_view("alerts.manage")
@with_rule
@require_POST
def rule_delete(request: HttpRequest, portal: PortalContext, rule: AlertRule) -> HttpResponse:
    """Delete a rule and its alert history."""
    slug, label = rule.tenant.slug, str(rule)
    alert_services.alert_rule_delete(rule=rule, actor=request.user)
    messages.success(request, _("Rule %(name)s deleted.") % {"name": label})
    return redirect("alerts", slug=slug)


@portal_view("alerts.manage")
@with_channel
@require_POST
def channel_delete(request: HttpRequest, portal: PortalContext, channel: NotificationChannel) -> HttpResponse:
    """Delete a channel and its delivery records; rules keep their other channels."""
    slug, name = channel.tenant.slug, channel.name
    alert_services.notification_channel_delete(channel=channel, actor=request.user)
    messages.success(request, _("Channel %(name)s deleted.") % {"name": name})
    return redirect("alerts", slug=slug)
