"""Notification channels (the portal's forms call these): create, update, test, delete."""

import functools
from typing import Any

from django.contrib.auth.base_user import AbstractBaseUser
from django.db import transaction

from accounts.models import Tenant
from accounts.services import audit_record
from alerts.models import AlertDelivery, NotificationChannel
from alerts.services.deliveries import _queue_delivery
from alerts.services.errors import AlertConfigError
from infra.notifications import ConfigError, get_transport


def notification_channel_create(
    *,
    tenant: Tenant,
    kind: str,
    name: str,
    config: dict[str, Any],
    enabled: bool = True,
    actor: AbstractBaseUser | None = None,
    actor_label: str = "",
) -> NotificationChannel:
    """A channel, its config checked by its transport; audited."""
    try:
        cleaned = get_transport(kind).validate(config)
    except (LookupError, ConfigError) as exc:
        raise AlertConfigError(str(exc)) from exc
    name = name.strip() or kind
    if NotificationChannel.objects.filter(tenant=tenant, name=name).exists():
        raise AlertConfigError(f"A channel named {name!r} already exists.")
    with transaction.atomic():
        channel = NotificationChannel.objects.create(
            tenant=tenant, kind=kind, name=name, config=cleaned, enabled=enabled
        )
        audit_record(
            action="notification_channel.create",
            target=channel,
            actor=actor,
            actor_label=actor_label,
            tenant=tenant,
            changes={"kind": channel.kind, "name": channel.name},
        )
    return channel


def notification_channel_update(
    *,
    channel: NotificationChannel,
    config: dict[str, Any] | None = None,
    enabled: bool | None = None,
    actor: AbstractBaseUser | None = None,
    actor_label: str = "",
) -> NotificationChannel:
    """Change a channel's config (checked by its transport) or switch it on or off; audited."""
    if config is not None:
        try:
            channel.config = get_transport(channel.kind).validate(config)
        except ConfigError as exc:
            raise AlertConfigError(str(exc)) from exc
    if enabled is not None:
        channel.enabled = enabled
    with transaction.atomic():
        channel.save(update_fields=["config", "enabled"])
        audit_record(
            action="notification_channel.update",
            target=channel,
            actor=actor,
            actor_label=actor_label,
            tenant=channel.tenant,
            changes={"enabled": channel.enabled},
        )
    return channel


def notification_channel_send_test(*, channel: NotificationChannel) -> tuple[AlertDelivery, bool]:
    """Queue a test message (the portal's "send test" button): (its delivery, whether queued now).

    The delivery row is written here; a worker sends it after commit (alert_delivery_send, with
    the retries and the outbound policy of any alert), never the web request. A test of this
    channel that is still waiting for its first try is returned instead of queuing another, so
    a button pressed over and over does not fill the workers' queue.
    """
    with transaction.atomic():
        NotificationChannel.objects.select_for_update().filter(pk=channel.pk).first()  # one request at a time
        waiting = AlertDelivery.objects.filter(
            channel=channel, event__isnull=True, status__in=[AlertDelivery.Status.PENDING, AlertDelivery.Status.SENDING]
        ).first()
        if waiting is not None:
            return waiting, False
        delivery = AlertDelivery.objects.create(tenant_id=channel.tenant_id, channel=channel)
        transaction.on_commit(functools.partial(_queue_delivery, delivery.pk))
    return delivery, True


def notification_channel_delete(
    *, channel: NotificationChannel, actor: AbstractBaseUser | None = None, actor_label: str = ""
) -> None:
    """Delete a channel and its delivery records, audited; rules keep their other channels."""
    with transaction.atomic():
        audit_record(
            action="notification_channel.delete",
            target=channel,
            actor=actor,
            actor_label=actor_label,
            tenant=channel.tenant,
            changes={"kind": channel.kind, "name": channel.name},
        )
        channel.delete()
