"""Money arithmetic: currency exponents, the one rounding mode, and ledger precision.

Costs on usage events are kept unrounded (18 decimal places). They are rounded exactly once:
- per invoice line, to the currency's minor unit (ISO 4217 exponent), and
- when charged to the prepaid wallet, to the ledger's micro-unit (6 decimal places), so that
  PostgreSQL and the Redis hot path can count the same integers.
Both use ROUND_HALF_EVEN (banker's rounding), which has no bias across many lines.

One function per precision, and every rounding of money goes through it:
- quantize_cost: event costs and unrounded invoice line amounts (18 places, exact),
- round_to_ledger: wallet charges and ledger amounts (micro-units, 6 places),
- round_to_currency: invoice lines, credits and credit notes (the currency's minor unit),
- rate_product: a derived per-1M rate (resale: cost rate x exchange rate x markup, 12 places).
"""

import decimal
from decimal import ROUND_HALF_EVEN, Decimal
from typing import TypedDict

ROUNDING = ROUND_HALF_EVEN


class DecimalColumn(TypedDict):
    """A DecimalField's precision, declared once per kind of amount and unpacked into fields."""

    max_digits: int
    decimal_places: int


# ISO 4217 minor-unit exponents that differ from the common 2; anything else uses 2.
_EXPONENTS = {
    "BIF": 0, "CLP": 0, "DJF": 0, "GNF": 0, "ISK": 0, "JPY": 0, "KMF": 0, "KRW": 0,
    "PYG": 0, "RWF": 0, "UGX": 0, "UYI": 0, "VND": 0, "VUV": 0, "XAF": 0, "XOF": 0, "XPF": 0,
    "BHD": 3, "IQD": 3, "JOD": 3, "KWD": 3, "LYD": 3, "OMR": 3, "TND": 3,
}  # fmt: skip

# Unrounded event costs: tokens x (price per 1M with 12 places) / 10^6 -> 18 places, exact.
COST_PLACES = 18
COST_QUANTUM = Decimal(1).scaleb(-COST_PLACES)
# Prepaid ledger amounts and the Redis counters are integers of this unit.
LEDGER_PLACES = 6
LEDGER_QUANTUM = Decimal(1).scaleb(-LEDGER_PLACES)
MICROS = 10**LEDGER_PLACES
# Enough digits for tokens (<= 1e12) x a rate (<= 1e12, 12 places) at 18 places.
_COST_CONTEXT = decimal.Context(prec=60, rounding=ROUNDING, traps=[decimal.Overflow, decimal.InvalidOperation])


# Prices: currency units per 1M tokens with 12 places (billing.models.PRICE_FIELD).
RATE_PLACES = 12
RATE_QUANTUM = Decimal(1).scaleb(-RATE_PLACES)


def rate_product(rate: Decimal, *factors: Decimal) -> Decimal:
    """A per-1M rate times factors (an exchange rate, a markup), computed exactly and rounded
    once to the 12 places prices keep, ROUND_HALF_EVEN. Resale's one rounding of a rate:
    2.5 x 7.3 x 1.3 = 23.725 exactly; 0.000000000001 x 0.5 = 5e-13 -> 0 (a tie, to even);
    0.000000000003 x 0.5 = 1.5e-12 -> 0.000000000002."""
    product = rate
    for factor in factors:
        product = _COST_CONTEXT.multiply(product, factor)
    return product.quantize(RATE_QUANTUM, context=_COST_CONTEXT)


def currency_exponent(currency: str) -> int:
    return _EXPONENTS.get(currency.upper(), 2)


def round_to_currency(amount: Decimal, currency: str) -> Decimal:
    """Round once to the currency's minor unit (2 for USD and CNY, 0 for JPY, 3 for KWD)."""
    return amount.quantize(Decimal(1).scaleb(-currency_exponent(currency)), rounding=ROUNDING)


def quantize_cost(amount: Decimal) -> Decimal:
    """An exact cost at the 18 places of event costs (rating and invoice lines, before rounding)."""
    return amount.quantize(COST_QUANTUM, context=_COST_CONTEXT)


def round_to_ledger(amount: Decimal) -> Decimal:
    return amount.quantize(LEDGER_QUANTUM, rounding=ROUNDING)


def to_micros(amount: Decimal) -> int:
    """A ledger amount as an integer count of micro-units (exact after round_to_ledger)."""
    return int(round_to_ledger(amount).scaleb(LEDGER_PLACES))


def from_micros(micros: int) -> Decimal:
    return round_to_ledger(Decimal(micros).scaleb(-LEDGER_PLACES))


def format_ledger_amount(amount: Decimal, currency: str) -> str:
    """A ledger amount for display and JSON: the currency's places, more only when they carry value.

    12.340000 USD -> "12.34"; 0.012300 USD -> "0.0123"; 5 JPY -> "5". Nothing is rounded away.
    """
    exponent = amount.normalize().as_tuple().exponent
    places = max(currency_exponent(currency), -exponent if isinstance(exponent, int) else 0)
    return f"{amount:.{places}f}"
