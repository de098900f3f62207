"""WeCom, Feishu / Lark and Slack channels through the whole alert path: usage in through the
API, a rule crossing its threshold, the delivery sent to a local stand-in of the service
(tests/notify_servers.py) that checks and answers as the real one does."""

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any

import pytest
from django.utils import timezone

from alerts import services, tasks
from alerts.models import AlertDelivery, NotificationChannel
from tests.alerts.test_alerts import post_tokens, token_quota_rule

FEISHU_SECRET = "feishu-signing-secret"


@dataclass
class Chat:
    kind: str
    server: Any  # the stand-in: .messages are what it accepted
    config: dict[str, str]
    rate_limited: tuple  # the service's "too many messages" answer
    refused: tuple  # a permanent answer (configuration)
    refused_error: str  # what the tenant reads for it: our words, not the far end's

    def title(self, message: dict) -> str:
        if self.kind == "wecom":
            return message["markdown"]["content"].splitlines()[0]
        if self.kind == "feishu":
            return message["card"]["header"]["title"]["content"]
        return message["text"]


@pytest.fixture(params=["wecom", "feishu", "slack"])
def chat(request, wecom_robot, feishu_bot, slack_webhook) -> Chat:
    token = uuid.uuid4().hex[:12]  # a robot no other test uses (send windows are shared in Redis)
    if request.param == "wecom":
        robot = wecom_robot(key=token)
        return Chat(
            "wecom",
            robot,
            {"webhook_url": robot.webhook_url},
            (200, 45009),
            (200, 93000),
            "WeCom 93000: invalid webhook: the key is wrong or the robot was removed",
        )
    if request.param == "feishu":
        bot = feishu_bot(token=token, secret=FEISHU_SECRET)  # every message's signature is checked
        return Chat(
            "feishu",
            bot,
            {"webhook_url": bot.webhook_url, "secret": FEISHU_SECRET},
            (200, 11232),
            (200, 19022),
            "Feishu 19022: this server's IP address is not on the bot's allow-list",
        )
    hook = slack_webhook(secret=token)
    return Chat(
        "slack",
        hook,
        {"url": hook.url},
        (429, "rate_limited", {"Retry-After": "5"}),
        (410, "channel_is_archived"),
        "Slack HTTP 410 (channel_is_archived)",
    )


def chat_rule(tenant, chat: Chat, **kwargs) -> NotificationChannel:
    channel = services.notification_channel_create(tenant=tenant, kind=chat.kind, name="ops chat", config=chat.config)
    token_quota_rule(tenant, {"rows": [channel]}, limit=1000, **kwargs)
    return channel


def test_a_crossed_threshold_is_delivered_to_the_chat_exactly_once(tenant_a, key_a, chat, eager):
    channel = chat_rule(tenant_a, chat, thresholds=["80"])
    post_tokens(key_a, 1)  # 800 of 1,000 tokens: 80 %

    tasks.alerts_evaluate_tenant.apply(args=[tenant_a.pk]).get()
    tasks.alerts_evaluate_tenant.apply(args=[tenant_a.pk]).get()  # the same task delivered twice
    for delivery_id in services.alerts_evaluate(tenant_id=tenant_a.pk).due_delivery_ids:
        services.alert_delivery_send(delivery_id=delivery_id)  # and the sweep

    [message] = chat.server.messages
    assert f"[{tenant_a.name}] Quota alert: 80.0 %" in chat.title(message)
    [delivery] = AlertDelivery.objects.filter(channel=channel)
    assert (delivery.status, delivery.attempts, delivery.error) == ("delivered", 1, "")


def test_a_rate_limited_answer_is_retried_later_not_lost(tenant_a, key_a, chat):
    channel = chat_rule(tenant_a, chat, thresholds=["80"])
    chat.server.answer_next = [chat.rate_limited]
    post_tokens(key_a, 1)
    [delivery_id] = services.alerts_evaluate(tenant_id=tenant_a.pk).due_delivery_ids

    first = services.alert_delivery_send(delivery_id=delivery_id)

    delivery = AlertDelivery.objects.get(pk=delivery_id)
    assert first.status == "retry" and first.retry_in >= 5
    assert (delivery.status, delivery.error_kind, delivery.attempts) == ("retry", "transient", 1)
    assert "rate limited" in delivery.error.replace("_", " ")
    assert chat.server.messages == []
    assert services.alert_delivery_send(delivery_id=delivery_id).status == "retry"  # not due yet: untouched
    assert services.alert_deliveries_due(now=delivery.next_attempt_at + services.SWEEP_GRACE) == [delivery_id]

    done = services.alert_delivery_send(delivery_id=delivery_id, now=delivery.next_attempt_at)

    delivery.refresh_from_db()
    assert done.status == "delivered" and (delivery.status, delivery.error, delivery.attempts) == ("delivered", "", 2)
    assert len(chat.server.messages) == 1
    assert AlertDelivery.objects.filter(channel=channel).count() == 1


def test_a_permanent_answer_fails_the_delivery_with_a_generic_error(tenant_a, key_a, chat):
    chat_rule(tenant_a, chat, thresholds=["80"])
    chat.server.answer_next = [chat.refused]
    post_tokens(key_a, 1)
    [delivery_id] = services.alerts_evaluate(tenant_id=tenant_a.pk).due_delivery_ids

    outcome = services.alert_delivery_send(delivery_id=delivery_id)

    delivery = AlertDelivery.objects.get(pk=delivery_id)
    assert outcome.status == "failed" and outcome.retry_in is None
    assert (delivery.status, delivery.error_kind, delivery.attempts) == ("failed", "permanent", 1)
    assert delivery.error == chat.refused_error  # what the portal shows the tenant
    assert "scripted" not in delivery.error  # the far end's own words stay in the server log
    assert services.alert_deliveries_due(now=timezone.now() + dt.timedelta(days=1)) == []
    assert chat.server.messages == []


def test_wecom_sends_over_the_robots_limit_wait_without_counting_an_attempt(tenant_a, key_a, wecom_robot, settings):
    settings.WECOM_MAX_PER_MINUTE = 1
    robot = wecom_robot(key=uuid.uuid4().hex[:12])
    channel = services.notification_channel_create(
        tenant=tenant_a, kind="wecom", name="wecom", config={"webhook_url": robot.webhook_url}
    )
    token_quota_rule(tenant_a, {"rows": [channel]}, limit=1000)  # 80 % and 100 %
    post_tokens(key_a, 2)
    first, second = sorted(services.alerts_evaluate(tenant_id=tenant_a.pk).due_delivery_ids)

    assert services.alert_delivery_send(delivery_id=first).status == "delivered"
    deferred = services.alert_delivery_send(delivery_id=second)

    delivery = AlertDelivery.objects.get(pk=second)
    assert deferred.status == "retry" and 0 < deferred.retry_in <= 60
    assert (delivery.attempts, delivery.error_kind) == (0, "transient")
    assert robot.codes == [0]  # the robot never saw the message it would have answered 45009 to
