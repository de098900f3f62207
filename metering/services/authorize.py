"""Authorize: may this key spend now? The balance and hard-quota gate before the model runs.

The estimate is (estimated input tokens + max output tokens) at the model's price, rounded up
to the ledger's micro-unit. With `hold`, the estimate is reserved until the usage event with
the same request_id settles it (ingest) or the hold expires (`release_expired_holds`).

Steady state (Redis backend): the key lookup (authentication, one query) and one Lua script.
The model's price book is cached in-process per plan version (the key lookup reads the
version, so a new price applies at once; billing.selectors.price_book_for); the tenant's quota
list for AUTHORIZE_CACHE_SECONDS, so a new quota takes effect within that time. The money
itself is never cached here.

`authorize_request` is `authorize_prepare` (every check that needs no balance) then the
balance backend's decision. The relay prepares its calls one by one and holds them in groups
per tenant with `authorize_holds` (billing/services/hold_batch.py).
"""

import datetime as dt
import math
import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.utils import timezone

from accounts.models import ApiKey
from billing import selectors as billing_selectors
from billing.models import Quota, ServiceTier
from billing.money import MICROS, from_micros, to_micros
from billing.money import format_ledger_amount as format_amount
from billing.rating import limits_exceeded, rate
from billing.selectors import QuotaUsage, quota_cell_index, quota_usage_from_cell
from billing.services.balances import INSUFFICIENT_BALANCE, RATE_LIMITED, Admission, Decision, HoldInfo, QuotaCheck
from billing.services.balances.limits import headers_for, limits_for
from billing.services.holds import balance_authorize, balance_authorize_many
from infra.cache import BoundedCache
from metering import metrics


class AuthorizeRefused(Exception):
    """A 4xx answer with the API's error shape; `headers` go on the response (Retry-After)."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: dict[str, Any] | None = None,
        headers: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.details = details or {}
        self.headers = headers or {}


@dataclass(frozen=True)
class AuthorizeResult:
    tenant_slug: str
    api_key_id: int
    currency: str
    balance: Decimal  # after this request's hold, when one was placed
    estimate: Decimal
    estimated_tokens: int
    priced: bool
    quotas: list[QuotaUsage]
    hold: HoldInfo | None = None
    request_id: str | None = None
    headers: dict[str, str] = field(default_factory=dict)  # x-ratelimit-* of the limits that apply

    def as_dict(self) -> dict[str, Any]:
        data = {
            "allowed": True,
            "tenant": self.tenant_slug,
            "api_key_id": self.api_key_id,
            "balance": format_amount(self.balance, self.currency),
            "currency": self.currency,
            "estimated_cost": format_amount(self.estimate, self.currency),
            "estimated_tokens": self.estimated_tokens,
            "priced": self.priced,
            "quotas": [quota.as_dict() for quota in self.quotas],
        }
        if self.request_id is not None:
            data["request_id"] = self.request_id
        if self.hold is not None:
            data["hold_id"] = self.hold.id
            data["hold"] = {
                "id": self.hold.id,
                "amount": format_amount(from_micros(self.hold.amount_micros), self.currency),
                "expires_at": self.hold.expires_at,
                "created": self.hold.created,
            }
        return data


# --- In-process cache of quota lists, bounded and short-lived ----------------------------------


# Quota lists per tenant, AUTHORIZE_CACHE_SECONDS each, at most AUTHORIZE_CACHE_SIZE tenants.
_quota_lists: BoundedCache[list[Any]] = BoundedCache(
    "authorize_quota_lists",
    max_size=lambda: settings.AUTHORIZE_CACHE_SIZE,
    ttl=lambda: settings.AUTHORIZE_CACHE_SECONDS,
)


def authorize_caches_clear() -> None:
    _quota_lists.clear()


@dataclass(frozen=True, slots=True)
class _QuotaDef:
    id: int
    api_key_id: int | None
    metric: str
    window: str
    limit: Decimal
    enforcement: str


def _quotas(tenant_id: int) -> list[_QuotaDef]:
    def load() -> list[_QuotaDef]:
        return [
            _QuotaDef(q.pk, q.api_key_id, q.metric, q.window, q.limit, q.enforcement)
            for q in billing_selectors.tenant_quotas(tenant_id=tenant_id)
        ]

    if settings.AUTHORIZE_CACHE_SECONDS <= 0:
        return load()
    return _quota_lists.get_or_load(tenant_id, load)


# --- The service -------------------------------------------------------------------------------


def _ceil_micros(cost: Decimal) -> int:
    micros: int = math.ceil(cost * MICROS)
    return micros


@dataclass(frozen=True)
class PreparedAuthorization:
    """A request past every check that needs no balance (key, model, price, length limits):
    what the balance backend decides on, and what the answer reports."""

    admission: Admission
    quotas: list[_QuotaDef]
    tenant_slug: str
    priced: bool
    started: float  # perf_counter at the start, for the latency metric


def authorize_prepare(
    *,
    api_key: ApiKey,
    model: str,
    estimated_input_tokens: int,
    max_output_tokens: int,
    request_id: str | None = None,
    hold: bool = False,
    now: dt.datetime | None = None,
    service_tier: str = ServiceTier.DEFAULT,
    output_choices: int = 1,
) -> PreparedAuthorization:
    """The checks before the balance: refuses (AuthorizeRefused) a model the key may not use
    (403), an unpriced model (422) or a request above the model's length limits (400).

    `output_choices`: a request for n completions holds `max_output_tokens` for all of them,
    while the model's max_output_tokens limits each one."""
    started = time.perf_counter()
    now = now or timezone.now()
    tenant = api_key.tenant
    if hold and not request_id:
        raise AuthorizeRefused(
            400, "request_id_required", "A hold needs the request_id that the usage event will carry."
        )
    if not api_key.allows_model(model):
        metrics.AUTHORIZE.labels(outcome="model_not_allowed").inc()
        raise AuthorizeRefused(
            403,
            "model_not_allowed",
            f"This API key may not use model {model!r}.",
            {"model": model, "allowed_models": api_key.allowed_models},
        )
    book = billing_selectors.price_book_for_tenant(tenant=tenant, models={model})
    currency = book.currency if book is not None else tenant.currency
    terms = book.terms_for(model, now, service_tier) if book is not None else None
    if terms is None and not (book is not None and book.allow_unpriced):
        metrics.AUTHORIZE.labels(outcome="unpriced_model").inc()
        raise AuthorizeRefused(
            422,
            "model_not_priced",
            f"Model {model!r} has no price in this tenant's plan, and the plan does not admit unpriced models.",
            {"model": model, "plan": tenant.price_plan.slug if tenant.price_plan is not None else None},
        )
    estimate = 0
    if terms is not None:
        per_choice = -(-max_output_tokens // max(output_choices, 1))
        over = limits_exceeded(terms, input_tokens=estimated_input_tokens, output_tokens=per_choice)
        if over:
            metrics.AUTHORIZE.labels(outcome="context_length_exceeded").inc()
            limit_name, limit, requested = over[0]
            asked = "estimated_input_tokens" if limit_name == "max_input_tokens" else "max_output_tokens"
            raise AuthorizeRefused(
                400,
                "context_length_exceeded",
                f"Model {model!r} accepts at most {limit} {'input' if asked.startswith('estimated') else 'output'} "
                f"tokens ({limit_name}); this request asks for {requested} ({asked}).",
                {"model": model, "field": asked, "limit": limit_name, "limit_value": limit, "requested": requested},
            )
        estimate = _ceil_micros(rate(terms, input_tokens=estimated_input_tokens, output_tokens=max_output_tokens))

    quotas = [q for q in _quotas(tenant.pk) if q.api_key_id in (None, api_key.pk)]
    checks = tuple(
        QuotaCheck(
            quota_id=q.id,
            cell_index=quota_cell_index(tenant_scope=q.api_key_id is None, window=q.window),
            metric=q.metric,
            limit=int(q.limit) if q.metric == Quota.Metric.TOKENS else to_micros(q.limit),
            enforce=q.enforcement == Quota.Enforcement.HARD,
        )
        for q in quotas
    )
    admission = Admission(
        tenant_id=tenant.pk,
        api_key_id=api_key.pk,
        tz_name=tenant.timezone,
        currency=currency,
        model=model,
        estimate_micros=estimate,
        estimate_tokens=estimated_input_tokens + max_output_tokens,
        checks=checks,
        now=now,
        hold_ttl=dt.timedelta(seconds=settings.HOLD_TTL_SECONDS),
        request_id=request_id,
        limits=limits_for(
            key_limits=(api_key.rpm_limit, api_key.tpm_limit, api_key.max_parallel_requests),
            tenant_limits=(tenant.rpm_limit, tenant.tpm_limit, tenant.max_parallel_requests),
            tokens=estimated_input_tokens + max_output_tokens,
        ),
    )
    return PreparedAuthorization(admission, quotas, tenant.slug, terms is not None, started)


def _conclude(prepared: PreparedAuthorization, decision: Decision) -> AuthorizeResult:
    """The answer to a decided request: its result, or AuthorizeRefused (402, 429)."""
    admission = prepared.admission
    usages = _usages(admission, prepared.quotas, decision)
    metrics.AUTHORIZE_SECONDS.observe(time.perf_counter() - prepared.started)
    if not decision.allowed:
        metrics.AUTHORIZE.labels(outcome=decision.reason or "refused").inc()
        refusal = _refusal(admission, decision, usages)
        refusal.headers = {**headers_for(decision.limits), **refusal.headers}
        raise refusal
    metrics.AUTHORIZE.labels(outcome="allowed").inc()
    return AuthorizeResult(
        tenant_slug=prepared.tenant_slug,
        api_key_id=admission.api_key_id,
        currency=admission.currency,
        balance=from_micros(decision.balance),
        estimate=from_micros(admission.estimate_micros),
        estimated_tokens=admission.estimate_tokens,
        priced=prepared.priced,
        quotas=usages,
        hold=decision.hold,
        request_id=admission.request_id,
        headers=headers_for(decision.limits),
    )


def authorize_request(
    *,
    api_key: ApiKey,
    model: str,
    estimated_input_tokens: int,
    max_output_tokens: int,
    request_id: str | None = None,
    hold: bool = False,
    now: dt.datetime | None = None,
    service_tier: str = ServiceTier.DEFAULT,
) -> AuthorizeResult:
    """Admit (200) or refuse (AuthorizeRefused: 402 no money or hard quota, 422 unpriced model,
    400 context_length_exceeded: above the model's max_input_tokens or max_output_tokens).

    The estimate is at the price of `service_tier` (the version's default-tier row when the plan
    has none for that tier)."""
    prepared = authorize_prepare(
        api_key=api_key,
        model=model,
        estimated_input_tokens=estimated_input_tokens,
        max_output_tokens=max_output_tokens,
        request_id=request_id,
        hold=hold,
        now=now,
        service_tier=service_tier,
    )
    return _conclude(prepared, balance_authorize(admission=prepared.admission, hold=hold))


def authorize_holds(prepared: list[PreparedAuthorization]) -> list[AuthorizeResult | AuthorizeRefused]:
    """Hold for many prepared requests at once: each tenant's in one group (one commit), in the
    order given; per request its result or its refusal, as `authorize_request(hold=True)` would."""
    by_tenant: dict[int, list[int]] = {}
    for index, item in enumerate(prepared):
        by_tenant.setdefault(item.admission.tenant_id, []).append(index)
    answers: list[AuthorizeResult | AuthorizeRefused | None] = [None] * len(prepared)
    for indexes in by_tenant.values():
        decisions = balance_authorize_many(admissions=[prepared[i].admission for i in indexes])
        for index, decision in zip(indexes, decisions, strict=True):
            try:
                answers[index] = _conclude(prepared[index], decision)
            except AuthorizeRefused as refusal:
                answers[index] = refusal
    assert all(answer is not None for answer in answers)
    return answers  # type: ignore[return-value]  # every index was answered above


def _usages(admission: Admission, quotas: list[_QuotaDef], decision: Decision) -> list[QuotaUsage]:
    if not decision.states:
        return []
    cells = admission.cells
    return [
        quota_usage_from_cell(quota, state, cells[check.cell_index], admission.tz_name)
        for quota, check, state in zip(quotas, admission.checks, decision.states, strict=True)
    ]


def _rate_refusal(admission: Admission, decision: Decision) -> AuthorizeRefused:
    assert decision.failed is not None
    state = decision.limits[decision.failed]
    limit = state.limit
    scope = "this API key" if limit.scope == "key" else "the tenant"
    unit = {"requests": "requests per minute", "tokens": "tokens per minute", "parallel": "requests in flight"}
    wait = max(1, math.ceil(decision.retry_after_ms / 1000))
    headers = {**headers_for(decision.limits), "Retry-After": str(wait)}
    return AuthorizeRefused(
        429,
        "rate_limited",
        f"Rate limit of {scope} reached: {limit.limit} {unit[limit.kind]}; this request needs {limit.cost}, "
        f"{state.remaining} left. Retry after {wait} s.",
        {
            "limit": limit.kind,
            "scope": "api_key" if limit.scope == "key" else "tenant",
            "api_key_id": admission.api_key_id if limit.scope == "key" else None,
            "limit_value": limit.limit,
            "remaining": state.remaining,
            "requested": limit.cost,
            "retry_after_ms": decision.retry_after_ms,
        },
        headers,
    )


def _refusal(admission: Admission, decision: Decision, usages: list[QuotaUsage]) -> AuthorizeRefused:
    currency = admission.currency
    if decision.reason == RATE_LIMITED:
        return _rate_refusal(admission, decision)
    if decision.reason == INSUFFICIENT_BALANCE:
        balance = from_micros(decision.balance)
        requested = from_micros(admission.estimate_micros)
        return AuthorizeRefused(
            402,
            "insufficient_balance",
            f"The prepaid balance ({format_amount(balance, currency)} {currency}) does not cover this "
            f"request's estimate ({format_amount(requested, currency)} {currency}). Top up to continue.",
            {
                "limit": "balance",
                "balance": format_amount(balance, currency),
                "remaining": format_amount(max(balance, Decimal(0)), currency),
                "requested": format_amount(requested, currency),
                "currency": currency,
            },
        )
    assert decision.failed is not None
    usage = usages[decision.failed]
    quota = usage.as_dict()
    tokens = usage.metric == Quota.Metric.TOKENS
    needed: int | str = (
        admission.estimate_tokens if tokens else format_amount(from_micros(admission.estimate_micros), currency)
    )
    unit = "tokens" if tokens else currency
    scope = "this API key" if usage.api_key_id is not None else "the tenant"
    headers = {}
    if usage.period_end is not None:
        headers["Retry-After"] = str(max(1, math.ceil((usage.period_end - admission.now).total_seconds())))
    return AuthorizeRefused(
        402,
        "quota_exceeded",
        f"The {usage.enforcement} {usage.window} {usage.metric} quota of {scope} ({quota['limit']} {unit}) "
        f"has {quota['remaining']} left; this request needs up to {needed}.",
        {
            "limit": "quota",
            "quota_id": usage.quota_id,
            "metric": usage.metric,
            "window": usage.window,
            "scope": quota["scope"],
            "api_key_id": usage.api_key_id,
            "quota_limit": quota["limit"],
            "used": quota["used"],
            "held": quota["held"],
            "remaining": quota["remaining"],
            "requested": needed,
            "currency": currency,
            "period_start": usage.period_start,
            "period_end": usage.period_end,
        },
        headers,
    )


__all__ = [
    "AuthorizeRefused",
    "AuthorizeResult",
    "PreparedAuthorization",
    "authorize_caches_clear",
    "authorize_holds",
    "authorize_prepare",
    "authorize_request",
]
