"""An invoice's lines, computed from rated usage. Reads only.

Usage comes from metering per (month, model, price version, stored tier choice); every money
rule (token kinds, the tier's rates, quantity x rate) is billing.rating's, and each line is
rounded once to the currency's minor unit (billing.money.round_to_currency).
"""

import dataclasses
import datetime as dt
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from accounts.models import Tenant
from billing import rating
from billing.models import Price, ServiceTier
from billing.money import round_to_currency
from billing.selectors import cost_terms
from invoicing import selectors
from invoicing.models import Invoice, InvoiceLine
from invoicing.services.periods import label_of
from metering.selectors import RatedUsage, rated_usage_by_price

_KIND_LABELS: dict[str, str] = {
    InvoiceLine.TokenKind.INPUT: "input tokens",
    InvoiceLine.TokenKind.CACHED_INPUT: "cached input tokens",
    InvoiceLine.TokenKind.CACHE_WRITE: "cache write tokens",
    InvoiceLine.TokenKind.CACHE_WRITE_1H: "1-hour cache write tokens",
    InvoiceLine.TokenKind.OUTPUT: "output tokens",
    InvoiceLine.TokenKind.REASONING: "reasoning tokens",
}
_DEFAULT_TIER = ServiceTier.DEFAULT


@dataclass(frozen=True)
class LineData:
    kind: str
    usage_period: str
    model: str
    token_kind: str
    price_id: int | None
    price_effective_from: dt.datetime | None
    long_context: bool
    service_tier: str
    description: str
    requests: int
    quantity: int
    unit_price_per_mtok: Decimal
    amount_unrounded: Decimal
    amount: Decimal
    # Resale: the tokens at the price's cost price (null: the price has none), exact and rounded.
    cost_basis_unrounded: Decimal | None = None
    cost_basis: Decimal | None = None

    def key(self) -> tuple[Any, ...]:
        return (
            self.kind, self.usage_period, self.model, self.token_kind, self.price_id, self.long_context,
            self.service_tier, self.description, self.requests, self.quantity, self.unit_price_per_mtok.normalize(),
            self.amount_unrounded.normalize(), self.amount.normalize(),
            self.cost_basis_unrounded.normalize() if self.cost_basis_unrounded is not None else None,
        )  # fmt: skip


LINE_FIELDS = tuple(f.name for f in dataclasses.fields(LineData))


@dataclass
class Computed:
    lines: list[LineData] = field(default_factory=list)
    unpriced_requests: int = 0

    @property
    def unrounded_total(self) -> Decimal:
        return sum((line.amount_unrounded for line in self.lines), Decimal(0))

    @property
    def subtotal(self) -> Decimal:
        return sum((line.amount for line in self.lines), Decimal(0))

    @property
    def cost_basis(self) -> Decimal:
        """Our cost of the lines: the sum of their rounded cost (0 for a line without one)."""
        return sum((line.cost_basis for line in self.lines if line.cost_basis is not None), Decimal(0))


def _line_order(row: RatedUsage, price: Price) -> tuple[Any, ...]:
    """Lines by month, model, price version, then default tier first, then short context first."""
    tier = row.service_tier
    return (row.month, row.model, price.effective_from, price.pk, tier != _DEFAULT_TIER, tier, row.long_context)


def _lines_for(
    rows: list[RatedUsage], *, kind: str, currency: str, prices: dict[int, Price], label: str, computed: Computed
) -> None:
    versions_per_model: dict[str, set[int]] = {}
    for row in rows:
        if row.price_id is not None:
            versions_per_model.setdefault(row.model, set()).add(row.price_id)
    ordered = sorted(
        ((row, prices[row.price_id]) for row in rows if row.price_id is not None),
        key=lambda pair: _line_order(*pair),
    )
    for row in rows:
        if row.price_id is None:
            computed.unpriced_requests += row.requests
    for row, price in ordered:
        rates = rating.tier_rates(rating.terms_from_price(price), long_context=row.long_context)
        # A derived price's cost price has the same tier threshold (copied), so the stored tier
        # choice is the cost side's too: the lines' cost sums to the events' cost_basis exactly.
        cost_rates = (
            rating.tier_rates(
                cost_terms(price.cost_price, exchange_rate=price.exchange_rate), long_context=row.long_context
            )
            if price.cost_price is not None
            else None
        )
        usage_period = label_of(row.month)
        quantities = rating.quantities(
            input_tokens=row.input_tokens,
            output_tokens=row.output_tokens,
            cached_input_tokens=row.cached_input_tokens,
            cache_write_tokens=row.cache_write_tokens,
            cache_write_1h_tokens=row.cache_write_1h_tokens,
            reasoning_tokens=row.reasoning_tokens,
        )
        for token_kind, quantity in quantities.items():
            if quantity == 0:
                continue
            per_mtok = rating.kind_rate(rates, token_kind)
            exact = rating.line_amount(quantity, per_mtok)
            cost_exact = (
                rating.line_amount(quantity, rating.kind_rate(cost_rates, token_kind))
                if cost_rates is not None
                else None
            )
            text = f"{row.model}: {_KIND_LABELS[token_kind]}"
            if row.service_tier != _DEFAULT_TIER:
                text += f" ({row.service_tier} tier)"
            if row.long_context:
                text += " (long context)"
            if len(versions_per_model[row.model]) > 1:
                text += f", price from {price.effective_from:%Y-%m-%d}"
            if kind == InvoiceLine.Kind.ADJUSTMENT:
                text = f"{label.format(period=usage_period)}: {text}"
            computed.lines.append(
                LineData(
                    kind=kind,
                    usage_period=usage_period,
                    model=row.model,
                    token_kind=token_kind,
                    price_id=row.price_id,
                    price_effective_from=price.effective_from,
                    long_context=row.long_context,
                    service_tier=row.service_tier,
                    description=text[:300],
                    requests=row.requests,
                    quantity=quantity,
                    unit_price_per_mtok=per_mtok,
                    amount_unrounded=exact,
                    amount=round_to_currency(exact, currency),
                    cost_basis_unrounded=cost_exact,
                    cost_basis=round_to_currency(cost_exact, currency) if cost_exact is not None else None,
                )
            )


LATE_LABEL = "usage for {period} received after close"
UNBILLED_LABEL = "usage for {period} not billed before"


def invoice_compute(*, tenant: Tenant, invoice: Invoice, cutoff: dt.datetime) -> Computed:
    """The lines `invoice` has when built with usage received before `cutoff`. Reads only."""
    currency = invoice.currency
    tz_name = invoice.timezone
    usage = rated_usage_by_price(
        tenant_id=tenant.pk,
        tz_name=tz_name,
        occurred_from=invoice.period_start,
        occurred_before=invoice.period_end,
        received_before=cutoff,
    )
    previous = selectors.invoice_previous_issued(tenant_id=tenant.pk, before_period=invoice.period)
    late: list[RatedUsage] = []
    unbilled_from = None
    if previous is not None:
        # Months up to the previous issued invoice: what arrived after its cutoff.
        late = rated_usage_by_price(
            tenant_id=tenant.pk,
            tz_name=tz_name,
            occurred_before=previous.period_end,
            received_from=previous.usage_cutoff,
            received_before=cutoff,
        )
        unbilled_from = previous.period_end
    # Months between that invoice and this one with no invoice of their own (drafts keep theirs).
    drafts = tuple(
        (draft.period_start, draft.period_end)
        for draft in selectors.invoice_drafts_between(
            tenant_id=tenant.pk, after=unbilled_from, before=invoice.period_start
        )
    )
    unbilled = rated_usage_by_price(
        tenant_id=tenant.pk,
        tz_name=tz_name,
        occurred_from=unbilled_from,
        occurred_before=invoice.period_start,
        received_before=cutoff,
        exclude_occurred=drafts,
    )
    price_ids = {row.price_id for row in (*usage, *late, *unbilled) if row.price_id is not None}
    prices = Price.objects.select_related("cost_price").in_bulk(price_ids)
    computed = Computed()
    _lines_for(usage, kind=InvoiceLine.Kind.USAGE, currency=currency, prices=prices, label="", computed=computed)
    _lines_for(
        late, kind=InvoiceLine.Kind.ADJUSTMENT, currency=currency, prices=prices, label=LATE_LABEL, computed=computed
    )
    _lines_for(
        unbilled,
        kind=InvoiceLine.Kind.ADJUSTMENT,
        currency=currency,
        prices=prices,
        label=UNBILLED_LABEL,
        computed=computed,
    )
    return computed
