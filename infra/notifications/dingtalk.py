"""DingTalk custom robot (自定义机器人): markdown messages, signed or keyword mode.

As DingTalk documents it: POST JSON to https://oapi.dingtalk.com/robot/send?access_token=...;
in signed mode ("加签") append `&timestamp=<ms>&sign=<s>` where s is
urlencode(base64(HMAC-SHA256(key=secret, msg="<timestamp>\\n<secret>"))); in keyword mode the
message must contain one of the robot's keywords. The answer is {"errcode": 0, "errmsg": "ok"}
or an error code. A robot takes at most 20 messages a minute (above that it is throttled for
10 minutes), so sends are limited per robot across all workers and deferred, not dropped.
"""

import base64
import hashlib
import hmac
import json
import time
import urllib.parse
from typing import Any

from django.conf import settings

from infra.notifications import ratelimit
from infra.notifications.base import ConfigError, Message, SendResult, Transport, TransportError
from infra.notifications.http import check_url, post_json

# Error codes that mean "later": throttled (send too fast; too fast, robot limited 10 min),
# and "system busy". Every other non-zero code is a configuration problem (bad token, sign
# mismatch, keyword missing, IP not allowed): retrying will not help.
_THROTTLED = {130101: 60.0, 410100: 600.0}
_BUSY = {-1}


def dingtalk_sign(secret: str, timestamp_ms: int) -> str:
    """base64(HMAC-SHA256(secret, "timestamp\\nsecret")), before URL encoding."""
    string_to_sign = f"{timestamp_ms}\n{secret}".encode()
    digest = hmac.new(secret.encode(), string_to_sign, hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def signed_url(webhook_url: str, secret: str, timestamp_ms: int) -> str:
    separator = "&" if "?" in webhook_url else "?"
    sign = urllib.parse.quote_plus(dingtalk_sign(secret, timestamp_ms))
    return f"{webhook_url}{separator}timestamp={timestamp_ms}&sign={sign}"


class DingTalkTransport(Transport):
    kind = "dingtalk"
    label = "DingTalk robot"

    def validate(self, config: dict[str, Any]) -> dict[str, Any]:
        secret = config.get("secret") or ""
        keyword = config.get("keyword") or ""
        if not isinstance(secret, str) or not isinstance(keyword, str):
            raise ConfigError("secret and keyword must be text.")
        if secret and not secret.startswith("SEC"):
            raise ConfigError("secret: DingTalk signing secrets start with SEC.")
        url = config.get("webhook_url")
        if not isinstance(url, str) or "access_token=" not in url.partition("#")[0].partition("?")[2]:
            raise ConfigError("webhook_url: paste the robot's whole webhook address, with ?access_token=...")
        url = check_url(url, "webhook_url")  # last: the outbound policy resolves the host
        return {"webhook_url": url, "secret": secret.strip(), "keyword": keyword.strip()}

    def send(self, config: dict[str, Any], message: Message) -> SendResult:
        url = config["webhook_url"]
        ratelimit.defer_if_full("dingtalk", url, limit=settings.DINGTALK_MAX_PER_MINUTE, window_seconds=60)
        title, text = message.subject, message.markdown
        keyword = config.get("keyword") or ""
        if keyword and keyword not in title and keyword not in text:
            text = f"{text}\n\n{keyword}"
        if config.get("secret"):
            url = signed_url(url, config["secret"], int(time.time() * 1000))
        body = json.dumps({"msgtype": "markdown", "markdown": {"title": title, "text": text}}, ensure_ascii=False)
        # The outbound policy applies here: refused, network failures and redirects raise.
        response = post_json(url, body.encode(), headers={}, timeout=settings.NOTIFICATIONS_HTTP_TIMEOUT)
        if response.status != 200:
            raise TransportError(
                f"DingTalk HTTP {response.status}", permanent=response.status < 500, retry_after=response.retry_after
            )
        try:
            answer = json.loads(response.body)
            errcode, errmsg = int(answer.get("errcode", -1)), str(answer.get("errmsg", ""))
        except (ValueError, AttributeError, TypeError):
            raise TransportError("DingTalk answered something that is not its JSON", permanent=False) from None
        if errcode == 0:
            return SendResult(detail="ok")
        if errcode in _THROTTLED:
            raise TransportError(f"DingTalk {errcode}: {errmsg}", permanent=False, retry_after=_THROTTLED[errcode])
        raise TransportError(f"DingTalk {errcode}: {errmsg}", permanent=errcode not in _BUSY)
