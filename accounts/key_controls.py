"""What a key's controls and a tenant's limits may be: the one validation of every value.

The services (accounts.services), the portal's forms, the commands and the admin (via the
models' `clean`) all call these functions, so a value is judged the same wherever it comes
from. Each `clean_*` returns the value as it is stored (an int or None, a de-duplicated list,
normalised networks, an aware datetime) or raises a ValidationError whose message names the
field and the value it refused; `clean_key_controls` and `clean_tenant_limits` check several
fields at once and raise one ValidationError keyed by field.

The limits are per minute and absent (None) means no limit; the database refuses 0 and below
(a key nobody may use is a revoked key). The upper bounds keep figures within what the rate
limiter counts exactly and what a person can mean.
"""

import datetime as dt
import ipaddress
import re
from collections.abc import Iterable

from django.core.exceptions import ValidationError
from django.utils.translation import gettext_lazy as _

RPM_MAX = 10**9
TPM_MAX = 10**12
PARALLEL_MAX = 10**9
LIMIT_MAX = {"rpm_limit": RPM_MAX, "tpm_limit": TPM_MAX, "max_parallel_requests": PARALLEL_MAX}
LIMIT_LABELS = {
    "rpm_limit": _("Requests per minute"),
    "tpm_limit": _("Tokens per minute"),
    "max_parallel_requests": _("Parallel requests"),
}
LIMIT_FIELDS = tuple(LIMIT_MAX)
KEY_CONTROL_FIELDS = ("expires_at", "allowed_models", "allowed_networks", *LIMIT_FIELDS)

LIST_MAX = 100  # entries in allowed_models, and in allowed_networks
MODEL_PATTERN_MAX = 200  # characters, as the model names events carry

_DIGITS = re.compile(r"[0-9]+")
_SHOWN_MAX = 60  # characters of a refused value quoted back


def _shown(value: object) -> str:
    """A refused value as a message quotes it: in quotes, cut short when long."""
    text = str(value)
    if len(text) > _SHOWN_MAX:
        text = text[: _SHOWN_MAX - 1] + "\N{HORIZONTAL ELLIPSIS}"
    return f"\N{LEFT DOUBLE QUOTATION MARK}{text}\N{RIGHT DOUBLE QUOTATION MARK}"


def clean_limit(field: str, value: object) -> int | None:
    """A limit as stored: a whole number from 1 to the field's maximum, or None (no limit) for
    None or empty text. Text must be plain digits: no sign, decimals, exponent or separators."""
    maximum = LIMIT_MAX[field]
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    number: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and _DIGITS.fullmatch(value.strip()) and len(value.strip()) <= len(str(maximum)):
        number = int(value.strip())
    if number is None or not 1 <= number <= maximum:
        raise ValidationError(
            _("%(field)s: %(value)s is not a whole number from 1 to %(max)s (leave it empty for no limit)."),
            code="invalid_limit",
            params={"field": LIMIT_LABELS[field], "value": _shown(value), "max": f"{maximum:,}"},
        )
    return number


def _entries(field_label, values: object) -> list:
    if isinstance(values, str) or not isinstance(values, Iterable):
        raise ValidationError(
            _("%(field)s: %(value)s is not a list."),
            code="not_a_list",
            params={"field": field_label, "value": _shown(values)},
        )
    return list(values)


def _deduplicated(field_label, cleaned: list[str]) -> list[str]:
    unique = list(dict.fromkeys(cleaned))  # order kept
    if len(unique) > LIST_MAX:
        raise ValidationError(
            _("%(field)s: %(count)s entries; at most %(max)s."),
            code="too_many",
            params={"field": field_label, "count": len(unique), "max": LIST_MAX},
        )
    return unique


def clean_models(values: Iterable[str]) -> list[str]:
    """Exact model names and globs (`*`, `?`, `[...]`): 1 to 200 printable characters without
    whitespace each, at most 100 once duplicates are dropped (the first of each kept in place).
    An empty list allows every model."""
    label = _("Allowed models")
    cleaned = []
    for entry in _entries(label, values):
        if (
            not isinstance(entry, str)
            or not 1 <= len(entry) <= MODEL_PATTERN_MAX
            or not entry.isprintable()
            or any(char.isspace() for char in entry)
        ):
            raise ValidationError(
                _(
                    "%(field)s: %(value)s is not a model name or pattern (1 to %(max)s printable characters, "
                    "no spaces; * ? [ ] are wildcards)."
                ),
                code="invalid_model",
                params={"field": label, "value": _shown(entry), "max": MODEL_PATTERN_MAX},
            )
        cleaned.append(entry)
    return _deduplicated(label, cleaned)


def clean_networks(values: Iterable[str]) -> list[str]:
    """IPv4 and IPv6 networks or single addresses the key may be used from, stored normalised
    (`10.1.2.3/8` -> `10.0.0.0/8`, `192.0.2.7` -> `192.0.2.7/32`), at most 100 once duplicates
    are dropped. A zone index (`fe80::1%eth0`) names no caller and is refused. An empty list
    allows every address."""
    label = _("Allowed networks")
    cleaned = []
    for entry in _entries(label, values):
        network = None
        if isinstance(entry, str) and "%" not in entry:
            try:
                network = ipaddress.ip_network(entry, strict=False)
            except ValueError:
                network = None
        if network is None:
            raise ValidationError(
                _("%(field)s: %(value)s is not an IPv4 or IPv6 network (e.g. 10.0.0.0/8) or address."),
                code="invalid_network",
                params={"field": label, "value": _shown(entry)},
            )
        cleaned.append(str(network))
    return _deduplicated(label, cleaned)


def clean_expires_at(
    value: dt.datetime | None, *, now: dt.datetime, current: dt.datetime | None = None
) -> dt.datetime | None:
    """The moment a key stops working, in UTC to the second, or None (never). A new expiry
    must be in the future; the key's `current` one may stay as it is even once past, so that
    changing another control of an expired key is not refused."""
    label = _("Expiry")
    if value is None:
        return None
    if not isinstance(value, dt.datetime) or value.tzinfo is None or value.utcoffset() is None:
        raise ValidationError(
            _("%(field)s: %(value)s has no time zone; give one, e.g. 2027-01-31T18:00:00+08:00."),
            code="naive_expiry",
            params={"field": label, "value": _shown(value)},
        )
    value = value.astimezone(dt.UTC).replace(microsecond=0)
    if current is not None and value == current.replace(microsecond=0):
        return value
    if value <= now:
        raise ValidationError(
            _("%(field)s: %(value)s is in the past; give a future time, or none for a key that does not expire."),
            code="past_expiry",
            params={"field": label, "value": _shown(value.isoformat())},
        )
    return value


def parse_expires_at(text: str) -> dt.datetime | None:
    """ISO 8601 text with a zone (`2027-01-31T18:00:00+08:00`, `...Z`) as an aware datetime;
    empty text is None. Whether it is in the future is clean_expires_at's question."""
    text = text.strip()
    if not text:
        return None
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ValidationError(
            _("%(field)s: %(value)s is not an ISO 8601 date and time, e.g. 2027-01-31T18:00:00+08:00."),
            code="invalid_expiry",
            params={"field": _("Expiry"), "value": _shown(text)},
        ) from None
    if value.tzinfo is None:
        raise ValidationError(
            _("%(field)s: %(value)s has no time zone; give one, e.g. 2027-01-31T18:00:00+08:00."),
            code="naive_expiry",
            params={"field": _("Expiry"), "value": _shown(text)},
        )
    try:  # an offset at the ends of the calendar (0001-01-01T00:00+01:00) has no UTC time
        return value.astimezone(dt.UTC)
    except OverflowError:
        raise ValidationError(
            _("%(field)s: %(value)s is out of range."),
            code="invalid_expiry",
            params={"field": _("Expiry"), "value": _shown(text)},
        ) from None


def _collect(checks: dict) -> dict:
    """Run each field's check; the values, or one ValidationError with every field's error."""
    values, errors = {}, {}
    for field, check in checks.items():
        try:
            values[field] = check()
        except ValidationError as error:
            errors[field] = error.error_list
    if errors:
        raise ValidationError(errors)
    return values


def clean_tenant_limits(*, rpm_limit: object, tpm_limit: object, max_parallel_requests: object) -> dict:
    """The tenant's limits as stored, by field name."""
    given = {"rpm_limit": rpm_limit, "tpm_limit": tpm_limit, "max_parallel_requests": max_parallel_requests}
    return _collect({field: (lambda field=field: clean_limit(field, given[field])) for field in LIMIT_FIELDS})


def clean_key_controls(
    *,
    expires_at: dt.datetime | None,
    allowed_models: Iterable[str],
    allowed_networks: Iterable[str],
    rpm_limit: object,
    tpm_limit: object,
    max_parallel_requests: object,
    now: dt.datetime,
    current_expires_at: dt.datetime | None = None,
) -> dict:
    """A key's controls as stored, by field name (KEY_CONTROL_FIELDS)."""
    limits = {"rpm_limit": rpm_limit, "tpm_limit": tpm_limit, "max_parallel_requests": max_parallel_requests}
    return _collect(
        {
            "expires_at": lambda: clean_expires_at(expires_at, now=now, current=current_expires_at),
            "allowed_models": lambda: clean_models(allowed_models),
            "allowed_networks": lambda: clean_networks(allowed_networks),
            **{field: (lambda field=field: clean_limit(field, limits[field])) for field in LIMIT_FIELDS},
        }
    )
