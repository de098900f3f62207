"""Alerts in the portal: channels (add, edit, send test), rules, and the history of sent alerts."""

import socket
from decimal import Decimal

import pytest
from django.urls import reverse
from django.utils import timezone

from accounts.models import AuditLog
from alerts.models import AlertDelivery, AlertRule, NotificationChannel
from alerts.services import alert_rule_create, alerts_evaluate, notification_channel_create
from billing.services.quotas import quota_create
from portal.celery import app as celery_app
from tests.notify_servers import *  # noqa: F403 - the local receivers' fixtures
from tests.portal.web_support import event, record, rollup

pytestmark = pytest.mark.django_db


def add_email_channel(client, tenant, name="finance team", recipients="cfo@acme.test, ops@acme.test"):
    return client.post(
        reverse("alert-channel-create", kwargs={"slug": tenant.slug}),
        {"kind": "email", "name": name, "recipients": recipients, "enabled": "on"},
    )


def email_channel(tenant):
    return notification_channel_create(tenant=tenant, kind="email", name="ops", config={"recipients": ["o@a.test"]})


WEBHOOK_SECRET = "webhook-secret-for-tests"
RULE_DEFAULTS = {"window": "month", "threshold_unit": "percent", "forecast_days": 7, "spike_factor": "3"}


@pytest.fixture
def eager():
    """Tasks run in this process when queued (as a worker would run them)."""
    celery_app.conf.task_always_eager = True
    yield
    celery_app.conf.task_always_eager = False


def test_add_an_email_channel_and_send_a_test(
    client, tenant_a, owner_a, mailoutbox, eager, django_capture_on_commit_callbacks
):
    client.force_login(owner_a)
    response = add_email_channel(client, tenant_a)
    assert response.status_code == 302
    channel = NotificationChannel.objects.get(tenant=tenant_a)
    assert channel.config == {"recipients": ["cfo@acme.test", "ops@acme.test"]}
    assert AuditLog.objects.filter(action="notification_channel.create", actor=owner_a).exists()

    test_url = reverse("alert-channel-test", kwargs={"slug": tenant_a.slug, "channel_id": channel.pk})
    with django_capture_on_commit_callbacks() as queued:
        tested = client.post(test_url, follow=True)
    assert tested.status_code == 200
    assert mailoutbox == []  # queued for a worker, not sent by the request
    delivery = AlertDelivery.objects.get(channel=channel)
    assert delivery.status == "pending" and delivery.event_id is None
    page = tested.content.decode()
    assert "Test queued for finance team." in page
    assert "queued" in page  # the channel page lists its deliveries

    for callback in queued:  # the commit queues the task; a worker (here: eagerly) runs it
        callback()
    assert [mail.to for mail in mailoutbox] == [["cfo@acme.test", "ops@acme.test"]]
    delivery.refresh_from_db()
    assert delivery.status == "delivered"
    refreshed = client.get(reverse("alert-channel", kwargs={"slug": tenant_a.slug, "channel_id": channel.pk}))
    assert "delivered" in refreshed.content.decode()


def test_send_test_answers_at_once_and_the_receiver_hears_from_the_worker(
    client, tenant_a, owner_a, webhook_receiver, eager, django_capture_on_commit_callbacks
):
    receiver = webhook_receiver(secret=WEBHOOK_SECRET)  # allowed: 127.0.0.1 on the allow-list
    channel = notification_channel_create(
        tenant=tenant_a, kind="webhook", name="hook", config={"url": receiver.url, "secret": WEBHOOK_SECRET}
    )
    client.force_login(owner_a)
    with django_capture_on_commit_callbacks() as queued:
        response = client.post(
            reverse("alert-channel-test", kwargs={"slug": tenant_a.slug, "channel_id": channel.pk}), {"back": "list"}
        )
    assert response.status_code == 302 and response["Location"] == reverse("alerts", kwargs={"slug": tenant_a.slug})
    assert receiver.answered == []  # the request did not call the receiver
    page = client.get(response["Location"]).content.decode()
    assert "Test queued for hook." in page

    for callback in queued:
        callback()
    assert [message["subject"] for message in receiver.messages] == [f"[{tenant_a.name}] Test notification"]
    tests_table = client.get(response["Location"]).content.decode().split('id="tests"')[1]
    assert "delivered" in tests_table


@pytest.mark.parametrize(
    ("kind", "fields"),
    [
        ("webhook", {"url": "http://127.0.0.1:6379/", "secret": WEBHOOK_SECRET}),
        ("webhook", {"url": "http://localhost:5432/", "secret": WEBHOOK_SECRET}),
        ("webhook", {"url": "http://[::ffff:169.254.169.254]/latest/meta-data/", "secret": WEBHOOK_SECRET}),
        ("dingtalk", {"webhook_url": "http://169.254.169.254/robot/send?access_token=x"}),
        ("dingtalk", {"webhook_url": "http://10.0.0.8/robot/send?access_token=x"}),
        ("wecom", {"webhook_url": "http://169.254.169.254/cgi-bin/webhook/send?key=x"}),
        ("wecom", {"webhook_url": "http://127.0.0.1:6379/cgi-bin/webhook/send?key=x"}),
        ("feishu", {"webhook_url": "http://192.168.1.10/open-apis/bot/v2/hook/abc", "secret": "s"}),
        ("feishu", {"webhook_url": "http://[::1]:8080/open-apis/bot/v2/hook/abc"}),
        ("slack", {"url": "http://100.64.0.1/services/T0/B0/abc"}),
        ("slack", {"url": "http://localhost:5432/services/T0/B0/abc"}),
    ],
)
def test_the_channel_form_refuses_internal_addresses(client, tenant_a, owner_a, kind, fields):
    client.force_login(owner_a)
    response = client.post(
        reverse("alert-channel-create", kwargs={"slug": tenant_a.slug}),
        {"kind": kind, "name": "internal", "enabled": "on", **fields},
    )
    assert response.status_code == 400
    assert "refused by policy" in response.content.decode()
    assert not NotificationChannel.objects.exists()

    channel = notification_channel_create(
        tenant=tenant_a, kind="webhook", name="hook", config={"url": "https://8.8.8.8/h", "secret": WEBHOOK_SECRET}
    )
    update = reverse("alert-channel-update", kwargs={"slug": tenant_a.slug, "channel_id": channel.pk})
    response = client.post(update, {"url": "http://127.0.0.1:6379/", "secret": "", "enabled": "on"})
    assert response.status_code == 400 and "refused by policy" in response.content.decode()
    channel.refresh_from_db()
    assert channel.config["url"] == "https://8.8.8.8/h"


def test_tenants_see_one_generic_error_for_every_network_failure(
    client, tenant_a, owner_a, listener, settings, eager, django_capture_on_commit_callbacks
):
    """A closed port and a port that never answers read the same; an internal address reads
    "refused by policy" and is never contacted. No errno, no "timed out", no "connection refused"."""
    settings.OUTBOUND_ALLOWED_NETWORKS = ("127.0.0.1/32",)
    settings.NOTIFICATIONS_HTTP_TIMEOUT = 0.3
    settings.NOTIFICATIONS_RETRY_BUDGET = 0.5
    silent, internal = listener(mode="silent"), listener(host="127.0.0.2")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}/h"
    channels = {
        "closed": notification_channel_create(
            tenant=tenant_a, kind="webhook", name="closed", config={"url": closed, "secret": WEBHOOK_SECRET}
        ),
        "silent": notification_channel_create(
            tenant=tenant_a, kind="webhook", name="silent", config={"url": silent.url, "secret": WEBHOOK_SECRET}
        ),
        "internal": NotificationChannel.objects.create(  # written around the save check
            tenant=tenant_a, kind="webhook", name="internal", config={"url": internal.url, "secret": WEBHOOK_SECRET}
        ),
    }
    client.force_login(owner_a)
    for channel in channels.values():
        with django_capture_on_commit_callbacks(execute=True):
            client.post(reverse("alert-channel-test", kwargs={"slug": tenant_a.slug, "channel_id": channel.pk}))

    pages = {
        name: client.get(reverse("alert-channel", kwargs={"slug": tenant_a.slug, "channel_id": c.pk})).content.decode()
        for name, c in channels.items()
    }
    no_answer = "could not deliver: the receiver did not answer"
    assert no_answer in pages["closed"] and no_answer in pages["silent"]
    assert "refused by policy" in pages["internal"] and no_answer not in pages["internal"]
    assert silent.requests and internal.contacts == 0
    alerts_page = client.get(reverse("alerts", kwargs={"slug": tenant_a.slug})).content.decode()
    for page in [*pages.values(), alerts_page]:
        lowered = page.lower()
        assert "errno" not in lowered and "timed out" not in lowered and "connection refused" not in lowered


def test_bad_channel_config_is_explained(client, tenant_a, owner_a):
    client.force_login(owner_a)
    response = add_email_channel(client, tenant_a, recipients="not-an-email")
    assert response.status_code == 400
    assert "is not an email address" in response.content.decode()
    dingtalk = client.post(
        reverse("alert-channel-create", kwargs={"slug": tenant_a.slug}),
        {"kind": "dingtalk", "name": "robot", "webhook_url": "https://oapi.dingtalk.com/robot/send", "enabled": "on"},
    )
    assert dingtalk.status_code == 400
    assert "access_token" in dingtalk.content.decode()
    assert not NotificationChannel.objects.exists()


@pytest.mark.parametrize("kind", ["wecom", "feishu", "slack"])
def test_an_owner_adds_a_chat_channel_and_its_test_arrives(
    client, tenant_a, owner_a, kind, wecom_robot, feishu_bot, slack_webhook, eager, django_capture_on_commit_callbacks
):
    client.force_login(owner_a)
    create = reverse("alert-channel-create", kwargs={"slug": tenant_a.slug})
    form_page = client.get(create).content.decode()
    assert f'value="{kind}"' in form_page and "/services/T.../B.../..." in form_page
    if kind == "wecom":
        server = wecom_robot(key="portal-wecom-key")
        fields, config = {"webhook_url": server.webhook_url}, {"webhook_url": server.webhook_url}
    elif kind == "feishu":
        server = feishu_bot(token="portal-feishu-token", secret="portal-feishu-secret", keyword="alert")
        fields = {"webhook_url": server.webhook_url, "secret": server.secret, "keyword": "alert"}
        config = dict(fields)
    else:
        server = slack_webhook(secret="portal-slack-secret")
        fields, config = {"url": server.url, "secret": "ignored"}, {"url": server.url}
    response = client.post(create, {"kind": kind, "name": f"{kind} group", "enabled": "on", **fields})
    assert response.status_code == 302, response.content.decode()
    channel = NotificationChannel.objects.get(tenant=tenant_a)
    assert (channel.kind, channel.config) == (kind, config)

    listed = client.get(reverse("alerts", kwargs={"slug": tenant_a.slug})).content.decode()
    assert {"wecom": "WeCom robot", "feishu": "Feishu / Lark bot", "slack": "Slack incoming webhook"}[kind] in listed
    with django_capture_on_commit_callbacks(execute=True):
        client.post(reverse("alert-channel-test", kwargs={"slug": tenant_a.slug, "channel_id": channel.pk}))
    assert len(server.messages) == 1  # the stand-in checked the key / signature and keyword / path
    assert AlertDelivery.objects.get(channel=channel).status == "delivered"


@pytest.mark.parametrize(
    ("kind", "fields", "explained"),
    [
        ("wecom", {"webhook_url": "https://qyapi.weixin.qq.com/cgi-bin/webhook/send"}, "?key="),
        ("feishu", {"webhook_url": "https://open.feishu.cn/open-apis/bot/v2/"}, "/open-apis/bot/v2/hook/"),
        ("slack", {"url": "https://hooks.slack.com/triggers/T0/1/x"}, "/services/T.../B.../..."),
    ],
)
def test_a_chat_url_of_the_wrong_shape_is_explained(client, tenant_a, owner_a, kind, fields, explained):
    client.force_login(owner_a)
    response = client.post(
        reverse("alert-channel-create", kwargs={"slug": tenant_a.slug}),
        {"kind": kind, "name": "chat", "enabled": "on", **fields},
    )
    assert response.status_code == 400
    assert explained in response.content.decode()
    assert not NotificationChannel.objects.exists()


def test_the_chat_kinds_are_translated(client, tenant_a, owner_a, settings):
    client.force_login(owner_a)
    client.cookies[settings.LANGUAGE_COOKIE_NAME] = "zh-hans"
    page = client.get(reverse("alert-channel-create", kwargs={"slug": tenant_a.slug})).content.decode()
    assert "企业微信群机器人" in page and "飞书自定义机器人" in page and "Slack 传入 Webhook" in page


def test_edit_a_channel_keeps_its_secret(client, tenant_a, owner_a, settings):
    settings.OUTBOUND_ALLOWED_NETWORKS = ("example.test",)  # a receiver the operator named: no DNS question
    channel = notification_channel_create(
        tenant=tenant_a, kind="webhook", name="hook", config={"url": "https://example.test/a", "secret": "s" * 20}
    )
    client.force_login(owner_a)
    url = reverse("alert-channel", kwargs={"slug": tenant_a.slug, "channel_id": channel.pk})
    page = client.get(url).content.decode()
    assert "s" * 20 not in page  # the secret is never shown back
    update = reverse("alert-channel-update", kwargs={"slug": tenant_a.slug, "channel_id": channel.pk})
    assert client.post(update, {"url": "not a url"}).status_code == 400
    response = client.post(update, {"url": "https://example.test/b", "secret": ""})
    assert response.status_code == 302
    channel.refresh_from_db()
    assert channel.config == {"url": "https://example.test/b", "secret": "s" * 20}
    assert channel.enabled is False  # the unchecked box turned it off
    assert channel.name == "hook" and channel.kind == "webhook"


def test_add_rules(client, tenant_a, owner_a, key_a):
    quota = quota_create(tenant=tenant_a, metric="tokens", window="month", limit=Decimal(5000))
    channel = notification_channel_create(
        tenant=tenant_a, kind="email", name="ops", config={"recipients": ["o@a.test"]}
    )
    client.force_login(owner_a)
    url = reverse("alert-rule-create", kwargs={"slug": tenant_a.slug})
    assert client.get(url).status_code == 200
    base = RULE_DEFAULTS
    response = client.post(
        url,
        {
            **base,
            "kind": "quota",
            "name": "monthly tokens",
            "quota": quota.pk,
            "thresholds": "80, 100%",
            "channels": [channel.pk],
        },
    )
    assert response.status_code == 302, response.content
    rule = AlertRule.objects.get(name="monthly tokens")
    assert rule.kind == "quota" and rule.quota_id == quota.pk
    assert rule.thresholds == ["80", "100"]
    assert list(rule.channels.all()) == [channel]
    spend = client.post(url, {**base, "kind": "spend", "thresholds": "50, 90", "api_key": key_a.row.pk})
    assert spend.status_code == 400
    assert "budget" in spend.content.decode()
    spend = client.post(url, {**base, "kind": "spend", "amount": "25", "thresholds": "50, 90", "api_key": key_a.row.pk})
    assert spend.status_code == 302
    listing = client.get(reverse("alerts", kwargs={"slug": tenant_a.slug})).content.decode()
    assert "monthly tokens" in listing and "25.00 USD" in listing
    assert AuditLog.objects.filter(action="alert_rule.create", tenant=tenant_a).count() == 2


def test_history_shows_sent_alerts_with_status(client, tenant_a, owner_a, key_a):
    quota = quota_create(tenant=tenant_a, metric="tokens", window="lifetime", limit=Decimal(1000))
    channel = notification_channel_create(
        tenant=tenant_a, kind="email", name="ops", config={"recipients": ["o@a.test"]}
    )
    client.force_login(owner_a)
    client.post(
        reverse("alert-rule-create", kwargs={"slug": tenant_a.slug}),
        {**RULE_DEFAULTS, "kind": "quota", "name": "lifetime tokens", "quota": quota.pk, "thresholds": "80, 100"}
        | {"channels": [channel.pk]},
    )

    record(key_a.row, [event("over-1", timezone.now())])  # 1500 tokens > 100 % of 1000
    rollup(tenant_a)
    alerts_evaluate(tenant_id=tenant_a.pk)
    page = client.get(reverse("alerts", kwargs={"slug": tenant_a.slug}))
    events = page.context["events"]
    assert sorted(e.threshold for e in events) == ["100%", "80%"]
    html = page.content.decode()
    assert "lifetime tokens" in html
    assert html.count('class="badge badge-warn">80%') == 1


def test_delete_a_channel(client, tenant_a, owner_a):
    channel = email_channel(tenant_a)
    client.force_login(owner_a)
    url = reverse("alert-channel-delete", kwargs={"slug": tenant_a.slug, "channel_id": channel.pk})
    assert client.get(url).status_code == 405
    assert client.post(url).status_code == 302
    assert not NotificationChannel.objects.filter(pk=channel.pk).exists()
    assert AuditLog.objects.filter(action="notification_channel.delete", actor=owner_a).exists()


def test_roles_on_alert_pages(client, tenant_a, viewer_a, finance_a, operator):
    channel = email_channel(tenant_a)
    client.force_login(operator)  # operators read, never change
    page = reverse("alert-channel", kwargs={"slug": tenant_a.slug, "channel_id": channel.pk})
    assert client.get(page).status_code == 200
    update = reverse("alert-channel-update", kwargs={"slug": tenant_a.slug, "channel_id": channel.pk})
    assert client.post(update, {"recipients": "evil@x.test", "enabled": "on"}).status_code == 403
    client.force_login(viewer_a)
    assert client.get(reverse("alerts", kwargs={"slug": tenant_a.slug})).status_code == 403
    client.force_login(finance_a)
    assert client.get(reverse("alerts", kwargs={"slug": tenant_a.slug})).status_code == 200
    assert add_email_channel(client, tenant_a).status_code == 302


def test_pause_resume_and_delete_a_rule(client, tenant_a, owner_a):
    quota = quota_create(tenant=tenant_a, metric="tokens", window="month", limit=Decimal(100))
    rule = alert_rule_create(tenant=tenant_a, kind="quota", channels=[], quota_id=quota.pk, name="r1")
    client.force_login(owner_a)
    toggle = reverse("alert-rule-toggle", kwargs={"slug": tenant_a.slug, "rule_id": rule.pk})
    assert client.post(toggle).status_code == 302
    rule.refresh_from_db()
    assert rule.enabled is False
    client.post(toggle)
    rule.refresh_from_db()
    assert rule.enabled is True
    assert client.get(toggle).status_code == 405
    client.post(reverse("alert-rule-delete", kwargs={"slug": tenant_a.slug, "rule_id": rule.pk}))
    assert not AlertRule.objects.filter(pk=rule.pk).exists()
    actions = list(
        AuditLog.objects.filter(
            tenant=tenant_a, action__startswith="alert_rule.", actor=owner_a
        ).values_list(  # the page's
            "action", flat=True
        )  # own actions; the setup's create is the service's, as "system"
    )
    assert sorted(actions) == ["alert_rule.delete", "alert_rule.disable", "alert_rule.enable"]


def test_edit_a_rule_new_thresholds_fire_and_old_ones_do_not_repeat(client, tenant_a, owner_a, key_a):
    quota = quota_create(tenant=tenant_a, metric="tokens", window="lifetime", limit=Decimal(2000))
    channel = email_channel(tenant_a)
    rule = alert_rule_create(tenant=tenant_a, kind="quota", channels=[], quota_id=quota.pk, thresholds=["50"])
    record(key_a.row, [event("e-1", timezone.now())])  # 1,500 tokens: 75 %
    rollup(tenant_a)
    alerts_evaluate(tenant_id=tenant_a.pk)
    assert list(rule.events.values_list("threshold", flat=True)) == ["50%"]

    client.force_login(owner_a)
    url = reverse("alert-rule-edit", kwargs={"slug": tenant_a.slug, "rule_id": rule.pk})
    form = client.get(url)
    assert form.status_code == 200 and form.context["form"].initial["thresholds"] == "50"
    response = client.post(
        url,
        {**RULE_DEFAULTS, "kind": "spike", "name": "lifetime tokens", "quota": quota.pk, "thresholds": "50, 70, 90"}
        | {"channels": [channel.pk]},
    )
    assert response.status_code == 302, response.context["form"].errors
    rule.refresh_from_db()
    assert rule.kind == "quota"  # the posted kind is ignored: another kind is another rule
    assert (rule.name, rule.thresholds, list(rule.channels.all())) == ("lifetime tokens", ["50", "70", "90"], [channel])
    audit = AuditLog.objects.get(action="alert_rule.update", target_id=str(rule.pk))
    assert audit.actor == owner_a
    assert audit.changes["thresholds"] == {"before": ["50"], "after": ["50", "70", "90"]}
    assert audit.changes["channels"] == {"before": [], "after": ["ops"]}

    alerts_evaluate(tenant_id=tenant_a.pk)  # 75 % crosses the new 70, not 50 again, not 90 yet
    assert sorted(rule.events.values_list("threshold", flat=True)) == ["50%", "70%"]
    assert AlertDelivery.objects.filter(channel=channel).count() == 1


def test_a_bad_edit_is_explained_and_changes_nothing(client, tenant_a, owner_a, tenant_b, owner_b):
    quota = quota_create(tenant=tenant_a, metric="tokens", window="month", limit=Decimal(100))
    rule = alert_rule_create(tenant=tenant_a, kind="quota", channels=[], quota_id=quota.pk, name="r1")
    client.force_login(owner_a)
    url = reverse("alert-rule-edit", kwargs={"slug": tenant_a.slug, "rule_id": rule.pk})
    for bad, message in [({"thresholds": "80, -5"}, "positive"), ({"quota": ""}, "needs a quota")]:
        data = {**RULE_DEFAULTS, "name": "changed", "quota": quota.pk, "thresholds": "80"} | bad
        response = client.post(url, data)
        assert response.status_code == 400
        assert message in response.content.decode()
    rule.refresh_from_db()
    assert (rule.name, rule.thresholds) == ("r1", ["80", "100"])
    assert not AuditLog.objects.filter(action="alert_rule.update").exists()
    client.force_login(owner_b)
    foreign = reverse("alert-rule-edit", kwargs={"slug": tenant_b.slug, "rule_id": rule.pk})
    assert client.get(foreign).status_code == 404


def test_only_alert_managers_edit_rules(client, tenant_a, viewer_a, operator):
    quota = quota_create(tenant=tenant_a, metric="tokens", window="month", limit=Decimal(100))
    rule = alert_rule_create(tenant=tenant_a, kind="quota", channels=[], quota_id=quota.pk, name="r1")
    url = reverse("alert-rule-edit", kwargs={"slug": tenant_a.slug, "rule_id": rule.pk})
    for user in (viewer_a, operator):
        client.force_login(user)
        assert client.post(url, {**RULE_DEFAULTS, "quota": quota.pk, "thresholds": "1"}).status_code == 403
    rule.refresh_from_db()
    assert rule.thresholds == ["80", "100"]
