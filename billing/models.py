"""Price plans and versioned prices; wallets, the credit ledger, holds and quotas.

Money fields say their unit. Prices are per 1M tokens with 12 decimal places (so a price of
1e-9 per token, 0.001 per 1M, is exact); ledger amounts are in currency units with 6 places.
"""

from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone

from billing.money import DecimalColumn

PRICE_FIELD: DecimalColumn = {"max_digits": 24, "decimal_places": 12}
# Resale: a markup multiplier (6 places) and an exchange rate (sell-currency units per unit of
# the cost currency, 12 places). Both are factors, not money.
MARKUP_FIELD: DecimalColumn = {"max_digits": 18, "decimal_places": 6}
EXCHANGE_RATE_FIELD: DecimalColumn = {"max_digits": 24, "decimal_places": 12}
LEDGER_FIELD: DecimalColumn = {"max_digits": 24, "decimal_places": 6}


class PricePlan(models.Model):
    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=64, unique=True)
    currency = models.CharField(max_length=3, default="USD")
    description = models.TextField(blank=True)
    # Whether /authorize admits a model the plan has no price for (its usage is stored
    # unpriced either way and rated when a price arrives).
    allow_unpriced_models = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    # Set by PostgreSQL triggers (migration 0004) from a sequence whenever the plan's prices,
    # currency or allow_unpriced_models change: read with each API key, it tells a process
    # whether the price book it keeps for the plan is still the plan's (billing/selectors.py).
    version = models.BigIntegerField(default=0, editable=False)
    # Resale: a sell plan's prices are derived from this cost plan's (the provider's prices) by
    # the plan's markups (billing/services/resale.py). Null: the plan's prices are its own.
    cost_plan = models.ForeignKey("self", null=True, blank=True, on_delete=models.PROTECT, related_name="sell_plans")

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.slug


class ServiceTier(models.TextChoices):
    """How fast the provider serves a request, and so its price (OpenAI's `service_tier`;
    the Batch API is `batch`). An event or an authorize request without one is `default`."""

    DEFAULT = "default"
    PRIORITY = "priority"
    FLEX = "flex"
    BATCH = "batch"


class Price(models.Model):
    """One version of a model's price in a plan. Never edited: a change is a new version.

    `model_pattern` is an exact model name or a glob (`gpt-4o*`); the exact name wins, then
    the longest glob. `tenant` set makes it an override for that tenant only. Each service tier's
    rates are a row of their own with the same plan, tenant, pattern and effective_from; a
    request of a tier the version has no row for is priced by the version's default-tier row.
    """

    plan = models.ForeignKey(PricePlan, on_delete=models.PROTECT, related_name="prices")
    tenant = models.ForeignKey(
        "accounts.Tenant", null=True, blank=True, on_delete=models.PROTECT, related_name="price_overrides"
    )
    model_pattern = models.CharField(max_length=200)
    effective_from = models.DateTimeField()
    service_tier = models.CharField(max_length=16, choices=ServiceTier.choices, default=ServiceTier.DEFAULT)
    # Currency units per 1,000,000 tokens. A missing cache rate means the input rate.
    input_per_mtok = models.DecimalField(**PRICE_FIELD)
    output_per_mtok = models.DecimalField(**PRICE_FIELD)
    cached_input_per_mtok = models.DecimalField(**PRICE_FIELD, null=True, blank=True)
    cache_write_per_mtok = models.DecimalField(**PRICE_FIELD, null=True, blank=True)
    # 1-hour cache writes (part of the cache writes); missing: the cache-write rate.
    cache_write_1h_per_mtok = models.DecimalField(**PRICE_FIELD, null=True, blank=True)
    # Reasoning tokens (part of the output); missing: the output rate (of the tier applied).
    reasoning_per_mtok = models.DecimalField(**PRICE_FIELD, null=True, blank=True)
    # Context tier: when input_tokens > tier_threshold the whole request uses the tier rates
    # (a missing tier rate falls back to the base rate of the same kind).
    tier_threshold = models.PositiveBigIntegerField(null=True, blank=True)
    tier_input_per_mtok = models.DecimalField(**PRICE_FIELD, null=True, blank=True)
    tier_output_per_mtok = models.DecimalField(**PRICE_FIELD, null=True, blank=True)
    tier_cached_input_per_mtok = models.DecimalField(**PRICE_FIELD, null=True, blank=True)
    tier_cache_write_per_mtok = models.DecimalField(**PRICE_FIELD, null=True, blank=True)
    tier_cache_write_1h_per_mtok = models.DecimalField(**PRICE_FIELD, null=True, blank=True)
    # The model's length limits (tokens; None: no limit known). Authorize refuses a request
    # above them; usage above them is recorded and flagged.
    max_input_tokens = models.PositiveBigIntegerField(null=True, blank=True)
    max_output_tokens = models.PositiveBigIntegerField(null=True, blank=True)
    source = models.CharField(max_length=200, blank=True)  # e.g. "litellm catalog", "admin"
    created_at = models.DateTimeField(auto_now_add=True)
    # Resale (PRICE_DERIVATION_FIELDS): what a sell plan's version was derived from: the cost
    # plan's version, the markup multiplier (null for a fixed price) and the exchange rate used
    # (sell-currency units per cost-currency unit; 1 for the same currency). Null cost_price:
    # the price is the plan's own, and events it rates have no cost basis.
    cost_price = models.ForeignKey("self", null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    markup = models.DecimalField(**MARKUP_FIELD, null=True, blank=True)
    exchange_rate = models.DecimalField(**EXCHANGE_RATE_FIELD, null=True, blank=True)

    class Meta:
        ordering = ["plan", "model_pattern", "-effective_from"]
        constraints = [
            models.UniqueConstraint(
                fields=["plan", "tenant", "model_pattern", "effective_from", "service_tier"],
                name="price_unique_version",
                nulls_distinct=False,
            ),
            models.CheckConstraint(
                condition=models.Q(input_per_mtok__gte=0, output_per_mtok__gte=0)
                & (models.Q(cached_input_per_mtok__isnull=True) | models.Q(cached_input_per_mtok__gte=0))
                & (models.Q(cache_write_per_mtok__isnull=True) | models.Q(cache_write_per_mtok__gte=0))
                & (models.Q(tier_input_per_mtok__isnull=True) | models.Q(tier_input_per_mtok__gte=0))
                & (models.Q(tier_output_per_mtok__isnull=True) | models.Q(tier_output_per_mtok__gte=0))
                & (models.Q(tier_cached_input_per_mtok__isnull=True) | models.Q(tier_cached_input_per_mtok__gte=0))
                & (models.Q(tier_cache_write_per_mtok__isnull=True) | models.Q(tier_cache_write_per_mtok__gte=0))
                & (models.Q(cache_write_1h_per_mtok__isnull=True) | models.Q(cache_write_1h_per_mtok__gte=0))
                & (models.Q(tier_cache_write_1h_per_mtok__isnull=True) | models.Q(tier_cache_write_1h_per_mtok__gte=0))
                & (models.Q(reasoning_per_mtok__isnull=True) | models.Q(reasoning_per_mtok__gte=0)),
                name="price_rates_non_negative",
            ),
            models.CheckConstraint(
                condition=models.Q(service_tier__in=ServiceTier.values), name="price_service_tier_known"
            ),
            models.CheckConstraint(
                condition=(models.Q(markup__isnull=True) | models.Q(markup__gte=0))
                & (models.Q(exchange_rate__isnull=True) | models.Q(exchange_rate__gt=0)),
                name="price_derivation_non_negative",
            ),
        ]
        indexes = [models.Index(fields=["plan", "tenant", "model_pattern"])]

    def __str__(self) -> str:
        tier = "" if self.service_tier == ServiceTier.DEFAULT else f"[{self.service_tier}]"
        return f"{self.plan.slug}:{self.model_pattern}{tier}@{self.effective_from:%Y-%m-%d}"


# The one list of a Price's rates (currency units per 1M tokens): every `*_per_mtok` column,
# read from the model so that a rate column added later (a 1-hour cache write, reasoning tokens)
# is in it without a change here. Resale derives each of them; the price book converts each.
PRICE_RATE_FIELDS: tuple[str, ...] = tuple(f.name for f in Price._meta.concrete_fields if f.name.endswith("_per_mtok"))
# What records a derivation (set by billing/services/resale.py, never copied from the cost price).
PRICE_DERIVATION_FIELDS = ("cost_price", "markup", "exchange_rate")
# A version's own bookkeeping: not part of what a derived price copies from its cost price.
_PRICE_OWN_FIELDS = ("id", "plan", "effective_from", "source", "created_at", *PRICE_DERIVATION_FIELDS)
# Everything else is copied as is from the cost price to a derived one: the pattern, the tenant
# (always none: only plan-wide prices are derived), the tier threshold, and any identity column
# added later (a service tier, length limits).
PRICE_COPIED_FIELDS: tuple[str, ...] = tuple(
    f.name for f in Price._meta.concrete_fields if f.name not in PRICE_RATE_FIELDS and f.name not in _PRICE_OWN_FIELDS
)


def price_version_key_fields() -> tuple[str, ...]:
    """The columns naming one versioned price (its unique constraint without effective_from)."""
    for constraint in Price._meta.constraints:
        if isinstance(constraint, models.UniqueConstraint) and "effective_from" in constraint.fields:
            return tuple(name for name in constraint.fields if name != "effective_from")
    raise LookupError("Price has no unique version constraint")  # pragma: no cover


class ExchangeRate(models.Model):
    """An operator-set rate: one unit of `base` is worth `rate` units of `quote`, from
    `effective_from`. Never edited: a change is a new version (audited, `exchange_rate.set`)."""

    base = models.CharField(max_length=3)  # ISO 4217, the cost plan's currency (e.g. USD)
    quote = models.CharField(max_length=3)  # the sell plan's currency (e.g. CNY)
    rate = models.DecimalField(**EXCHANGE_RATE_FIELD)  # quote units per base unit, > 0
    effective_from = models.DateTimeField()
    note = models.CharField(max_length=200, blank=True)
    created_by = models.CharField(max_length=200)  # the actor label
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["base", "quote", "-effective_from"]
        constraints = [
            models.UniqueConstraint(fields=["base", "quote", "effective_from"], name="exchange_rate_unique_version"),
            models.CheckConstraint(condition=models.Q(rate__gt=0), name="exchange_rate_positive"),
            models.CheckConstraint(condition=~models.Q(base=models.F("quote")), name="exchange_rate_two_currencies"),
        ]

    def __str__(self) -> str:
        return f"1 {self.base} = {self.rate} {self.quote} from {self.effective_from:%Y-%m-%d %H:%M}"


class Markup(models.Model):
    """One version of a sell plan's resale rule for a model pattern (exact name or glob; `*` is
    the plan's multiplier). The rule of a cost price's pattern: the exact name, else the longest
    matching glob. Either a `multiplier` of the cost price's rates or `fixed_rates` (rate field ->
    decimal string per 1M tokens in the plan's currency). Never edited: a change is a version."""

    plan = models.ForeignKey(PricePlan, on_delete=models.PROTECT, related_name="markups")
    model_pattern = models.CharField(max_length=200)
    effective_from = models.DateTimeField()
    multiplier = models.DecimalField(**MARKUP_FIELD, null=True, blank=True)
    fixed_rates = models.JSONField(null=True, blank=True)
    created_by = models.CharField(max_length=200)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["plan", "model_pattern", "-effective_from"]
        constraints = [
            models.UniqueConstraint(fields=["plan", "model_pattern", "effective_from"], name="markup_unique_version"),
            models.CheckConstraint(
                condition=models.Q(multiplier__isnull=False, fixed_rates__isnull=True, multiplier__gte=0)
                | models.Q(multiplier__isnull=True, fixed_rates__isnull=False),
                name="markup_multiplier_or_fixed",
            ),
        ]

    def __str__(self) -> str:
        what = f"x{self.multiplier}" if self.multiplier is not None else "fixed"
        return f"{self.plan.slug}:{self.model_pattern} {what}@{self.effective_from:%Y-%m-%d}"


class Wallet(models.Model):
    """A tenant's prepaid balance. `balance` caches sum(ledger) and is updated with it."""

    tenant = models.OneToOneField("accounts.Tenant", on_delete=models.PROTECT, related_name="wallet")
    currency = models.CharField(max_length=3)
    balance = models.DecimalField(**LEDGER_FIELD, default=0)  # currency units
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.tenant.slug}: {self.balance} {self.currency}"


class LedgerEntry(models.Model):
    """Append-only movement of a wallet; credits positive, debits negative."""

    class Kind(models.TextChoices):
        TOPUP = "topup"
        USAGE = "usage"
        HOLD = "hold"
        RELEASE = "release"
        ADJUSTMENT = "adjustment"
        INVOICE_PAYMENT = "invoice_payment"

    tenant = models.ForeignKey("accounts.Tenant", on_delete=models.PROTECT, related_name="ledger_entries")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    amount = models.DecimalField(**LEDGER_FIELD)  # currency units, signed
    idempotency_key = models.CharField(max_length=200)
    reference = models.CharField(max_length=200, blank=True)
    actor_label = models.CharField(max_length=200, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "ledger entries"
        constraints = [
            models.UniqueConstraint(fields=["tenant", "idempotency_key"], name="ledger_unique_idempotency"),
            models.CheckConstraint(
                condition=(
                    models.Q(kind="topup", amount__gt=0)
                    | models.Q(kind__in=["usage", "hold"], amount__lte=0)
                    | models.Q(kind="release", amount__gte=0)
                    | models.Q(kind__in=["adjustment", "invoice_payment"])
                ),
                name="ledger_amount_sign_matches_kind",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.amount} ({self.idempotency_key})"


class Hold(models.Model):
    """An authorization's reserved estimate, settled by the usage event with its request_id.

    Placing a hold posts a `hold` ledger entry (-amount); settling or releasing it posts the
    matching `release` (+amount), and settling also charges the event's real cost. So the
    wallet balance (== sum of the ledger) is always net of open holds. `created_at` fixes the
    quota windows the reservation counts against (see billing/windows.py).
    """

    class Status(models.TextChoices):
        OPEN = "open"
        SETTLED = "settled"
        RELEASED = "released"  # expired with no usage, or cancelled

    tenant = models.ForeignKey("accounts.Tenant", on_delete=models.PROTECT, related_name="holds")
    api_key = models.ForeignKey("accounts.ApiKey", on_delete=models.PROTECT, related_name="holds")
    request_id = models.CharField(max_length=128)
    model = models.CharField(max_length=200)
    amount = models.DecimalField(**LEDGER_FIELD)  # currency units reserved, >= 0
    estimated_tokens = models.BigIntegerField(default=0)  # tokens reserved against token quotas
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.OPEN)
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    closed_at = models.DateTimeField(null=True, blank=True)
    # Settlement: the matching event's cost (currency units, rounded to the ledger's micro-unit)
    # and how far it went beyond the hold (0 when the estimate covered it).
    settled_amount = models.DecimalField(**LEDGER_FIELD, null=True, blank=True)
    overage = models.DecimalField(**LEDGER_FIELD, default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant", "request_id"], name="hold_unique_request"),
            models.CheckConstraint(condition=models.Q(amount__gte=0), name="hold_amount_non_negative"),
            models.CheckConstraint(
                condition=models.Q(estimated_tokens__gte=0, overage__gte=0), name="hold_estimate_non_negative"
            ),
            models.CheckConstraint(
                condition=models.Q(status="open", closed_at__isnull=True)
                | models.Q(status__in=["settled", "released"], closed_at__isnull=False),
                name="hold_closed_when_not_open",
            ),
        ]
        indexes = [
            # Small: only open holds. Settlement probes it per event; the sweeper scans by expiry.
            models.Index(fields=["tenant", "request_id"], condition=models.Q(status="open"), name="hold_open_request"),
            models.Index(fields=["expires_at"], condition=models.Q(status="open"), name="hold_open_expiry"),
        ]

    def __str__(self) -> str:
        return f"hold {self.request_id} {self.amount} {self.status}"


class Quota(models.Model):
    """A limit on tokens or money, for a tenant or one of its keys, per day, month or ever."""

    class Metric(models.TextChoices):
        TOKENS = "tokens"
        MONEY = "money"

    class Window(models.TextChoices):
        DAY = "day"
        MONTH = "month"
        LIFETIME = "lifetime"

    class Enforcement(models.TextChoices):
        HARD = "hard", "hard (402)"
        SOFT = "soft", "soft (alerts only)"

    tenant = models.ForeignKey("accounts.Tenant", on_delete=models.CASCADE, related_name="quotas")
    api_key = models.ForeignKey(
        "accounts.ApiKey", null=True, blank=True, on_delete=models.CASCADE, related_name="quotas"
    )
    metric = models.CharField(max_length=8, choices=Metric.choices)
    window = models.CharField(max_length=8, choices=Window.choices)
    limit = models.DecimalField(**LEDGER_FIELD)  # tokens, or currency units for money
    enforcement = models.CharField(max_length=4, choices=Enforcement.choices, default=Enforcement.HARD)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=models.Q(limit__gte=0), name="quota_limit_non_negative"),
        ]

    def __str__(self) -> str:
        scope = self.api_key.prefix if self.api_key is not None else self.tenant.slug
        return f"{scope}: {self.limit} {self.metric}/{self.window} ({self.enforcement})"

    def clean(self) -> None:
        if self.api_key is not None and self.tenant_id and self.api_key.tenant_id != self.tenant_id:
            raise ValidationError({"api_key": "The key belongs to another tenant."})
        if (
            self.metric == self.Metric.TOKENS
            and self.limit is not None
            and self.limit != self.limit.to_integral_value()
        ):
            raise ValidationError({"limit": "A token quota's limit is a whole number of tokens."})


class QuotaCounter(models.Model):
    """Usage per tenant (api_key_ref 0) or per key, per tenant-local day, month and lifetime.

    Kept for every scope whether or not a quota exists, so a quota added mid-month sees the
    whole month: settled usage by the ingest transaction that stores the events (one upsert per
    batch); reservations of open holds (held_*) by the transactions that place, settle or release
    them, in the windows of the hold's created_at. Lifetime rows have period_start 1970-01-01.
    """

    tenant = models.ForeignKey("accounts.Tenant", on_delete=models.CASCADE, related_name="+")
    api_key_ref = models.BigIntegerField()  # ApiKey id, or 0 for the whole tenant
    period = models.CharField(max_length=8, choices=Quota.Window.choices)
    period_start = models.DateField()  # tenant-local
    tokens = models.BigIntegerField(default=0)  # input + output tokens
    micros = models.BigIntegerField(default=0)  # cost in ledger micro-units (see billing/money.py)
    held_tokens = models.BigIntegerField(default=0)  # reserved by open holds
    held_micros = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "api_key_ref", "period", "period_start"], name="quota_counter_unique_cell"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.tenant_id}/{self.api_key_ref} {self.period} {self.period_start}: {self.tokens}t {self.micros}u"


class RateLimitBucket(models.Model):
    """A leaky bucket of the database balance backend (the Redis backend keeps it in Redis).

    `level` is what the bucket holds now (requests or tokens, fractional while it drains) as of
    `updated_at`; it drains at `limit` per minute. `name` carries the tenant and the scope
    (billing/services/balances/limits.py), one row per limit ever used.
    """

    name = models.CharField(max_length=100, primary_key=True)
    level = models.FloatField(default=0)  # a count, never money: fractions only while draining
    limit = models.BigIntegerField()
    updated_at = models.DateTimeField()

    def __str__(self) -> str:
        return self.name


class JobFailure(models.Model):
    """A tenant a periodic job (rollup, alert sweep, hold expiry, monthly close) failed for.

    The job went on with the other tenants (billing/services/tenant_jobs.py); this row shows the
    operators which tenant and why, and says when the job tries that tenant again (exponential
    backoff). The first run that succeeds for the tenant deletes it.
    """

    job = models.CharField(max_length=32)  # tenant_jobs.JOBS
    tenant = models.ForeignKey("accounts.Tenant", on_delete=models.CASCADE, related_name="+")
    error = models.CharField(max_length=500)  # the exception's class and message, shortened
    first_seen = models.DateTimeField()
    last_seen = models.DateTimeField()
    attempts = models.PositiveIntegerField(default=1)
    next_retry_at = models.DateTimeField()
    # Where the job picks up again for this tenant (the rollup: events received from then on).
    resume_from = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["job", "tenant"], name="job_failure_unique")]

    def __str__(self) -> str:
        return f"{self.job} {self.tenant_id}: {self.error}"
