"""Each transport against a real local server: what arrives, and how failures are classified."""

import base64
import hashlib
import hmac
import urllib.parse

import pytest

from infra.notifications import ConfigError, Message, TransportError, get_transport
from infra.notifications.dingtalk import dingtalk_sign, signed_url

MESSAGE = Message(
    subject="[Acme] Quota alert: 80.0 % of the limit used",
    text="Usage: 800 of 1,000\nOpen the portal: http://portal.test/",
    markdown="### [Acme] Quota alert\n\n- **Usage**: 800 of 1,000",
    data={"type": "alert", "threshold": "80%"},
    idempotency_key="delivery-1",
)


# --- email ----------------------------------------------------------------------------------


def test_email_arrives_at_the_smtp_server(smtp_server):
    result = get_transport("email").send({"recipients": ["ops@acme.test", "cfo@acme.test"]}, MESSAGE)

    assert result.attempts == 1
    [mail] = smtp_server.mails
    assert mail.recipients == ["ops@acme.test", "cfo@acme.test"]
    assert mail.subject == MESSAGE.subject
    assert "Usage: 800 of 1,000" in mail.body
    assert mail.headers["X-Tokenbill-Delivery"] == "delivery-1"


def test_email_refused_recipient_is_permanent(smtp_server):
    with pytest.raises(TransportError) as caught:
        get_transport("email").send({"recipients": ["nobody@refused.example.com"]}, MESSAGE)
    assert caught.value.permanent
    assert smtp_server.mails == []


def test_email_server_down_is_transient(smtp_server, settings):
    settings.EMAIL_PORT = 1  # nothing listens there
    with pytest.raises(TransportError) as caught:
        get_transport("email").send({"recipients": ["ops@acme.test"]}, MESSAGE)
    assert not caught.value.permanent


@pytest.mark.parametrize(
    "config", [{}, {"recipients": []}, {"recipients": ["not-an-address"]}, {"recipients": ["a@b.test"] * 21}]
)
def test_email_config_is_validated(config):
    with pytest.raises(ConfigError):
        get_transport("email").validate(config)


def test_email_config_accepts_a_comma_separated_list():
    assert get_transport("email").validate({"recipients": "a@b.test, c@d.test"}) == {
        "recipients": ["a@b.test", "c@d.test"]
    }


# --- DingTalk -------------------------------------------------------------------------------


def test_dingtalk_sign_matches_the_documented_algorithm():
    secret, timestamp = "SECxyz", 1700000000000
    expected = base64.b64encode(
        hmac.new(secret.encode(), f"{timestamp}\n{secret}".encode(), hashlib.sha256).digest()
    ).decode()
    assert dingtalk_sign(secret, timestamp) == expected
    url = signed_url("https://oapi.dingtalk.com/robot/send?access_token=t", secret, timestamp)
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)
    assert query["timestamp"] == [str(timestamp)]
    assert query["sign"] == [expected]  # URL-encoded on the wire, exact after decoding
    assert "+" not in url.split("sign=")[1] and "/" not in url.split("sign=")[1]


def test_dingtalk_signed_message_is_accepted(dingtalk_robot):
    robot = dingtalk_robot(access_token="tok1", secret="SECsigned-secret")
    config = get_transport("dingtalk").validate({"webhook_url": robot.webhook_url, "secret": robot.secret})

    get_transport("dingtalk").send(config, MESSAGE)

    [message] = robot.messages
    assert message["msgtype"] == "markdown"
    assert message["markdown"]["title"] == MESSAGE.subject
    assert message["markdown"]["text"].startswith("### [Acme] Quota alert")


def test_dingtalk_wrong_secret_is_rejected_permanently(dingtalk_robot):
    robot = dingtalk_robot(access_token="tok2", secret="SECthe-real-secret")
    with pytest.raises(TransportError) as caught:
        get_transport("dingtalk").send({"webhook_url": robot.webhook_url, "secret": "SECa-wrong-secret"}, MESSAGE)
    assert caught.value.permanent
    assert "310000" in str(caught.value)
    assert robot.errcodes == [310000]
    assert robot.messages == []


def test_dingtalk_keyword_mode_adds_the_keyword(dingtalk_robot):
    robot = dingtalk_robot(access_token="tok3", keyword="账单")
    get_transport("dingtalk").send({"webhook_url": robot.webhook_url, "keyword": "账单"}, MESSAGE)
    [message] = robot.messages
    assert "账单" in message["markdown"]["text"]


def test_dingtalk_missing_keyword_is_what_the_robot_rejects(dingtalk_robot):
    robot = dingtalk_robot(access_token="tok4", keyword="账单")
    with pytest.raises(TransportError) as caught:
        get_transport("dingtalk").send({"webhook_url": robot.webhook_url}, MESSAGE)  # not configured here
    assert caught.value.permanent
    assert robot.errcodes == [310000]


def test_dingtalk_unknown_token_is_permanent(dingtalk_robot):
    robot = dingtalk_robot(access_token="tok5")
    url = robot.webhook_url.replace("tok5", "other")
    with pytest.raises(TransportError) as caught:
        get_transport("dingtalk").send({"webhook_url": url}, MESSAGE)
    assert caught.value.permanent


def test_dingtalk_rate_limit_defers_the_third_message(dingtalk_robot, settings):
    settings.DINGTALK_MAX_PER_MINUTE = 2
    robot = dingtalk_robot(access_token="tok-rate")
    config = {"webhook_url": robot.webhook_url}
    transport = get_transport("dingtalk")
    transport.send(config, MESSAGE)
    transport.send(config, MESSAGE)
    with pytest.raises(TransportError) as caught:
        transport.send(config, MESSAGE)
    assert not caught.value.permanent
    assert 0 < caught.value.retry_after <= 60
    assert caught.value.attempts == 0  # deferred before any request
    assert len(robot.messages) == 2


def test_dingtalk_unreachable_is_transient(settings):
    settings.OUTBOUND_ALLOWED_NETWORKS = ("127.0.0.1/32",)  # a receiver on premises, down
    with pytest.raises(TransportError) as caught:
        get_transport("dingtalk").send({"webhook_url": "http://127.0.0.1:1/robot/send?access_token=x"}, MESSAGE)
    assert not caught.value.permanent


@pytest.mark.parametrize(
    "config",
    [
        {},
        {"webhook_url": "ftp://example.com/robot/send?access_token=x"},
        {"webhook_url": "https://oapi.dingtalk.com/robot/send"},
        {"webhook_url": "https://oapi.dingtalk.com/robot/send?access_token=x", "secret": "not-a-sec"},
    ],
)
def test_dingtalk_config_is_validated(config):
    with pytest.raises(ConfigError):
        get_transport("dingtalk").validate(config)


# --- webhook --------------------------------------------------------------------------------

SECRET = "a-webhook-secret-of-some-length"


def test_webhook_delivers_signed_json(webhook_receiver):
    receiver = webhook_receiver(secret=SECRET)
    result = get_transport("webhook").send({"url": receiver.url, "secret": SECRET}, MESSAGE)

    assert result.attempts == 1
    [payload] = receiver.messages
    assert payload["id"] == "delivery-1"
    assert payload["threshold"] == "80%"
    assert payload["subject"] == MESSAGE.subject


def test_webhook_retries_transient_failures_within_the_budget(webhook_receiver):
    receiver = webhook_receiver(secret=SECRET)
    receiver.fail_next = [503, 502]
    result = get_transport("webhook").send({"url": receiver.url, "secret": SECRET}, MESSAGE)
    assert result.attempts == 3
    assert receiver.answered == [503, 502, 200]
    assert len(receiver.messages) == 1


def test_webhook_gives_up_as_transient_when_the_budget_is_spent(webhook_receiver, settings):
    settings.NOTIFICATIONS_RETRY_BUDGET = 1.0
    receiver = webhook_receiver(secret=SECRET)
    receiver.fail_next = [500] * 10
    with pytest.raises(TransportError) as caught:
        get_transport("webhook").send({"url": receiver.url, "secret": SECRET}, MESSAGE)
    assert not caught.value.permanent
    assert caught.value.attempts == len(receiver.answered) >= 2


def test_webhook_client_error_is_permanent_and_not_retried(webhook_receiver):
    receiver = webhook_receiver(secret=SECRET)
    with pytest.raises(TransportError) as caught:  # the receiver checks with another secret: 401
        get_transport("webhook").send({"url": receiver.url, "secret": "another-secret-entirely"}, MESSAGE)
    assert caught.value.permanent
    assert receiver.answered == [401]


@pytest.mark.parametrize("config", [{}, {"url": "http://x.test/h", "secret": "short"}, {"url": "x", "secret": SECRET}])
def test_webhook_config_is_validated(config):
    with pytest.raises(ConfigError):
        get_transport("webhook").validate(config)
