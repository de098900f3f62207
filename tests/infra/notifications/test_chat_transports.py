"""WeCom, Feishu / Lark and Slack transports against local stand-ins that check what the real
services check (tests/notify_servers.py) and answer as they do."""

import base64
import hashlib
import hmac
import json
import uuid

import pytest

from infra.notifications import ConfigError, Message, TransportError, get_transport, kinds
from infra.notifications.feishu import feishu_sign
from infra.notifications.slack import mrkdwn
from infra.notifications.text import truncate_utf8, without_heading

MESSAGE = Message(
    subject="[Acme] Quota alert: 80.0 % of the limit used",
    text="Usage: 800 of 1,000\nOpen the portal: http://portal.test/t/acme/alerts/",
    markdown=(
        "### [Acme] Quota alert: 80.0 % of the limit used\n\n"
        "- **Usage**: 800 of 1,000\n- **Period**: 2026-03\n\n"
        "[Open the portal](http://portal.test/t/acme/alerts/)"
    ),
    data={"type": "alert", "threshold": "80%"},
    idempotency_key="delivery-1",
)
LONG = Message(subject="[Acme] 配额告警", text="", markdown="### [Acme] 配额告警\n\n" + "用量超出限额。" * 3000)


def unique(prefix: str) -> str:
    """A robot token no other test uses (the send windows are shared through Redis)."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def test_the_new_kinds_are_registered():
    assert {"wecom", "feishu", "slack"} <= set(kinds())


# --- fitting text ---------------------------------------------------------------------------


def test_truncate_utf8_never_splits_a_character_and_stays_within_the_limit():
    text = "a€用😀" * 50  # 1, 3, 3 and 4 bytes
    for limit in range(120):
        cut = truncate_utf8(text, limit)
        assert len(cut.encode()) <= max(limit, len("…".encode()))
        assert cut.endswith("…") and text.startswith(cut[:-1])
    assert truncate_utf8("short", 4096) == "short"


def test_without_heading_drops_only_a_leading_heading():
    assert without_heading("### Title\n\n- a\n- b") == "- a\n- b"
    assert without_heading("- a\n### not first") == "- a\n### not first"


# --- WeCom ----------------------------------------------------------------------------------


def test_wecom_delivers_markdown_to_the_robots_key(wecom_robot):
    robot = wecom_robot(key=unique("wecom"))
    config = get_transport("wecom").validate({"webhook_url": robot.webhook_url})

    result = get_transport("wecom").send(config, MESSAGE)

    assert result.detail == "ok"
    [message] = robot.messages
    assert message == {"msgtype": "markdown", "markdown": {"content": MESSAGE.markdown}}
    assert robot.state.received[0].query["key"] == [robot.key]


def test_wecom_content_is_cut_to_4096_bytes_on_a_character_boundary(wecom_robot):
    robot = wecom_robot(key=unique("wecom-long"))
    get_transport("wecom").send({"webhook_url": robot.webhook_url}, LONG)  # 63,000 bytes of Chinese

    [message] = robot.messages  # the robot decodes strict UTF-8 and refuses > 4096 bytes (40058)
    content = message["markdown"]["content"]
    assert 4090 <= len(content.encode()) <= 4096
    assert content.startswith("### [Acme] 配额告警") and content.endswith("…")


def test_wecom_wrong_key_is_permanent_with_a_generic_error(wecom_robot):
    robot = wecom_robot(key=unique("wecom-real"))
    with pytest.raises(TransportError) as caught:
        get_transport("wecom").send({"webhook_url": robot.webhook_url.replace(robot.key, "another")}, MESSAGE)
    assert caught.value.permanent
    assert str(caught.value) == "WeCom 93000: invalid webhook: the key is wrong or the robot was removed"
    assert robot.codes == [93000] and robot.messages == []


@pytest.mark.parametrize(
    ("answer", "permanent", "error"),
    [
        ((200, 45009), False, "WeCom 45009: rate limited (20 messages a minute per robot)"),
        ((200, -1), False, "WeCom -1: service busy"),
        ((502, None), False, "WeCom HTTP 502"),
        ((200, 40058), True, "WeCom 40058: refused by WeCom"),  # the far end's errmsg is not repeated
        ((404, None), True, "WeCom HTTP 404"),
    ],
)
def test_wecom_answers_are_classified(wecom_robot, answer, permanent, error):
    robot = wecom_robot(key=unique("wecom-answers"))
    robot.answer_next = [answer]
    with pytest.raises(TransportError) as caught:
        get_transport("wecom").send({"webhook_url": robot.webhook_url}, MESSAGE)
    assert (caught.value.permanent, str(caught.value)) == (permanent, error)
    if answer[1] == 45009:
        assert caught.value.retry_after == 60.0  # the rest of WeCom's minute
    get_transport("wecom").send({"webhook_url": robot.webhook_url}, MESSAGE)  # the next answer is real
    assert len(robot.messages) == 1


def test_wecom_robots_own_limit_answers_45009(wecom_robot):
    robot = wecom_robot(key=unique("wecom-strict"), per_minute=1)
    get_transport("wecom").send({"webhook_url": robot.webhook_url}, MESSAGE)
    with pytest.raises(TransportError) as caught:
        get_transport("wecom").send({"webhook_url": robot.webhook_url}, MESSAGE)
    assert not caught.value.permanent and robot.codes == [0, 45009]


def test_wecom_sends_are_deferred_before_the_robots_limit(wecom_robot, settings):
    settings.WECOM_MAX_PER_MINUTE = 2
    robot = wecom_robot(key=unique("wecom-rate"))
    transport, config = get_transport("wecom"), {"webhook_url": robot.webhook_url}
    transport.send(config, MESSAGE)
    transport.send(config, MESSAGE)
    with pytest.raises(TransportError) as caught:
        transport.send(config, MESSAGE)
    assert not caught.value.permanent and 0 < caught.value.retry_after <= 60
    assert caught.value.attempts == 0  # deferred before any request
    assert robot.codes == [0, 0]


@pytest.mark.parametrize(
    "url",
    [
        None,
        "https://qyapi.weixin.qq.com/cgi-bin/webhook/send",
        "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=",
        "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?other=x#key=y",
        "ftp://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=x",
    ],
)
def test_wecom_config_is_validated(url):
    with pytest.raises(ConfigError):
        get_transport("wecom").validate({"webhook_url": url})


def test_wecom_internal_address_is_refused_at_save():
    with pytest.raises(ConfigError, match="refused by policy"):
        get_transport("wecom").validate({"webhook_url": "http://169.254.169.254/cgi-bin/webhook/send?key=x"})


# --- Feishu / Lark --------------------------------------------------------------------------


def test_feishu_sign_is_hmac_keyed_by_timestamp_and_secret_over_nothing():
    secret, timestamp = "demo-secret", 1599360473
    expected = base64.b64encode(hmac.new(f"{timestamp}\n{secret}".encode(), b"", hashlib.sha256).digest()).decode()
    assert feishu_sign(secret, timestamp) == expected
    assert feishu_sign(secret, timestamp) != feishu_sign(secret, timestamp + 1)


def test_feishu_signed_card_is_accepted(feishu_bot):
    bot = feishu_bot(token=unique("feishu"), secret="the-bots-signing-secret")
    config = get_transport("feishu").validate({"webhook_url": bot.webhook_url, "secret": bot.secret})

    get_transport("feishu").send(config, MESSAGE)  # the bot recomputes the signature

    [message] = bot.messages
    assert message["msg_type"] == "interactive"
    assert message["card"]["header"]["title"] == {"tag": "plain_text", "content": MESSAGE.subject}
    [element] = message["card"]["elements"]
    assert element["tag"] == "markdown"
    assert element["content"].startswith("- **Usage**: 800 of 1,000")  # the title is the header, not repeated
    assert message["timestamp"].isdigit() and message["sign"]


def test_feishu_wrong_secret_is_rejected_permanently(feishu_bot):
    bot = feishu_bot(token=unique("feishu-strict"), secret="the-real-secret")
    with pytest.raises(TransportError) as caught:
        get_transport("feishu").send({"webhook_url": bot.webhook_url, "secret": "a-wrong-secret"}, MESSAGE)
    assert caught.value.permanent
    assert str(caught.value) == "Feishu 19021: signature mismatch: check the signing secret"
    assert bot.codes == [19021] and bot.messages == []


def test_feishu_unsigned_message_to_a_signing_bot_is_rejected(feishu_bot):
    bot = feishu_bot(token=unique("feishu-signing"), secret="the-real-secret")
    with pytest.raises(TransportError) as caught:
        get_transport("feishu").send({"webhook_url": bot.webhook_url}, MESSAGE)
    assert caught.value.permanent and bot.codes == [19021]


def test_feishu_keyword_is_added_and_a_missing_one_is_what_the_bot_rejects(feishu_bot):
    bot = feishu_bot(token=unique("feishu-keyword"), keyword="账单")
    get_transport("feishu").send({"webhook_url": bot.webhook_url, "keyword": "账单"}, MESSAGE)
    assert "账单" in bot.messages[0]["card"]["elements"][0]["content"]
    with pytest.raises(TransportError) as caught:
        get_transport("feishu").send({"webhook_url": bot.webhook_url}, MESSAGE)  # not configured here
    assert caught.value.permanent and bot.codes == [0, 19024]


def test_feishu_older_success_answer_is_understood(feishu_bot):
    bot = feishu_bot(token=unique("feishu-legacy"), legacy=True)
    assert get_transport("feishu").send({"webhook_url": bot.webhook_url}, MESSAGE).detail == "ok"
    assert len(bot.messages) == 1


def test_feishu_long_content_fits_the_20_kb_body(feishu_bot):
    bot = feishu_bot(token=unique("feishu-long"))
    get_transport("feishu").send({"webhook_url": bot.webhook_url}, LONG)  # the bot refuses bodies over 20 KB
    [message] = bot.messages
    assert message["card"]["elements"][0]["content"].endswith("…")


@pytest.mark.parametrize(
    ("answer", "permanent", "error"),
    [
        ((200, 11232), False, "Feishu 11232: rate limited (100 messages a minute, 5 a second per bot)"),
        ((400, 9499), False, "Feishu 9499: rate limited (100 messages a minute, 5 a second per bot)"),
        ((503, None), False, "Feishu HTTP 503"),
        ((200, 19022), True, "Feishu 19022: this server's IP address is not on the bot's allow-list"),
        ((200, 19024), True, "Feishu 19024: the message lacks the bot's keyword: set it on the channel"),
        ((400, 12345), True, "Feishu 12345: refused by Feishu"),  # the far end's msg is not repeated
    ],
)
def test_feishu_answers_are_classified(feishu_bot, answer, permanent, error):
    bot = feishu_bot(token=unique("feishu-answers"))
    bot.answer_next = [answer]
    with pytest.raises(TransportError) as caught:
        get_transport("feishu").send({"webhook_url": bot.webhook_url}, MESSAGE)
    assert (caught.value.permanent, str(caught.value)) == (permanent, error)
    if not permanent and answer[1]:
        assert caught.value.retry_after == 60.0
    get_transport("feishu").send({"webhook_url": bot.webhook_url}, MESSAGE)
    assert len(bot.messages) == 1


def test_feishu_sends_are_deferred_at_5_a_second_and_the_minute_limit(feishu_bot, settings):
    bot = feishu_bot(token=unique("feishu-rate"))
    transport, config = get_transport("feishu"), {"webhook_url": bot.webhook_url}
    for _ in range(5):
        transport.send(config, MESSAGE)
    with pytest.raises(TransportError) as caught:
        transport.send(config, MESSAGE)
    assert not caught.value.permanent and caught.value.attempts == 0 and 0 < caught.value.retry_after <= 1
    assert len(bot.messages) == 5

    settings.FEISHU_MAX_PER_MINUTE = 1
    other = feishu_bot(token=unique("feishu-minute"))
    transport.send({"webhook_url": other.webhook_url}, MESSAGE)
    with pytest.raises(TransportError) as caught:
        transport.send({"webhook_url": other.webhook_url}, MESSAGE)
    assert caught.value.attempts == 0 and 1 < caught.value.retry_after <= 60
    assert len(other.messages) == 1


@pytest.mark.parametrize(
    "url",
    [
        None,
        "https://open.feishu.cn/open-apis/bot/v2/hook/",
        "https://open.feishu.cn/open-apis/bot/v2/",
        "https://open.feishu.cn/open-apis/bot/v2/hook/abc/extra",
        "gopher://open.feishu.cn/open-apis/bot/v2/hook/abc",
    ],
)
def test_feishu_config_is_validated(url):
    with pytest.raises(ConfigError):
        get_transport("feishu").validate({"webhook_url": url})


def test_feishu_accepts_a_proxy_host_with_the_hook_path(settings):
    settings.OUTBOUND_ALLOWED_NETWORKS = ("feishu-proxy.corp.example",)
    url = "https://feishu-proxy.corp.example/lark/open-apis/bot/v2/hook/abc"
    assert get_transport("feishu").validate({"webhook_url": url, "secret": " s "}) == {
        "webhook_url": url,
        "secret": "s",
        "keyword": "",
    }


def test_feishu_internal_address_is_refused_at_save():
    with pytest.raises(ConfigError, match="refused by policy"):
        get_transport("feishu").validate({"webhook_url": "http://10.0.0.8/open-apis/bot/v2/hook/abc"})


# --- Slack ----------------------------------------------------------------------------------


def test_slack_mrkdwn_conversion():
    assert mrkdwn("- **Usage**: 1 < 2 & 3\n[Open the portal](https://p.test/t/a/?x=1&y=2)") == (
        "• *Usage*: 1 &lt; 2 &amp; 3\n<https://p.test/t/a/?x=1&amp;y=2|Open the portal>"
    )


def test_slack_delivers_a_header_and_a_mrkdwn_section(slack_webhook):
    hook = slack_webhook(secret=unique("slack"))
    config = get_transport("slack").validate({"url": hook.url})

    result = get_transport("slack").send(config, MESSAGE)

    assert result.detail == "HTTP 200"
    [message] = hook.messages
    assert message["text"] == MESSAGE.subject  # the notification's fallback
    header, section = message["blocks"]
    assert header == {"type": "header", "text": {"type": "plain_text", "text": MESSAGE.subject}}
    assert section["text"]["type"] == "mrkdwn"
    assert section["text"]["text"].startswith("• *Usage*: 800 of 1,000")
    assert "<http://portal.test/t/acme/alerts/|Open the portal>" in section["text"]["text"]


def test_slack_long_section_fits_3000_characters(slack_webhook):
    hook = slack_webhook(secret=unique("slack-long"))
    get_transport("slack").send({"url": hook.url}, LONG)  # the webhook answers invalid_blocks above 3000
    [message] = hook.messages
    assert len(message["blocks"][1]["text"]["text"]) == 3000


def test_slack_wrong_secret_is_permanent(slack_webhook):
    hook = slack_webhook(secret=unique("slack-real"))
    with pytest.raises(TransportError) as caught:
        get_transport("slack").send({"url": hook.url.replace(hook.secret, "other")}, MESSAGE)
    assert caught.value.permanent and str(caught.value) == "Slack HTTP 403 (invalid_token)"
    assert hook.codes == [403]


@pytest.mark.parametrize(
    ("answer", "permanent", "error", "retry_after"),
    [
        ((429, "rate_limited", {"Retry-After": "7"}), False, "Slack HTTP 429 (rate_limited)", 7.0),
        ((500, "rollup_error"), False, "Slack HTTP 500 (rollup_error)", None),
        ((503, "<html>upstream down</html>"), False, "Slack HTTP 503", None),
        ((404, "no_service"), True, "Slack HTTP 404 (no_service)", None),
        ((410, "channel_is_archived"), True, "Slack HTTP 410 (channel_is_archived)", None),
        ((403, "action_prohibited"), True, "Slack HTTP 403 (action_prohibited)", None),
        ((400, "internal-host-db-01 said no"), True, "Slack HTTP 400", None),  # unknown text: not repeated
    ],
)
def test_slack_answers_are_classified(slack_webhook, answer, permanent, error, retry_after):
    hook = slack_webhook(secret=unique("slack-answers"))
    hook.answer_next = [answer]
    with pytest.raises(TransportError) as caught:
        get_transport("slack").send({"url": hook.url}, MESSAGE)
    assert (caught.value.permanent, str(caught.value), caught.value.retry_after) == (permanent, error, retry_after)
    get_transport("slack").send({"url": hook.url}, MESSAGE)
    assert len(hook.messages) == 1


@pytest.mark.parametrize(
    "url",
    [
        None,
        "https://hooks.slack.com/",
        "https://hooks.slack.com/services/T0/B0",
        "https://hooks.slack.com/triggers/T0/123/abc",  # a workflow trigger takes other JSON
        "file:///services/T0/B0/x",
    ],
)
def test_slack_config_is_validated(url):
    with pytest.raises(ConfigError):
        get_transport("slack").validate({"url": url})


def test_slack_internal_address_is_refused_at_save_and_at_send(listener):
    inside = listener()  # 127.0.0.1, not on the allow-list here
    url = f"http://127.0.0.1:{inside.port}/services/T0/B0/secret"
    with pytest.raises(ConfigError, match="refused by policy"):
        get_transport("slack").validate({"url": url})
    with pytest.raises(TransportError) as caught:  # a row written around validate
        get_transport("slack").send({"url": url}, MESSAGE)
    assert caught.value.permanent and "refused by policy" in str(caught.value)
    assert inside.contacts == 0


def test_chat_payloads_are_json_utf8(wecom_robot):
    robot = wecom_robot(key=unique("wecom-utf8"))
    get_transport("wecom").send({"webhook_url": robot.webhook_url}, LONG)
    body = robot.state.received[0].body
    assert "配额告警".encode() in body and json.loads(body)  # not \\u-escaped: counted as WeCom counts bytes
