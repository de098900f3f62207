"""Email through Django's mail framework (SMTP in production, settings.EMAIL_*)."""

import smtplib
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.mail import EmailMultiAlternatives, get_connection
from django.core.validators import validate_email

from infra.notifications.base import ConfigError, Message, SendResult, Transport, TransportError

MAX_RECIPIENTS = 20


class EmailTransport(Transport):
    kind = "email"
    label = "Email"

    def validate(self, config: dict[str, Any]) -> dict[str, Any]:
        recipients = config.get("recipients")
        if isinstance(recipients, str):
            recipients = [part.strip() for part in recipients.replace(";", ",").split(",") if part.strip()]
        if not isinstance(recipients, list) or not recipients:
            raise ConfigError("recipients: give at least one email address.")
        if len(recipients) > MAX_RECIPIENTS:
            raise ConfigError(f"recipients: at most {MAX_RECIPIENTS} addresses.")
        for address in recipients:
            try:
                validate_email(address)
            except ValidationError:
                raise ConfigError(f"recipients: {address!r} is not an email address.") from None
        return {"recipients": recipients}

    def send(self, config: dict[str, Any], message: Message) -> SendResult:
        email = EmailMultiAlternatives(
            subject=message.subject,
            body=message.text,
            from_email=settings.DEFAULT_FROM_EMAIL,
            to=config["recipients"],
            headers={"X-Tokenbill-Delivery": message.idempotency_key} if message.idempotency_key else None,
            connection=get_connection(fail_silently=False),
        )
        try:
            email.send()
        except smtplib.SMTPRecipientsRefused as exc:
            raise TransportError(f"recipients refused: {exc.recipients}", permanent=True) from exc
        except smtplib.SMTPResponseException as exc:
            # 5xx: the server will not take it (auth, sender, policy); 4xx: try again later.
            detail = exc.smtp_error.decode(errors="replace") if isinstance(exc.smtp_error, bytes) else exc.smtp_error
            raise TransportError(f"SMTP {exc.smtp_code}: {detail}", permanent=exc.smtp_code >= 500) from exc
        except (smtplib.SMTPException, OSError) as exc:
            raise TransportError(f"SMTP unavailable: {exc}", permanent=False) from exc
        return SendResult(detail=f"sent to {len(config['recipients'])} recipient(s)")
