"""Slack incoming webhook: a header and a mrkdwn section posted to one channel.

As Slack documents it: POST JSON to https://hooks.slack.com/services/T.../B.../<secret> with
{"text": "...", "blocks": [...]}; `text` is the fallback shown in notifications, the blocks are
what the channel shows (a header block of plain text, at most 150 characters; a section of
mrkdwn, at most 3000). Incoming webhooks have no signing: the URL itself is the credential
(whoever holds it can post to the channel), so it is kept like a password. Slack answers
`200 ok`, or an HTTP error with a short text: 400 `invalid_payload` / `invalid_blocks` /
`no_text`, 403 `invalid_token` / `action_prohibited`, 404 `no_service` /
`channel_not_found`, 410 `channel_is_archived` (all permanent: fix or replace the webhook);
429 `rate_limited` with Retry-After (about one message a second per webhook) and 5xx are
transient, retried later.
"""

import json
import logging
import re
from typing import Any

from django.conf import settings

from infra.notifications.base import ConfigError, Message, SendResult, Transport, TransportError
from infra.notifications.http import check_url, post_json, url_path
from infra.notifications.text import truncate_chars, without_heading

logger = logging.getLogger(__name__)

MAX_HEADER_CHARS = 150
MAX_SECTION_CHARS = 3000
_HOOK_PATH = re.compile(r"/services/[^/]+/[^/]+/[^/]+/?$")  # the path's tail; a proxy may add a prefix
_TRANSIENT_STATUS = {408, 429}
# Slack's error texts, repeated to the tenant only when they are one of these.
_KNOWN_ERRORS = {
    "invalid_payload",
    "invalid_blocks",
    "invalid_blocks_format",
    "no_text",
    "invalid_token",
    "action_prohibited",
    "no_service",
    "no_service_id",
    "no_team",
    "team_disabled",
    "channel_not_found",
    "channel_is_archived",
    "posting_to_general_channel_denied",
    "rate_limited",
    "rollup_error",
}
_LINK = re.compile(r"\[([^\]\n]*)\]\(([^)\s]+)\)")
_BOLD = re.compile(r"\*\*(.+?)\*\*")


def _escape(text: str) -> str:
    """Slack's three control characters, as its formatting guide asks."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _inline(text: str) -> str:
    text = _BOLD.sub(r"*\1*", _escape(text))
    return re.sub(r"(?m)^- ", "\N{BULLET} ", text)


def mrkdwn(markdown: str) -> str:
    """Our markdown (bold, links, `- ` lists) as Slack's mrkdwn: *bold*, <url|label>, bullets."""
    parts, position = [], 0
    for link in _LINK.finditer(markdown):
        parts.append(_inline(markdown[position : link.start()]))
        parts.append(f"<{_escape(link.group(2))}|{_escape(link.group(1)).replace('|', '/')}>")
        position = link.end()
    parts.append(_inline(markdown[position:]))
    return "".join(parts)


def payload(message: Message) -> dict[str, Any]:
    return {
        "text": message.subject,
        "blocks": [
            {
                "type": "header",
                "text": {"type": "plain_text", "text": truncate_chars(message.subject, MAX_HEADER_CHARS)},
            },
            {
                "type": "section",
                "text": {
                    "type": "mrkdwn",
                    "text": truncate_chars(mrkdwn(without_heading(message.markdown)), MAX_SECTION_CHARS),
                },
            },
        ],
    }


class SlackTransport(Transport):
    kind = "slack"
    label = "Slack incoming webhook"

    def validate(self, config: dict[str, Any]) -> dict[str, Any]:
        url = config.get("url")
        if not _HOOK_PATH.search(url_path(url)):
            raise ConfigError("url: paste the incoming webhook's whole address, .../services/T.../B.../...")
        return {"url": check_url(url, "url")}  # last: the outbound policy resolves the host

    def send(self, config: dict[str, Any], message: Message) -> SendResult:
        body = json.dumps(payload(message), ensure_ascii=False).encode()
        # The outbound policy applies here: refused, network failures and redirects raise.
        response = post_json(config["url"], body, headers={}, timeout=settings.NOTIFICATIONS_HTTP_TIMEOUT)
        if 200 <= response.status < 300:
            return SendResult(detail=f"HTTP {response.status}")
        answer = response.body[:100].decode("utf-8", errors="replace").strip()
        logger.warning("Slack webhook answered HTTP %s: %.100s", response.status, answer)
        error = f"Slack HTTP {response.status}" + (f" ({answer})" if answer in _KNOWN_ERRORS else "")
        transient = response.status >= 500 or response.status in _TRANSIENT_STATUS
        raise TransportError(error, permanent=not transient, retry_after=response.retry_after)
