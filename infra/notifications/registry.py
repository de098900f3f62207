"""Channel kind -> transport. Adding a channel is one class and one line here."""

from infra.notifications.base import Transport
from infra.notifications.dingtalk import DingTalkTransport
from infra.notifications.email import EmailTransport
from infra.notifications.feishu import FeishuTransport
from infra.notifications.slack import SlackTransport
from infra.notifications.webhook import WebhookTransport
from infra.notifications.wecom import WeComTransport

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
