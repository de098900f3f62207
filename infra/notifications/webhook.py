"""Generic webhook: a JSON POST signed with HMAC-SHA256 over the timestamp and the body.

Headers: `X-Tokenbill-Timestamp: <unix seconds>`, `X-Tokenbill-Signature: sha256=<hex of
HMAC-SHA256(secret, "<timestamp>." + body)>` and `X-Tokenbill-Delivery: <id>` (the same on
every retry, for deduplication). A receiver recomputes the signature and rejects timestamps
older than a few minutes (replays). Transient failures (network, 408, 429, 5xx) are retried
with exponential backoff inside NOTIFICATIONS_RETRY_BUDGET seconds; 4xx, redirects and
addresses the outbound policy refuses are permanent (infra/notifications/outbound.py).
"""

import hashlib
import hmac
import json
import time
from typing import Any

from django.conf import settings

from infra.notifications.base import ConfigError, Message, SendResult, Transport, TransportError
from infra.notifications.http import check_url, post_json

FIRST_BACKOFF = 0.5  # seconds; doubles after each transient failure
_TRANSIENT_STATUS = {408, 425, 429}


def webhook_signature(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"sha256={mac.hexdigest()}"


class WebhookTransport(Transport):
    kind = "webhook"
    label = "Webhook"

    def validate(self, config: dict[str, Any]) -> dict[str, Any]:
        secret = config.get("secret")
        if not isinstance(secret, str) or len(secret) < 16:
            raise ConfigError("secret: at least 16 characters, shared with the receiver to check signatures.")
        url = check_url(config.get("url"), "url")  # last: the outbound policy resolves the host
        return {"url": url, "secret": secret}

    def send(self, config: dict[str, Any], message: Message) -> SendResult:
        body = json.dumps(
            {"id": message.idempotency_key, "subject": message.subject, "text": message.text, **message.data},
            ensure_ascii=False,
            sort_keys=True,
            default=str,
        ).encode()
        deadline = time.monotonic() + settings.NOTIFICATIONS_RETRY_BUDGET
        backoff, attempts = FIRST_BACKOFF, 0
        while True:
            attempts += 1
            timestamp = int(time.time())
            headers = {
                "X-Tokenbill-Timestamp": str(timestamp),
                "X-Tokenbill-Signature": webhook_signature(config["secret"], timestamp, body),
                "X-Tokenbill-Delivery": message.idempotency_key,
            }
            timeout = max(min(settings.NOTIFICATIONS_HTTP_TIMEOUT, deadline - time.monotonic()), 0.5)
            retry_after = None
            try:
                response = post_json(config["url"], body, headers=headers, timeout=timeout)
            except TransportError as exc:  # refused by policy, redirected, or no answer
                if exc.permanent:
                    exc.attempts = attempts
                    raise
                error = str(exc)
            else:
                if 200 <= response.status < 300:
                    return SendResult(attempts=attempts, detail=f"HTTP {response.status}")
                error = f"HTTP {response.status}"
                if response.status < 500 and response.status not in _TRANSIENT_STATUS:
                    raise TransportError(error, permanent=True, attempts=attempts)
                retry_after = response.retry_after
            wait = max(backoff, retry_after or 0)
            if time.monotonic() + wait >= deadline:
                raise TransportError(error, permanent=False, retry_after=retry_after, attempts=attempts)
            time.sleep(wait)
            backoff *= 2
