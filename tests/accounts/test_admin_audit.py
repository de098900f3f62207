"""Django admin: edits of keys, tenants, prices, quotas and channels are audited; money is read-only.

Every change goes through the admin's own HTTP forms, posted back with what the form shows
(plus the test's edits), by a staff user holding just the model permissions it needs.
"""

import datetime as dt
import json
from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.forms import CheckboxInput, MultiWidget, SelectMultiple
from django.test import Client

from accounts.admin_audit import diff
from accounts.models import ApiKey, AuditLog, Membership, Tenant
from alerts.models import AlertRule, NotificationChannel
from billing.models import LedgerEntry, Price, Quota, Wallet
from billing.services.quotas import quota_create
from metering.models import UsageEvent
from tests import factories
from tests.portal.web_support import PASSWORD, event, record

pytestmark = pytest.mark.django_db


def staff_client(*codenames: str) -> tuple[Client, object]:
    """A logged-in staff user (not a superuser) with exactly these permissions."""
    user = get_user_model().objects.create_user("staff@platform.test", "staff@platform.test", PASSWORD, is_staff=True)
    user.user_permissions.set(Permission.objects.filter(codename__in=codenames))
    client = Client()
    client.force_login(user)
    return client, user


def _field_data(form, data: dict) -> None:
    for name, field in form.fields.items():
        key, value, widget = form.add_prefix(name), form[name].value(), field.widget
        if getattr(widget, "widget", None) is not None:  # RelatedFieldWidgetWrapper
            widget = widget.widget
        if isinstance(widget, MultiWidget):
            for index, part in enumerate(widget.decompress(value)):
                data[f"{key}_{index}"] = "" if part is None else str(part)
        elif isinstance(widget, CheckboxInput):
            if value:
                data[key] = "on"
        elif isinstance(widget, SelectMultiple):
            data[key] = [str(v) for v in value or []]
        else:
            data[key] = "" if value is None else str(value)


def form_data(response, **edits) -> dict:
    """What the admin's change (or add) form would post back as shown, with `edits` applied."""
    assert response.status_code == 200, response.status_code
    data: dict = {}
    _field_data(response.context["adminform"].form, data)
    for inline in response.context["inline_admin_formsets"]:
        formset = inline.formset
        for name, value in formset.management_form.initial.items():
            data[formset.management_form.add_prefix(name)] = str(value)
        for form in formset.initial_forms:
            _field_data(form, data)
    data.update(edits)
    return data


def admin_url(model, pk=None, action="change") -> str:
    opts = model._meta
    if pk is None:
        return f"/admin/{opts.app_label}/{opts.model_name}/{action}/"
    return f"/admin/{opts.app_label}/{opts.model_name}/{pk}/{action}/"


def only_entry(action: str) -> AuditLog:
    (entry,) = AuditLog.objects.filter(action=action)
    return entry


def test_key_change_is_audited_with_before_and_after(key_a, tenant_a):
    client, staff = staff_client("view_apikey", "change_apikey")
    url = admin_url(ApiKey, key_a.row.pk)
    response = client.post(url, form_data(client.get(url), name="renamed", scopes='["read"]'))
    assert response.status_code == 302, response.content
    entry = only_entry("api_key.admin_update")
    assert (entry.actor_id, entry.actor_label, entry.tenant_id) == (staff.pk, "staff@platform.test", tenant_a.pk)
    assert (entry.target_type, entry.target_id) == ("ApiKey", str(key_a.row.pk))
    assert entry.changes == {
        "before": {"name": "test", "scopes": ["ingest", "read"]},
        "after": {"name": "renamed", "scopes": ["read"]},
    }
    key_a.row.refresh_from_db()
    assert key_a.row.scopes == ["read"]
    assert "secret_hash" not in json.dumps(entry.changes) and key_a.row.secret_hash not in json.dumps(entry.changes)


def test_revoking_a_key_in_the_admin_is_audited_and_deleting_is_refused(key_a):
    client, _ = staff_client("view_apikey", "change_apikey", "delete_apikey")
    url = admin_url(ApiKey, key_a.row.pk)
    revoked = dt.datetime(2026, 5, 1, 12, 30, tzinfo=dt.UTC)
    response = client.post(url, form_data(client.get(url), revoked_at_0="2026-05-01", revoked_at_1="12:30:00"))
    assert response.status_code == 302, response.content
    entry = only_entry("api_key.admin_update")
    assert entry.changes["before"] == {"revoked_at": None}
    assert dt.datetime.fromisoformat(entry.changes["after"]["revoked_at"]) == revoked
    assert client.post(admin_url(ApiKey, key_a.row.pk, "delete"), {"post": "yes"}).status_code == 403
    assert ApiKey.objects.filter(pk=key_a.row.pk).exists()


def test_saving_without_a_change_writes_nothing(key_a):
    client, _ = staff_client("view_apikey", "change_apikey")
    url = admin_url(ApiKey, key_a.row.pk)
    before = AuditLog.objects.count()
    assert client.post(url, form_data(client.get(url))).status_code == 302
    assert AuditLog.objects.count() == before


def test_tenant_and_membership_changes_are_audited(tenant_a, owner_a, viewer_a):
    client, staff = staff_client("view_tenant", "change_tenant", "view_membership", "change_membership")
    url = admin_url(Tenant, tenant_a.pk)
    shown = client.get(url)
    data = form_data(shown, name="Acme Renamed", status="suspended")
    viewer_form = next(f for f in shown.context["inline_admin_formsets"][0].formset.initial_forms
                       if f.instance.user_id == viewer_a.pk)  # fmt: skip
    data[viewer_form.add_prefix("role")] = "finance"
    response = client.post(url, data)
    assert response.status_code == 302, response.content
    entry = only_entry("tenant.admin_update")
    assert (entry.actor_id, entry.tenant_id, entry.target_id) == (staff.pk, tenant_a.pk, str(tenant_a.pk))
    assert entry.changes == {
        "before": {"name": tenant_a.name, "status": "active"},
        "after": {"name": "Acme Renamed", "status": "suspended"},
    }
    membership = only_entry("membership.admin_update")
    assert membership.tenant_id == tenant_a.pk
    assert membership.changes == {"before": {"role": "viewer"}, "after": {"role": "finance"}}
    assert Membership.objects.get(user=viewer_a).role == "finance"


def test_new_price_version_is_audited_and_a_price_cannot_be_changed(plan):
    client, staff = staff_client("view_price", "add_price", "change_price")
    url = admin_url(Price, action="add")
    data = form_data(
        client.get(url),
        plan=str(plan.pk),
        model_pattern="o3",
        effective_from_0="2026-06-01",
        effective_from_1="00:00:00",
        input_per_mtok="2",
        output_per_mtok="8",
        source="admin",
    )
    response = client.post(url, data)
    assert response.status_code == 302, response.content
    price = Price.objects.get(model_pattern="o3")
    entry = only_entry("price.admin_create")
    assert (entry.actor_id, entry.target_id) == (staff.pk, str(price.pk))
    assert entry.changes["before"] == {}
    after = entry.changes["after"]
    assert (after["plan"], after["model_pattern"], after["source"]) == (plan.pk, "o3", "admin")
    assert Decimal(after["input_per_mtok"]) == 2 and Decimal(after["output_per_mtok"]) == 8
    assert dt.datetime.fromisoformat(after["effective_from"]) == dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
    # A version is never edited: the change form is read-only and refuses a POST.
    change = admin_url(Price, price.pk)
    assert client.post(change, {**data, "input_per_mtok": "1"}).status_code == 403
    price.refresh_from_db()
    assert price.input_per_mtok == 2


def test_price_plan_change_is_audited(plan):
    client, _ = staff_client("view_priceplan", "change_priceplan")
    url = admin_url(type(plan), plan.pk)
    response = client.post(url, form_data(client.get(url), allow_unpriced_models="on", name="Standard v2"))
    assert response.status_code == 302, response.content
    entry = only_entry("price_plan.admin_update")
    assert entry.changes == {
        "before": {"name": plan.name, "allow_unpriced_models": False},
        "after": {"name": "Standard v2", "allow_unpriced_models": True},
    }


def test_quota_change_and_delete_are_audited(tenant_a):
    quota = quota_create(tenant=tenant_a, metric="tokens", window="month", limit=Decimal(1000), actor_label="test")
    client, staff = staff_client("view_quota", "change_quota", "delete_quota")
    url = admin_url(Quota, quota.pk)
    response = client.post(url, form_data(client.get(url), limit="5000", enforcement="soft"))
    assert response.status_code == 302, response.content
    entry = only_entry("quota.admin_update")
    assert entry.tenant_id == tenant_a.pk
    assert Decimal(entry.changes["before"]["limit"]) == 1000 and Decimal(entry.changes["after"]["limit"]) == 5000
    assert (entry.changes["before"]["enforcement"], entry.changes["after"]["enforcement"]) == ("hard", "soft")
    assert set(entry.changes["after"]) == {"limit", "enforcement"}

    response = client.post(admin_url(Quota, quota.pk, "delete"), {"post": "yes"})
    assert response.status_code == 302, response.content
    assert not Quota.objects.exists()
    deleted = only_entry("quota.admin_delete")
    assert (deleted.actor_id, deleted.tenant_id, deleted.target_id) == (staff.pk, tenant_a.pk, str(quota.pk))
    assert deleted.changes["after"] == {} and deleted.changes["before"]["metric"] == "tokens"


def test_bulk_delete_action_audits_each_row(tenant_a):
    quotas = [
        quota_create(tenant=tenant_a, metric="tokens", window=window, limit=Decimal(10), actor_label="test")
        for window in ("day", "month")
    ]
    client, _ = staff_client("view_quota", "delete_quota")
    response = client.post(
        f"/admin/{Quota._meta.app_label}/{Quota._meta.model_name}/",
        {"action": "delete_selected", "_selected_action": [str(q.pk) for q in quotas], "post": "yes"},
    )
    assert response.status_code == 302, response.content
    assert not Quota.objects.exists()
    assert set(AuditLog.objects.filter(action="quota.admin_delete").values_list("target_id", flat=True)) == {
        str(q.pk) for q in quotas
    }


def test_channel_secrets_are_recorded_as_changed_never_by_value(tenant_a):
    channel = NotificationChannel.objects.create(
        tenant=tenant_a, kind="webhook", name="ops", config={"url": "https://hooks.example/a", "secret": "s3cret-one"}
    )
    client, _ = staff_client("view_notificationchannel", "change_notificationchannel")
    url = admin_url(NotificationChannel, channel.pk)
    config = json.dumps({"url": "https://evil.example/b?token=abc", "secret": "s3cret-two"})
    response = client.post(url, form_data(client.get(url), config=config))
    assert response.status_code == 302, response.content
    entry = only_entry("notification_channel.admin_update")
    assert entry.changes == {
        "before": {"config": {"url": "https://hooks.example/a", "secret": "(redacted)"}},
        "after": {"config": {"url": "https://evil.example/b?(redacted)", "secret": "(redacted)"}},
    }
    assert "s3cret" not in json.dumps(entry.changes) and "abc" not in json.dumps(entry.changes)


def test_money_and_usage_records_are_read_only(tenant_a, key_a):
    factories.topup(tenant_a, "5.00")
    record(key_a.row, [event("ro-1", dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1))])
    wallet, entry, usage = Wallet.objects.get(tenant=tenant_a), LedgerEntry.objects.first(), UsageEvent.objects.first()
    audit = AuditLog.objects.first()
    client, _ = staff_client(
        *[f"{verb}_{model}" for verb in ("view", "add", "change", "delete")
          for model in ("wallet", "ledgerentry", "usageevent", "auditlog", "dailyusage")]
    )  # fmt: skip
    balance_before = wallet.balance
    for model, row in ((Wallet, wallet), (LedgerEntry, entry), (UsageEvent, usage), (AuditLog, audit)):
        assert client.get(admin_url(model, row.pk)).status_code == 200  # visible
        assert client.post(admin_url(model, row.pk), {"balance": "999", "amount": "999"}).status_code == 403
        assert client.post(admin_url(model, row.pk, "delete"), {"post": "yes"}).status_code == 403
        assert client.post(admin_url(model, action="add"), {}).status_code == 403
    wallet.refresh_from_db()
    assert wallet.balance == balance_before
    assert LedgerEntry.objects.filter(pk=entry.pk).exists() and UsageEvent.objects.filter(pk=usage.pk).exists()


def test_staff_without_the_permission_cannot_change(key_a):
    client, _ = staff_client("view_apikey")
    url = admin_url(ApiKey, key_a.row.pk)
    assert client.post(url, {"name": "x", "scopes": '["ingest"]'}).status_code == 403
    assert not AuditLog.objects.filter(action__endswith=".admin_update").exists()


def test_secret_fields_are_recorded_as_changed_never_by_value():
    changes = diff({"secret_hash": "a" * 64, "name": "k"}, {"secret_hash": "b" * 64, "name": "k"})
    assert changes == {"before": {"secret_hash": "(redacted)"}, "after": {"secret_hash": "(redacted)"}}


def test_alert_rule_channels_are_audited_as_ids(tenant_a):
    """A many-to-many field is saved after the row: its change is read once the admin is done."""
    first, second = (
        NotificationChannel.objects.create(
            tenant=tenant_a, kind="email", name=name, config={"recipients": ["a@x.test"]}
        )
        for name in ("first", "second")
    )
    rule = AlertRule.objects.create(tenant=tenant_a, kind="balance", amount=Decimal(10))
    rule.channels.set([first])
    client, _ = staff_client("view_alertrule", "change_alertrule")
    url = admin_url(AlertRule, rule.pk)
    response = client.post(url, form_data(client.get(url), channels=[str(first.pk), str(second.pk)]))
    assert response.status_code == 302, response.content
    entry = only_entry("alert_rule.admin_update")
    assert entry.changes == {"before": {"channels": [first.pk]}, "after": {"channels": sorted([first.pk, second.pk])}}
