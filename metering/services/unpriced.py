"""Unpriced usage is never silent: the periodic check logs it and tells staff once a day per model.

An event whose model has no price at its time is stored unpriced (docs/billing-rules.md
section 4) and charged only when `rerate_unpriced` runs after the price is added. Operators
see the counts on the Tenants page and in the `tokenbill_unpriced_events_pending` gauge; this check
(beat, UNPRICED_CHECK_SECONDS) logs a WARNING with the counts on every run and emails staff
(settings.ADMINS and active staff users with an address) about each model at most once per
UTC day: it claims a (model, day) row with INSERT ... ON CONFLICT DO NOTHING RETURNING and
mails only the models it claimed, in one message per run. If the mail fails, the claims roll
back with it and the next run tries again.
"""

import datetime as dt
import logging
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.mail import send_mail
from django.db import connection, transaction
from django.utils import timezone

from metering import selectors
from metering.models import UnpricedUsageNotice

logger = logging.getLogger(__name__)

MAIL_MODELS_LISTED = 50  # models named in one email; the rest are counted
CLAIM_CHUNK = 1000  # models per INSERT (4 parameters each, far under the 65,535 limit)
FIX = "add the price (import_prices, or the Price plans page), then run `manage.py rerate_unpriced`"


@dataclass
class UnpricedCheck:
    by_model: dict[str, int] = field(default_factory=dict)  # still-unpriced events per model
    notified: list[str] = field(default_factory=list)  # models staff were emailed about in this run
    recipients: list[str] = field(default_factory=list)

    @property
    def events(self) -> int:
        return sum(self.by_model.values())


def staff_recipients() -> list[str]:
    """settings.ADMINS' addresses and every active staff user's, each once."""
    addresses = [address for _name, address in settings.ADMINS]
    users = get_user_model().objects.filter(is_active=True, is_staff=True).exclude(email="")
    addresses += list(users.order_by("email").values_list("email", flat=True))
    return list(dict.fromkeys(address.strip() for address in addresses if address and address.strip()))


def _claim(models: dict[str, int], day: dt.date) -> list[str]:
    """The models of `models` not yet notified on `day`, now claimed."""
    table = UnpricedUsageNotice._meta.db_table
    now = timezone.now()
    items = sorted(models.items())
    claimed: list[str] = []
    for start in range(0, len(items), CLAIM_CHUNK):
        chunk = items[start : start + CLAIM_CHUNK]
        params: list[Any] = []
        for model, count in chunk:
            params += [model, day, count, now]
        with connection.cursor() as cursor:
            cursor.execute(
                f"INSERT INTO {table} (model, day, events, created_at) "  # noqa: S608 (names from the model)
                f"VALUES {', '.join(['(%s, %s, %s, %s)'] * len(chunk))} "
                "ON CONFLICT (model, day) DO NOTHING RETURNING model",
                params,
            )
            claimed += [row[0] for row in cursor.fetchall()]
    return sorted(claimed)


def _message(claimed: list[str], by_model: dict[str, int]) -> tuple[str, str]:
    total = sum(by_model[model] for model in claimed)
    subject = f"Unpriced usage: {total} event(s) of {len(claimed)} model(s) not charged"
    lines = [
        "Usage of these models was stored without a price and has not been charged:",
        "",
        *(f"  {model}: {by_model[model]} event(s)" for model in claimed[:MAIL_MODELS_LISTED]),
    ]
    if len(claimed) > MAIL_MODELS_LISTED:
        lines.append(f"  ... and {len(claimed) - MAIL_MODELS_LISTED} more model(s) (see the operators' Tenants page)")
    lines += ["", f"To charge it: {FIX}.", "You are told about each model at most once a day while it stays unpriced."]
    return subject, "\n".join(lines)


def unpriced_usage_check(*, now: dt.datetime | None = None) -> UnpricedCheck:
    """Log the still-unpriced usage and email staff about models not reported today."""
    now = now or timezone.now()
    result = UnpricedCheck(by_model=selectors.unpriced_by_model())
    if not result.by_model:
        return result
    worst = sorted(result.by_model.items(), key=lambda item: (-item[1], item[0]))[:10]
    logger.warning(
        "unpriced usage: %d event(s) of %d model(s) not charged (%s); %s",
        result.events,
        len(result.by_model),
        ", ".join(f"{model}={count}" for model, count in worst),
        FIX,
    )
    result.recipients = staff_recipients()
    if not result.recipients:
        logger.warning("unpriced usage: no staff email address to notify (settings.ADMINS or a staff user's email)")
        return result
    with transaction.atomic():
        claimed = _claim(result.by_model, now.astimezone(dt.UTC).date())
        if claimed:
            subject, body = _message(claimed, result.by_model)
            # Inside the transaction: a failed send releases the claims for the next run.
            send_mail(subject, body, settings.DEFAULT_FROM_EMAIL, result.recipients)
    result.notified = claimed
    return result
