"""Alert messages in the tenant's language (English or Simplified Chinese).

An AlertEvent stores language-neutral facts; the text is rendered when a delivery is sent,
under translation.override(tenant.language) (msgctxt "alert"), so a tenant who switches language gets the next
message in the new one. Strings are in locale/zh_Hans/LC_MESSAGES/django.po.
"""

from decimal import Decimal
from typing import Any

from django.conf import settings
from django.urls import reverse
from django.utils import translation
from django.utils.translation import pgettext, pgettext_lazy

from accounts.models import Tenant
from alerts.models import AlertDelivery, AlertEvent
from billing.money import round_to_currency
from infra.notifications import Message

# Every string has this msgctxt, so the alert texts never collide with the portal UI's own.
CONTEXT = "alert"
WINDOWS = {
    "day": pgettext_lazy(CONTEXT, "day"),
    "month": pgettext_lazy(CONTEXT, "month"),
    "lifetime": pgettext_lazy(CONTEXT, "lifetime"),
}
METRICS = {"tokens": pgettext_lazy(CONTEXT, "tokens"), "money": pgettext_lazy(CONTEXT, "spend")}


def alerts_page_link(tenant: Tenant) -> str:
    """The tenant's alerts page, where the rule and its recent alerts are (by URL name: the
    portal's views sit above this layer)."""
    base: str = settings.PORTAL_BASE_URL
    return base.rstrip("/") + reverse("alerts", kwargs={"slug": tenant.slug})


def _amount(value: str | Decimal | None, metric: str, currency: str) -> str:
    if value in (None, ""):
        return "-"
    number = Decimal(str(value))
    if metric == "tokens":
        return f"{int(number):,}"
    return f"{round_to_currency(number, currency):,} {currency}"


def _period(period: str) -> str:
    if period == "lifetime":
        return str(pgettext(CONTEXT, "lifetime"))
    if period.startswith("balance:"):
        return str(pgettext(CONTEXT, "since the last top-up"))
    return period


def _facts(event: AlertEvent, tenant: Tenant) -> tuple[str, list[tuple[str, str]]]:
    """The subject and (label, value) lines of an alert."""
    d: dict[str, Any] = event.details
    currency = d.get("currency") or tenant.currency
    metric = d.get("metric", "money")
    usage = _amount(event.usage, metric, currency)
    limit = _amount(event.limit, metric, currency)
    percent = f"{d['percent']} %" if d.get("percent") else "-"
    scope = (
        pgettext(CONTEXT, "key %(name)s") % {"name": d["key_name"]}
        if d.get("scope") == "key"
        else pgettext(CONTEXT, "all keys")
    )
    kind = d.get("kind")
    lines = [(pgettext(CONTEXT, "Tenant"), f"{tenant.name} ({tenant.slug})")]
    if kind in ("quota", "spend"):
        what = pgettext(CONTEXT, "Quota") if kind == "quota" else pgettext(CONTEXT, "Spend budget")
        subject = pgettext(CONTEXT, "%(what)s alert: %(percent)s of the limit used") % {
            "what": what,
            "percent": percent,
        }
        lines += [
            (what, f"{METRICS.get(metric, metric)} / {WINDOWS.get(d.get('window', ''), '')} · {scope}"),
            (pgettext(CONTEXT, "Limit"), limit),
            (pgettext(CONTEXT, "Usage"), usage),
            (pgettext(CONTEXT, "Percentage"), percent),
        ]
    elif kind == "balance":
        subject = pgettext(CONTEXT, "Low balance: %(balance)s") % {"balance": usage}
        lines += [(pgettext(CONTEXT, "Balance"), usage), (pgettext(CONTEXT, "Alert level"), limit)]
    elif kind == "forecast":
        days = d.get("days_left", "?")
        if d.get("target") == "quota":
            subject = pgettext(CONTEXT, "Forecast: at the last 7 days' pace this quota runs out in %(days)s days") % {
                "days": days
            }
            lines += [(pgettext(CONTEXT, "Limit"), limit), (pgettext(CONTEXT, "Usage"), usage)]
        else:
            subject = pgettext(CONTEXT, "Forecast: at the last 7 days' pace the balance runs out in %(days)s days") % {
                "days": days
            }
            lines += [(pgettext(CONTEXT, "Balance"), usage)]
        lines += [(pgettext(CONTEXT, "Average per day"), _amount(d.get("pace"), metric, currency))]
    elif kind == "spike":
        subject = pgettext(CONTEXT, "Spend spike: today is %(ratio)s x the 7-day daily average") % {
            "ratio": d.get("ratio", "?")
        }
        lines += [
            (pgettext(CONTEXT, "Today's spend"), usage),
            (pgettext(CONTEXT, "7-day daily average"), limit),
            (pgettext(CONTEXT, "Alert factor"), f"{d.get('factor', '')} x · {scope}"),
        ]
    else:
        subject = pgettext(CONTEXT, "Usage alert")
    lines.append((pgettext(CONTEXT, "Period"), _period(event.period)))
    return subject, lines


def render_delivery(delivery: AlertDelivery) -> Message:
    tenant = delivery.tenant
    with translation.override(tenant.language):
        if delivery.event is None:
            subject = pgettext(CONTEXT, "Test notification")
            lines = [
                (pgettext(CONTEXT, "Tenant"), f"{tenant.name} ({tenant.slug})"),
                (pgettext(CONTEXT, "Channel"), delivery.channel.name),
            ]
            intro = pgettext(CONTEXT, "This is a test message from the token billing portal. This channel works.")
            data: dict[str, Any] = {"type": "test"}
        else:
            event = delivery.event
            subject, lines = _facts(event, tenant)
            intro = ""
            data = {
                "type": "alert",
                "alert_id": event.pk,
                "rule_id": event.rule_id,
                "kind": event.details.get("kind"),
                "threshold": event.threshold,
                "period": event.period,
                "usage": str(event.usage) if event.usage is not None else None,
                "limit": str(event.limit) if event.limit is not None else None,
                "percent": event.details.get("percent") or None,
                "fired_at": event.fired_at.isoformat(),
            }
        subject = f"[{tenant.name}] {subject}"
        link_label = pgettext(CONTEXT, "Open the portal")
        link = alerts_page_link(tenant)
        text_lines = [intro] if intro else []
        text_lines += [f"{label}: {value}" for label, value in lines]
        text = "\n".join([*text_lines, "", f"{link_label}: {link}"])
        markdown = "\n".join(
            [
                f"### {subject}",
                "",
                *([intro, ""] if intro else []),
                *(f"- **{label}**: {value}" for label, value in lines),
                "",
                f"[{link_label}]({link})",
            ]
        )
    data |= {"tenant": tenant.slug, "tenant_name": tenant.name, "portal_url": link, "delivery_id": delivery.pk}
    return Message(subject=subject, text=text, markdown=markdown, data=data, idempotency_key=f"delivery-{delivery.pk}")
