"""Quota, balance, spend, forecast and spike alerts, delivered to real local servers.

Usage goes in through the ingest API; alerts are evaluated by the Celery tasks (run in this
process: eagerly, or in real threads for the concurrency cases) and land on an SMTP server,
a DingTalk robot stand-in that checks signatures and a webhook receiver that checks HMACs.
"""

import datetime as dt
import json
import threading
from decimal import Decimal

import pytest
import redis
from django.conf import settings
from django.core.cache import cache
from django.db import connection
from django.utils import timezone

from alerts import services, tasks
from alerts.models import AlertDelivery, AlertEvent, AlertRule
from alerts.receivers import debounce_key
from billing.services.quotas import quota_create
from infra.notifications.email import EmailTransport
from metering.services import rollup
from tests import factories
from tests.conftest import Credential

WEBHOOK_SECRET = "webhook-secret-for-tests"
DINGTALK_SECRET = "SECdingtalk-secret-for-tests"


@pytest.fixture
def channels(tenant_a, smtp_server, dingtalk_robot, webhook_receiver):
    robot = dingtalk_robot(access_token="acme-robot", secret=DINGTALK_SECRET)
    receiver = webhook_receiver(secret=WEBHOOK_SECRET)
    email = services.notification_channel_create(
        tenant=tenant_a, kind="email", name="ops mail", config={"recipients": ["ops@acme.test"]}
    )
    ding = services.notification_channel_create(
        tenant=tenant_a,
        kind="dingtalk",
        name="ops group",
        config={"webhook_url": robot.webhook_url, "secret": robot.secret},
    )
    hook = services.notification_channel_create(
        tenant=tenant_a, kind="webhook", name="ops hook", config={"url": receiver.url, "secret": WEBHOOK_SECRET}
    )
    return {"rows": [email, ding, hook], "smtp": smtp_server, "robot": robot, "hook": receiver}


def received(channels) -> tuple[int, int, int]:
    return len(channels["smtp"].mails), len(channels["robot"].messages), len(channels["hook"].messages)


def post_tokens(credential, count: int, *, when: dt.datetime | None = None, **body) -> None:
    body.setdefault("input_tokens", 600)
    body.setdefault("output_tokens", 200)  # 800 tokens an event
    if when is not None:
        body["timestamp"] = when.isoformat()
    events = factories.event_bodies(count, **body)
    response = credential.post("/api/v1/events/batch", {"events": events})
    assert response.status_code == 200 and response.json()["accepted"] == count, response.content


def token_quota_rule(tenant, channels, *, limit=10_000, window="month", **kwargs) -> AlertRule:
    quota = quota_create(
        tenant=tenant, metric="tokens", window=window, limit=Decimal(limit), enforcement="soft", actor_label="test"
    )
    return services.alert_rule_create(
        tenant=tenant, kind="quota", quota_id=quota.pk, channels=channels["rows"], name="monthly tokens", **kwargs
    )


def evaluate_concurrently(tenant_id: int, *, workers: int = 2, now: dt.datetime | None = None) -> None:
    """The same evaluation in real threads at once, as two workers (or a redelivery) would run it."""
    barrier, errors = threading.Barrier(workers), []

    def run() -> None:
        try:
            barrier.wait()
            evaluation = services.alerts_evaluate(tenant_id=tenant_id, now=now)
            for delivery_id in evaluation.due_delivery_ids:
                services.alert_delivery_send(delivery_id=delivery_id)
        except Exception as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []


def evaluate_and_send(tenant_id: int, now: dt.datetime) -> None:
    """What the evaluation task does, at a chosen moment."""
    for delivery_id in services.alerts_evaluate(tenant_id=tenant_id, now=now).due_delivery_ids:
        services.alert_delivery_send(delivery_id=delivery_id)


@pytest.mark.django_db(transaction=True)
def test_80_then_100_percent_sends_two_alerts_per_channel_and_a_new_month_rearms(tenant_a, key_a, channels, eager):
    rule = token_quota_rule(tenant_a, channels)
    this_month = timezone.now().replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    last_month = this_month - dt.timedelta(days=3)  # UTC tenant: the previous month
    then = last_month + dt.timedelta(hours=1)

    post_tokens(key_a, 9, when=last_month)  # 7,200 tokens: 72 %
    evaluate_and_send(tenant_a.pk, then)
    assert received(channels) == (0, 0, 0)

    post_tokens(key_a, 1, when=last_month)  # 8,000: 80 %
    evaluate_and_send(tenant_a.pk, then)
    evaluate_and_send(tenant_a.pk, then)  # the same task delivered twice
    assert received(channels) == (1, 1, 1)

    post_tokens(key_a, 3, when=last_month)  # 10,400: 104 %
    evaluate_concurrently(tenant_a.pk, workers=3, now=then)  # three workers at once
    assert received(channels) == (2, 2, 2)
    assert sorted(AlertEvent.objects.values_list("threshold", "period")) == [
        ("100%", f"{last_month:%Y-%m}"),
        ("80%", f"{last_month:%Y-%m}"),
    ]
    mail = channels["smtp"].mails[-1]
    assert "acme" in mail.body and "10,400" in mail.body and "10,000" in mail.body
    assert f"{settings.PORTAL_BASE_URL}/t/acme/alerts/" in mail.body  # where the rule and its alerts are

    # The month turns: usage starts from zero and both thresholds are armed again.
    tasks.alerts_evaluate_tenant.apply(args=[tenant_a.pk]).get()
    assert received(channels) == (2, 2, 2)
    post_tokens(key_a, 10)  # 8,000 this month
    tasks.alerts_evaluate_tenant.apply(args=[tenant_a.pk]).get()
    tasks.alerts_evaluate_tenant.apply(args=[tenant_a.pk]).get()  # redelivered
    assert received(channels) == (3, 3, 3)
    post_tokens(key_a, 3)
    evaluate_concurrently(tenant_a.pk)
    assert received(channels) == (4, 4, 4)
    assert AlertEvent.objects.filter(rule=rule, period=f"{timezone.now():%Y-%m}").count() == 2
    assert set(AlertDelivery.objects.values_list("status", flat=True)) == {"delivered"}
    webhook = channels["hook"].messages[-1]
    assert webhook["type"] == "alert" and webhook["threshold"] == "100%" and webhook["tenant"] == "acme"


@pytest.mark.django_db(transaction=True)
def test_ingest_queues_one_debounced_evaluation_per_burst(tenant_a, key_a, key_b, settings):
    settings.ALERTS_DEBOUNCE_SECONDS = 30
    broker = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    broker.delete("celery")
    cache.delete(debounce_key(tenant_a.pk))
    services.alert_rule_create(tenant=tenant_a, kind="spike", channels=[])

    for _ in range(3):
        post_tokens(key_a, 2)
    post_tokens(key_b, 2)  # globex has no alert rules: nothing to evaluate

    queued = broker.lrange("celery", 0, -1)
    assert len(queued) == 1
    message = json.loads(queued[0])
    assert message["headers"]["task"] == "alerts.tasks.alerts_evaluate_tenant"
    assert message["headers"]["eta"]  # runs after the window, seeing the whole burst
    broker.delete("celery")


def test_crash_between_claim_and_send_then_rerun_delivers_once(tenant_a, key_a, smtp_server, monkeypatch):
    channel = services.notification_channel_create(
        tenant=tenant_a, kind="email", name="mail", config={"recipients": ["ops@acme.test"]}
    )
    token_quota_rule(tenant_a, {"rows": [channel]}, limit=1000, thresholds=["100"])
    post_tokens(key_a, 2)
    [delivery_id] = services.alerts_evaluate(tenant_id=tenant_a.pk).due_delivery_ids
    real_send = EmailTransport.send

    def killed(self, config, message):
        raise SystemExit("worker killed")  # after the claim, before anything went out

    monkeypatch.setattr(EmailTransport, "send", killed)
    with pytest.raises(SystemExit):
        services.alert_delivery_send(delivery_id=delivery_id)
    assert smtp_server.mails == []

    monkeypatch.setattr(EmailTransport, "send", real_send)
    evaluation = services.alerts_evaluate(tenant_id=tenant_a.pk)  # the redelivered task
    assert evaluation.new_events == [] and evaluation.due_delivery_ids == [delivery_id]
    assert services.alert_delivery_send(delivery_id=delivery_id).status == "delivered"
    assert services.alert_delivery_send(delivery_id=delivery_id).status == "delivered"  # and again: nothing
    assert len(smtp_server.mails) == 1
    delivery = AlertDelivery.objects.get(pk=delivery_id)
    assert (delivery.status, delivery.attempts) == ("delivered", 2)


def test_a_worker_lost_after_its_claim_is_covered_by_the_lease(tenant_a, key_a, smtp_server):
    channel = services.notification_channel_create(
        tenant=tenant_a, kind="email", name="mail", config={"recipients": ["ops@acme.test"]}
    )
    token_quota_rule(tenant_a, {"rows": [channel]}, limit=1000, thresholds=["100"])
    post_tokens(key_a, 2)
    [delivery_id] = services.alerts_evaluate(tenant_id=tenant_a.pk).due_delivery_ids
    now = timezone.now()
    assert services._claim_delivery(delivery_id, now)  # the worker that claimed it dies here

    redelivered = services.alert_delivery_send(delivery_id=delivery_id, now=now + dt.timedelta(seconds=1))
    assert redelivered.status == "sending" and 100 < redelivered.retry_in <= 120  # retried when the lease lapses
    assert smtp_server.mails == []

    later = services.alert_delivery_send(delivery_id=delivery_id, now=now + services.LEASE + dt.timedelta(seconds=1))
    assert later.status == "delivered"
    assert len(smtp_server.mails) == 1


def test_tasks_are_acked_late_and_requeued_when_a_worker_is_lost():
    for task in (tasks.alerts_evaluate_tenant, tasks.alert_delivery_send, tasks.alerts_sweep):
        assert task.acks_late and task.reject_on_worker_lost
        assert task.retry_backoff and task.time_limit < services.LEASE.total_seconds()


def test_transient_failure_is_retried_with_backoff_then_delivered(tenant_a, key_a, webhook_receiver, settings):
    settings.NOTIFICATIONS_RETRY_BUDGET = 0.5
    receiver = webhook_receiver(secret=WEBHOOK_SECRET)
    receiver.fail_next = [503] * 3
    channel = services.notification_channel_create(
        tenant=tenant_a, kind="webhook", name="hook", config={"url": receiver.url, "secret": WEBHOOK_SECRET}
    )
    token_quota_rule(tenant_a, {"rows": [channel]}, limit=1000, thresholds=["100"])
    post_tokens(key_a, 2)
    [delivery_id] = services.alerts_evaluate(tenant_id=tenant_a.pk).due_delivery_ids

    first = services.alert_delivery_send(delivery_id=delivery_id)
    delivery = AlertDelivery.objects.get(pk=delivery_id)
    assert first.status == "retry" and first.retry_in >= 30
    assert (delivery.error_kind, delivery.status) == ("transient", "retry")
    assert "503" in delivery.error
    assert services.alert_delivery_send(delivery_id=delivery_id).status == "retry"  # not due yet: untouched

    receiver.fail_next = []
    done = services.alert_delivery_send(delivery_id=delivery_id, now=delivery.next_attempt_at)
    delivery.refresh_from_db()
    assert done.status == "delivered" and delivery.error == "" and delivery.attempts >= 2
    assert len(receiver.messages) == 1


def test_permanent_failure_is_recorded_and_not_retried(tenant_a, key_a, dingtalk_robot):
    robot = dingtalk_robot(access_token="strict", secret="SECthe-robot-secret")
    channel = services.notification_channel_create(
        tenant=tenant_a, kind="dingtalk", name="ding", config={"webhook_url": robot.webhook_url, "secret": "SECwrong"}
    )
    token_quota_rule(tenant_a, {"rows": [channel]}, limit=1000, thresholds=["100"])
    post_tokens(key_a, 2)
    [delivery_id] = services.alerts_evaluate(tenant_id=tenant_a.pk).due_delivery_ids

    outcome = services.alert_delivery_send(delivery_id=delivery_id)

    delivery = AlertDelivery.objects.get(pk=delivery_id)
    assert outcome.status == "failed" and outcome.retry_in is None
    assert (delivery.status, delivery.error_kind, delivery.attempts) == ("failed", "permanent", 1)
    assert "310000" in delivery.error
    assert services.alert_deliveries_due(now=timezone.now() + dt.timedelta(days=1)) == []


def test_dingtalk_rate_limit_defers_without_counting_an_attempt(tenant_a, key_a, dingtalk_robot, settings):
    settings.DINGTALK_MAX_PER_MINUTE = 1
    robot = dingtalk_robot(access_token="busy-robot")
    channel = services.notification_channel_create(
        tenant=tenant_a, kind="dingtalk", name="ding", config={"webhook_url": robot.webhook_url}
    )
    token_quota_rule(tenant_a, {"rows": [channel]}, limit=1000)
    post_tokens(key_a, 2)
    first, second = sorted(services.alerts_evaluate(tenant_id=tenant_a.pk).due_delivery_ids)

    assert services.alert_delivery_send(delivery_id=first).status == "delivered"
    deferred = services.alert_delivery_send(delivery_id=second)

    delivery = AlertDelivery.objects.get(pk=second)
    assert deferred.status == "retry" and 0 < deferred.retry_in <= 60
    assert (delivery.attempts, delivery.error_kind) == (0, "transient")
    assert len(robot.messages) == 1


def test_messages_are_in_the_tenants_language(tenant_a, key_a, smtp_server, dingtalk_robot):
    tenant_a.language = "zh-hans"
    tenant_a.save(update_fields=["language"])
    robot = dingtalk_robot(access_token="cn-robot", keyword="告警")
    email = services.notification_channel_create(
        tenant=tenant_a, kind="email", name="mail", config={"recipients": ["ops@acme.test"]}
    )
    ding = services.notification_channel_create(
        tenant=tenant_a, kind="dingtalk", name="ding", config={"webhook_url": robot.webhook_url, "keyword": "告警"}
    )
    token_quota_rule(tenant_a, {"rows": [email, ding]}, limit=1000, thresholds=["80"])
    post_tokens(key_a, 1)

    for delivery_id in services.alerts_evaluate(tenant_id=tenant_a.pk).due_delivery_ids:
        assert services.alert_delivery_send(delivery_id=delivery_id).status == "delivered"

    [mail] = smtp_server.mails
    assert "配额告警" in mail.subject and "80.0 %" in mail.subject
    assert "租户" in mail.body and "限额: 1,000" in mail.body and "用量: 800" in mail.body
    [message] = robot.messages
    assert "**周期**" in message["markdown"]["text"] and "打开门户" in message["markdown"]["text"]


def test_balance_alert_rearms_only_after_a_topup_lifts_it_above_the_level(tenant_a, key_a, smtp_server):
    channel = services.notification_channel_create(
        tenant=tenant_a, kind="email", name="mail", config={"recipients": ["ops@acme.test"]}
    )
    services.alert_rule_create(
        tenant=tenant_a, kind="balance", channels=[channel], threshold_unit="absolute", thresholds=["5"]
    )
    factories.topup(tenant_a, "10", reference="t1")

    def spend(dollars: int) -> None:  # gpt-4o input is 2.50 per 1M tokens
        post_tokens(key_a, dollars, input_tokens=400_000, output_tokens=0)

    def evaluate() -> int:
        for delivery_id in services.alerts_evaluate(tenant_id=tenant_a.pk).due_delivery_ids:
            services.alert_delivery_send(delivery_id=delivery_id)
        return len(smtp_server.mails)

    spend(4)  # balance 6
    assert evaluate() == 0
    spend(2)  # balance 4
    assert evaluate() == 1
    assert evaluate() == 1
    factories.topup(tenant_a, "0.50", reference="t2")  # 4.50: still below the level
    assert evaluate() == 1
    factories.topup(tenant_a, "20", reference="t3")  # 24.50: re-armed
    assert evaluate() == 1
    spend(20)  # 4.50 again
    assert evaluate() == 2
    assert "Low balance" in smtp_server.mails[-1].subject


def test_spend_rule_per_key_with_an_absolute_budget(tenant_a, key_a, smtp_server):
    other_key, other_secret = factories.issue_api_key(tenant_a, name="other")
    channel = services.notification_channel_create(
        tenant=tenant_a, kind="email", name="mail", config={"recipients": ["ops@acme.test"]}
    )
    services.alert_rule_create(
        tenant=tenant_a, kind="spend", api_key=key_a.row, window="day", amount=Decimal("10"), channels=[channel],
        threshold_unit="absolute", thresholds=["3"],
    )  # fmt: skip
    post_tokens(Credential(other_key, other_secret), 5, input_tokens=400_000, output_tokens=0)  # another key's 5.00
    assert services.alerts_evaluate(tenant_id=tenant_a.pk).new_events == []
    post_tokens(key_a, 3, input_tokens=400_000, output_tokens=0)
    [event] = services.alerts_evaluate(tenant_id=tenant_a.pk).new_events
    assert (event.threshold, event.usage, event.period) == ("3", Decimal("3"), timezone.now().date().isoformat())


def test_spike_alert_when_today_is_k_times_the_weekly_average(tenant_a, key_a):
    now = timezone.now()
    for days_ago in range(1, 8):
        post_tokens(key_a, 1, when=now - dt.timedelta(days=days_ago), input_tokens=400_000, output_tokens=0)
    rollup.rollup_refresh()
    services.alert_rule_create(tenant=tenant_a, kind="spike", spike_factor=Decimal(3), channels=[])

    post_tokens(key_a, 3, input_tokens=400_000, output_tokens=0)  # 3.00 today = 3 x: not above
    assert services.alerts_evaluate(tenant_id=tenant_a.pk).new_events == []
    post_tokens(key_a, 1, input_tokens=400_000, output_tokens=0)  # 4.00 today
    [event] = services.alerts_evaluate(tenant_id=tenant_a.pk).new_events
    assert event.threshold == "x3" and event.details["ratio"] == "4.0"
    assert services.alerts_evaluate(tenant_id=tenant_a.pk).new_events == []


def test_forecast_alerts_when_the_quota_runs_out_within_n_days(tenant_a, key_a):
    now = timezone.now()
    for days_ago in range(1, 8):
        post_tokens(key_a, 1, when=now - dt.timedelta(days=days_ago))  # 800 tokens a day
    rollup.rollup_refresh()
    quota = quota_create(
        tenant=tenant_a, metric="tokens", window="lifetime", limit=Decimal(10_000), enforcement="soft", actor_label="t"
    )
    services.alert_rule_create(tenant=tenant_a, kind="forecast", quota_id=quota.pk, forecast_days=3, channels=[])

    assert services.alerts_evaluate(tenant_id=tenant_a.pk).new_events == []  # 4,400 left: 5.5 days
    post_tokens(key_a, 2)  # 2,800 left: 3.5 days
    assert services.alerts_evaluate(tenant_id=tenant_a.pk).new_events == []
    post_tokens(key_a, 1)  # 2,000 left: 2.5 days
    [event] = services.alerts_evaluate(tenant_id=tenant_a.pk).new_events
    assert (event.threshold, event.period, event.details["days_left"]) == ("forecast", "lifetime", "2.5")


def test_balance_forecast(tenant_a, key_a):
    now = timezone.now()
    factories.topup(tenant_a, "12", reference="t1")
    for days_ago in range(1, 8):
        post_tokens(key_a, 1, when=now - dt.timedelta(days=days_ago), input_tokens=400_000, output_tokens=0)
    rollup.rollup_refresh()  # 1.00 a day; balance 5.00
    services.alert_rule_create(tenant=tenant_a, kind="forecast", forecast_days=7, channels=[])
    [event] = services.alerts_evaluate(tenant_id=tenant_a.pk).new_events
    assert event.details["target"] == "balance" and event.details["days_left"] == "5.0"


def test_sweep_evaluates_and_requeues_what_was_left_behind(tenant_a, key_a, smtp_server, eager):
    channel = services.notification_channel_create(
        tenant=tenant_a, kind="email", name="mail", config={"recipients": ["ops@acme.test"]}
    )
    token_quota_rule(tenant_a, {"rows": [channel]}, limit=1000, thresholds=["100"])
    post_tokens(key_a, 2)

    assert tasks.alerts_sweep.apply().get() == 1
    assert len(smtp_server.mails) == 1
    assert tasks.alerts_sweep.apply().get() == 1
    assert len(smtp_server.mails) == 1


def test_rules_and_channels_are_validated(tenant_a, tenant_b):
    other = services.notification_channel_create(
        tenant=tenant_b, kind="email", name="theirs", config={"recipients": ["x@globex.test"]}
    )
    with pytest.raises(services.AlertConfigError, match="another tenant"):
        services.alert_rule_create(tenant=tenant_a, kind="spike", channels=[other])
    with pytest.raises(services.AlertConfigError, match="needs a quota"):
        services.alert_rule_create(tenant=tenant_a, kind="quota", channels=[])
    with pytest.raises(services.AlertConfigError, match="budget"):
        services.alert_rule_create(tenant=tenant_a, kind="spend", channels=[])
    with pytest.raises(services.AlertConfigError, match="positive"):
        services.alert_rule_create(tenant=tenant_a, kind="spike", channels=[], thresholds=["-1"])
    with pytest.raises(services.AlertConfigError, match="recipients"):
        services.notification_channel_create(tenant=tenant_a, kind="email", name="bad", config={})
    with pytest.raises(services.AlertConfigError):
        services.notification_channel_create(tenant=tenant_a, kind="pager", name="x", config={})
    theirs_quota = quota_create(tenant=tenant_b, metric="tokens", window="day", limit=Decimal(1), actor_label="t")
    with pytest.raises(services.AlertConfigError, match="No such quota"):
        services.alert_rule_create(tenant=tenant_a, kind="quota", quota_id=theirs_quota.pk, channels=[])


def test_disabled_and_deleted_rules_stop_alerting(tenant_a, key_a):
    rule = services.alert_rule_create(tenant=tenant_a, kind="spend", amount=Decimal(1), channels=[], window="day")
    post_tokens(key_a, 1, input_tokens=400_000, output_tokens=0)  # 1.00: 100 %
    services.alert_rule_set_enabled(rule=rule, enabled=False)
    assert services.alerts_evaluate(tenant_id=tenant_a.pk).new_events == []
    assert not services.tenant_has_rules(tenant_id=tenant_a.pk)
    services.alert_rule_set_enabled(rule=rule, enabled=True)
    assert len(services.alerts_evaluate(tenant_id=tenant_a.pk).new_events) == 2  # 80 % and 100 %
    services.alert_rule_delete(rule=rule)
    assert AlertEvent.objects.count() == 0
    assert not services.tenant_has_rules(tenant_id=tenant_a.pk)
