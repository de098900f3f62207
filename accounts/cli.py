"""Small helpers shared by management commands: argument parsing and error wording."""

import zoneinfo
from collections.abc import Iterator
from contextlib import contextmanager

from django.core.exceptions import ValidationError
from django.core.management.base import CommandError, CommandParser

from accounts import key_controls
from accounts.models import ApiKey, Tenant


def tenant_or_error(slug: str) -> Tenant:
    tenant = Tenant.objects.filter(slug=slug).first()
    if tenant is None:
        raise CommandError(f"No tenant with slug {slug!r}. List them in the admin or create one with create_tenant.")
    return tenant


def comma_list(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


# Options of create_api_key and set_limits for a key's controls and a tenant's limits: dest ->
# (option, what it takes). Values stay text here; accounts.key_controls judges them.
NONE = "none"
LIMIT_OPTIONS = {
    "rpm_limit": ("--rpm", "Requests per minute", "no limit"),
    "tpm_limit": ("--tpm", "Tokens per minute", "no limit"),
    "max_parallel_requests": ("--max-parallel", "Requests in flight at once", "no limit"),
}
KEY_OPTIONS = {
    "expires_at": (
        "--expires-at",
        "When the key stops working: ISO 8601 with a zone, e.g. 2027-01-31T18:00:00+08:00",
        "never",
    ),
    "allowed_models": (
        "--allowed-models",
        "Comma-separated model names and globs, e.g. gpt-4o,gpt-4o-mini*",
        "every model",
    ),
    "allowed_networks": (
        "--allowed-networks",
        "Comma-separated networks or addresses the key may be used from, e.g. 10.0.0.0/8,192.0.2.7",
        "anywhere",
    ),
}


def add_control_arguments(parser: CommandParser, *, fields: dict, clearable: bool) -> None:
    for dest, (option, meaning, cleared) in fields.items():
        clear = f"; '{NONE}': {cleared}" if clearable else ""
        parser.add_argument(option, dest=dest, metavar="VALUE", help=f"{meaning}{clear}.")


def control_values(options: dict, fields: dict) -> dict:
    """The control options given on the command line, parsed as the services take them:
    'none' is None (or [] for the lists); options not given are left out."""
    values: dict = {}
    for dest in fields:
        raw = options.get(dest)
        if raw is None:
            continue
        cleared = raw.strip().lower() == NONE
        if dest in ("allowed_models", "allowed_networks"):
            values[dest] = [] if cleared else comma_list(raw)
        elif dest == "expires_at":
            values[dest] = None if cleared else key_controls.parse_expires_at(raw)
        else:
            values[dest] = None if cleared else raw
    return values


def controls_summary(row: ApiKey | Tenant) -> list[str]:
    """A key's controls or a tenant's limits, one `option: value` line each (expiry in the
    tenant's zone), as set_limits and create_api_key print them."""
    lines = [
        f"  {option[2:]}: {NONE if getattr(row, dest) is None else getattr(row, dest)}"
        for dest, (option, *_) in LIMIT_OPTIONS.items()
    ]
    if isinstance(row, ApiKey):
        zone = zoneinfo.ZoneInfo(row.tenant.timezone)
        expires = row.expires_at.astimezone(zone).isoformat() if row.expires_at else NONE
        lines += [
            f"  expires-at: {expires}",
            f"  allowed-models: {','.join(row.allowed_models) or NONE + ' (every model)'}",
            f"  allowed-networks: {','.join(row.allowed_networks) or NONE + ' (anywhere)'}",
        ]
    return lines


@contextmanager
def validation_as_command_error(*, name_fields: bool = True) -> Iterator[None]:
    """Turn a model ValidationError into a one-line CommandError (non-zero exit, no traceback).
    name_fields=False: the messages name their field themselves (key_controls' do)."""
    try:
        yield
    except ValidationError as exc:
        if hasattr(exc, "message_dict") and name_fields:
            text = "; ".join(f"{field}: {' '.join(msgs)}" for field, msgs in exc.message_dict.items())
        else:
            text = " ".join(exc.messages)
        raise CommandError(text) from None
