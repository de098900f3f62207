"""Notification transports: one class per channel behind a registry.

Email, DingTalk, webhook, WeCom, Feishu / Lark and Slack; every HTTP one sends through
http.post_json, behind the outbound URL policy (outbound.py).

A low layer: it imports no app. Callers hand a transport the channel's config and a rendered
Message; the transport sends it or raises TransportError, marked permanent (fix the config,
retrying will not help) or transient (retry later, maybe after `retry_after` seconds).
"""

from infra.notifications.base import ConfigError, Message, SendResult, Transport, TransportError
from infra.notifications.registry import get_transport, kinds

__all__ = ["ConfigError", "Message", "SendResult", "Transport", "TransportError", "get_transport", "kinds"]
