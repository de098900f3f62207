"""WeCom group robot (企业微信群机器人): markdown messages to a group chat.

As WeCom documents it: POST JSON to https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=<key>
with {"msgtype": "markdown", "markdown": {"content": "..."}}; the content is at most 4096 bytes
of UTF-8 (longer content is cut here, on a character boundary). The only credential is the
`key` in the URL: a robot has no signing and no keyword setting, so whoever holds the URL can
post to the group (keep it secret like a password). The answer is
{"errcode": 0, "errmsg": "ok"} or an error code: 45009 means the robot sent more than 20
messages in a minute, -1 that the service is busy (both: later); 93000 an invalid webhook
(the key is wrong or the robot was removed) and every other code a message or configuration
WeCom refuses (retrying will not help). Sends are limited per robot across all workers
(WECOM_MAX_PER_MINUTE, 20 by default) and deferred, not dropped.
"""

import json
import logging
import urllib.parse
from typing import Any

from django.conf import settings

from infra.notifications import ratelimit
from infra.notifications.base import ConfigError, Message, SendResult, Transport, TransportError
from infra.notifications.http import check_url, post_json
from infra.notifications.text import truncate_utf8

logger = logging.getLogger(__name__)

MAX_CONTENT_BYTES = 4096  # markdown.content, UTF-8
RATE_LIMITED = 45009  # "api freq out of limit": 20 messages a minute per robot
BUSY = -1  # "system busy"
# What the tenant reads for the codes we know; the far end's own errmsg goes to the log only.
_KNOWN = {
    RATE_LIMITED: "rate limited (20 messages a minute per robot)",
    BUSY: "service busy",
    93000: "invalid webhook: the key is wrong or the robot was removed",
}


def robot_key(url: str) -> str:
    """The `key` query parameter of a robot's webhook URL ("" when there is none)."""
    query = urllib.parse.urlsplit(url.partition("#")[0]).query
    return (urllib.parse.parse_qs(query).get("key") or [""])[0].strip()


class WeComTransport(Transport):
    kind = "wecom"
    label = "WeCom robot"

    def validate(self, config: dict[str, Any]) -> dict[str, Any]:
        url = config.get("webhook_url")
        try:
            has_key = isinstance(url, str) and bool(robot_key(url))
        except ValueError:
            has_key = False
        if not has_key:
            raise ConfigError("webhook_url: paste the robot's whole webhook address, with ?key=...")
        url = check_url(url, "webhook_url")  # last: the outbound policy resolves the host
        return {"webhook_url": url}

    def send(self, config: dict[str, Any], message: Message) -> SendResult:
        url = config["webhook_url"]
        ratelimit.defer_if_full("wecom", url, limit=settings.WECOM_MAX_PER_MINUTE, window_seconds=60)
        content = truncate_utf8(message.markdown, MAX_CONTENT_BYTES)
        body = json.dumps({"msgtype": "markdown", "markdown": {"content": content}}, ensure_ascii=False)
        # The outbound policy applies here: refused, network failures and redirects raise.
        response = post_json(url, body.encode(), headers={}, timeout=settings.NOTIFICATIONS_HTTP_TIMEOUT)
        if response.status != 200:
            transient = response.status >= 500 or response.status == 429
            raise TransportError(
                f"WeCom HTTP {response.status}", permanent=not transient, retry_after=response.retry_after
            )
        try:
            answer = json.loads(response.body)
            errcode, errmsg = int(answer["errcode"]), str(answer.get("errmsg", ""))
        except (ValueError, KeyError, TypeError):
            raise TransportError("WeCom answered something that is not its JSON", permanent=False) from None
        if errcode == 0:
            return SendResult(detail="ok")
        logger.warning("WeCom robot answered errcode %s: %.200s", errcode, errmsg)
        error = f"WeCom {errcode}: {_KNOWN.get(errcode, 'refused by WeCom')}"
        if errcode == RATE_LIMITED:
            raise TransportError(error, permanent=False, retry_after=60.0)
        raise TransportError(error, permanent=errcode != BUSY)
