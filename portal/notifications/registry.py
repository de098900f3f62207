"""Channel kind -> transport. Adding a channel is one class and one line here."""

from portal.notifications.base import Transport
from portal.notifications.dingtalk import DingTalkTransport
from portal.notifications.email import EmailTransport
from portal.notifications.feishu import FeishuTransport
from portal.notifications.slack import SlackTransport
from portal.notifications.webhook import WebhookTransport
from portal.notifications.wecom import WeComTransport

_TRANSPORTS: dict[str, Transport] = {
    transport.kind: transport
    for transport in (
        EmailTransport(),
        DingTalkTransport(),
        WebhookTransport(),
        WeComTransport(),
        FeishuTransport(),
        SlackTransport(),
    )
}


def get_transport(kind: str) -> Transport:
    try:
        return _TRANSPORTS[kind]
    except KeyError:
        raise LookupError(f"no transport for channel kind {kind!r}") from None


def kinds() -> list[str]:
    return list(_TRANSPORTS)
