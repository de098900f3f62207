"""Feishu / Lark custom bot (飞书自定义机器人): a message card with a title, signed or not.

As Feishu documents it: POST JSON to https://open.feishu.cn/open-apis/bot/v2/hook/<token> (Lark:
https://open.larksuite.com/...). The bot's security settings are checked by Feishu:
- signature ("签名校验"): the body carries `timestamp` (unix seconds, within an hour of
  Feishu's clock) and `sign` = base64(HMAC-SHA256(key="<timestamp>\\n<secret>", message=b""))
  (the string to sign is the key, the message is empty); a wrong one answers 19021;
- custom keywords ("自定义关键词"): the message must contain one, else 19024 (the configured
  keyword is appended to a message that lacks it);
- IP allow-list: a request from elsewhere answers 19022.
The message is {"msg_type": "interactive", "card": {...}} with the subject as the card's
header and the markdown body as a markdown element; the request body may be at most 20 KB.
The answer is {"code": 0, "msg": "success"} (older bots: {"StatusCode": 0, ...}) or an error
code: 9499 and 11232 are rate limits (later); 19021, 19022, 19024 and every other code are a
configuration Feishu refuses (retrying will not help). A bot takes 100 messages a minute and 5 a
second: sends are limited per bot across all workers (FEISHU_MAX_PER_MINUTE, and
MAX_PER_SECOND) and deferred, not dropped.
"""

import base64
import hashlib
import hmac
import json
import logging
import re
import time
from typing import Any

from django.conf import settings

from infra.notifications import ratelimit
from infra.notifications.base import ConfigError, Message, SendResult, Transport, TransportError
from infra.notifications.http import check_url, post_json, url_path
from infra.notifications.text import truncate_chars, truncate_utf8, without_heading

logger = logging.getLogger(__name__)

MAX_PER_SECOND = 5
MAX_MARKDOWN_BYTES = 16 * 1024  # the whole request may be 20 KB: room for the title and the JSON
MAX_TITLE_CHARS = 200
_HOOK_PATH = re.compile(r"/bot/v2/hook/[^/]+/?$")  # the path's tail; a proxy may put a prefix before it
# Rate limited: later (a minute covers the per-minute window). Every other code is permanent.
_THROTTLED = {9499: 60.0, 11232: 60.0}
# What the tenant reads for the codes we know; the far end's own msg goes to the log only.
_KNOWN = {
    9499: "rate limited (100 messages a minute, 5 a second per bot)",
    11232: "rate limited (100 messages a minute, 5 a second per bot)",
    19001: "the message was refused as invalid",
    19021: "signature mismatch: check the signing secret",
    19022: "this server's IP address is not on the bot's allow-list",
    19024: "the message lacks the bot's keyword: set it on the channel",
}


def feishu_sign(secret: str, timestamp: int) -> str:
    """base64(HMAC-SHA256(key="<timestamp>\\n<secret>", message=b"")), as Feishu documents it."""
    string_to_sign = f"{timestamp}\n{secret}".encode()
    return base64.b64encode(hmac.new(string_to_sign, b"", hashlib.sha256).digest()).decode()


def card(message: Message, keyword: str = "") -> dict[str, Any]:
    title = truncate_chars(message.subject, MAX_TITLE_CHARS)
    content = truncate_utf8(without_heading(message.markdown), MAX_MARKDOWN_BYTES)
    if keyword and keyword not in title and keyword not in content:
        content = f"{content}\n\n{keyword}"
    return {
        "config": {"wide_screen_mode": True},
        "header": {"title": {"tag": "plain_text", "content": title}, "template": "orange"},
        "elements": [{"tag": "markdown", "content": content}],
    }


class FeishuTransport(Transport):
    kind = "feishu"
    label = "Feishu / Lark bot"

    def validate(self, config: dict[str, Any]) -> dict[str, Any]:
        secret = config.get("secret") or ""
        keyword = config.get("keyword") or ""
        if not isinstance(secret, str) or not isinstance(keyword, str):
            raise ConfigError("secret and keyword must be text.")
        url = config.get("webhook_url")
        if not _HOOK_PATH.search(url_path(url)):
            raise ConfigError("webhook_url: paste the bot's whole webhook address, .../open-apis/bot/v2/hook/<token>")
        url = check_url(url, "webhook_url")  # last: the outbound policy resolves the host
        return {"webhook_url": url, "secret": secret.strip(), "keyword": keyword.strip()}

    def send(self, config: dict[str, Any], message: Message) -> SendResult:
        url = config["webhook_url"]
        ratelimit.defer_if_full("feishu-s", url, limit=MAX_PER_SECOND, window_seconds=1)
        ratelimit.defer_if_full("feishu", url, limit=settings.FEISHU_MAX_PER_MINUTE, window_seconds=60)
        payload: dict[str, Any] = {"msg_type": "interactive", "card": card(message, config.get("keyword") or "")}
        if config.get("secret"):
            timestamp = int(time.time())
            payload |= {"timestamp": str(timestamp), "sign": feishu_sign(config["secret"], timestamp)}
        body = json.dumps(payload, ensure_ascii=False).encode()
        # The outbound policy applies here: refused, network failures and redirects raise.
        response = post_json(url, body, headers={}, timeout=settings.NOTIFICATIONS_HTTP_TIMEOUT)
        code, msg = _code(response.body)
        if code is None or (code == 0 and response.status != 200):  # not Feishu's JSON: the HTTP status says
            if response.status == 200:
                raise TransportError("Feishu answered something that is not its JSON", permanent=False)
            transient = response.status >= 500 or response.status == 429
            raise TransportError(
                f"Feishu HTTP {response.status}", permanent=not transient, retry_after=response.retry_after
            )
        if code == 0 and response.status == 200:
            return SendResult(detail="ok")
        logger.warning("Feishu bot answered HTTP %s code %s: %.200s", response.status, code, msg)
        error = f"Feishu {code}: {_KNOWN.get(code, 'refused by Feishu')}"
        if code in _THROTTLED or response.status == 429:
            raise TransportError(error, permanent=False, retry_after=response.retry_after or _THROTTLED.get(code, 60.0))
        raise TransportError(error, permanent=response.status < 500)


def _code(body: bytes) -> tuple[int | None, str]:
    """Feishu's answer code and message: {"code", "msg"}, or the older {"StatusCode", "StatusMessage"}."""
    try:
        answer = json.loads(body)
        if "code" in answer:
            return int(answer["code"]), str(answer.get("msg", ""))
        if "StatusCode" in answer:
            return int(answer["StatusCode"]), str(answer.get("StatusMessage", ""))
    except (ValueError, TypeError):
        pass
    return None, ""
