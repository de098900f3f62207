"""Small helpers shared by management commands: argument parsing and error wording."""

from collections.abc import Iterator
from contextlib import contextmanager

from django.core.exceptions import ValidationError
from django.core.management.base import CommandError

from portal.accounts.models import Tenant


def tenant_or_error(slug: str) -> Tenant:
    tenant = Tenant.objects.filter(slug=slug).first()
    if tenant is None:
        raise CommandError(f"No tenant with slug {slug!r}. List them in the admin or create one with create_tenant.")
    return tenant


def comma_list(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


@contextmanager
def validation_as_command_error() -> Iterator[None]:
    """Turn a model ValidationError into a one-line CommandError (non-zero exit, no traceback)."""
    try:
        yield
    except ValidationError as exc:
        if hasattr(exc, "message_dict"):
            text = "; ".join(f"{field}: {' '.join(msgs)}" for field, msgs in exc.message_dict.items())
        else:
            text = " ".join(exc.messages)
        raise CommandError(text) from None
