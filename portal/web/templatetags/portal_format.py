"""Number and money formatting for the portal's pages (Decimal in, text out; never float)."""

from decimal import Decimal, InvalidOperation

from django import template

from billing.money import round_to_currency

register = template.Library()
DASH = "\N{EN DASH}"  # shown for a missing figure


def _decimal(value) -> Decimal | None:
    if value is None or value == "":
        return None
    try:
        return value if isinstance(value, Decimal) else Decimal(str(value))
    except (InvalidOperation, ValueError):
        return None


@register.filter
def money(value, currency: str = "USD") -> str:
    """1234.5 USD -> '1,234.50' (the currency's minor unit, banker's rounding)."""
    amount = _decimal(value)
    if amount is None:
        return DASH
    return f"{round_to_currency(amount, currency or 'USD'):,}"


@register.filter
def precise(value, places: int = 6) -> str:
    """Small unrounded costs (per event): 0.001234567 -> '0.001235'."""
    amount = _decimal(value)
    if amount is None:
        return DASH
    return f"{amount.quantize(Decimal(1).scaleb(-int(places))):,}"


@register.filter
def num(value) -> str:
    """12345678 -> '12,345,678'."""
    if value is None or value == "":
        return DASH
    try:
        return f"{int(value):,}"
    except (TypeError, ValueError):
        return str(value)


@register.filter
def compact(value) -> str:
    """12345678 -> '12.3M', 4321 -> '4.3K' (the exact figure goes in a title attribute)."""
    try:
        number = int(value)
    except (TypeError, ValueError):
        return DASH
    for divisor, suffix in ((1_000_000_000, "B"), (1_000_000, "M"), (1_000, "K")):
        if abs(number) >= divisor:
            return f"{number / divisor:.1f}{suffix}"
    return str(number)


@register.filter
def percent(value) -> str:
    amount = _decimal(value)
    if amount is None:
        return DASH
    return f"{amount:.0f}%"
