"""Usage events (append-only, rated once at ingest) and their daily rollups."""

from django.db import models

from billing.money import DecimalColumn

COST_FIELD: DecimalColumn = {"max_digits": 38, "decimal_places": 18}  # unrounded currency units


class UsageEvent(models.Model):
    """One metered request. (tenant, request_id) is unique: the idempotency key.

    Token kinds follow OpenAI's `usage`: input_tokens counts every prompt token, and the
    cached-read and cache-write tokens are parts of it (see docs/billing-rules.md).
    """

    FLAG_MODEL_NOT_ALLOWED = "model_not_allowed"  # the key's allowed_models exclude the model
    # input or output tokens above the price's max_input_tokens / max_output_tokens
    FLAG_CONTEXT_LENGTH_EXCEEDED = "context_length_exceeded"

    class TokenSource(models.TextChoices):
        REPORTED = "reported"  # counts sent by the caller
        COUNTED = "counted"  # counted here from text with tiktoken

    # No database-level foreign keys on this append-only table: PostgreSQL checks each one per
    # inserted row (three lookups and a row lock on the hot tenant, key and price rows), which
    # cost about as much as the insert itself (docs/scaling.md). Every id comes from a row the
    # request just read, deletes stay PROTECTed by the ORM, and a partitioned or distributed
    # usage table is simpler without them. tenant_id leads both composite indexes, so it needs
    # no index of its own.
    tenant = models.ForeignKey(
        "accounts.Tenant", on_delete=models.PROTECT, related_name="+", db_constraint=False, db_index=False
    )
    api_key = models.ForeignKey("accounts.ApiKey", on_delete=models.PROTECT, related_name="+", db_constraint=False)
    request_id = models.CharField(max_length=128)
    model = models.CharField(max_length=200)
    input_tokens = models.BigIntegerField()
    output_tokens = models.BigIntegerField()
    cached_input_tokens = models.BigIntegerField(default=0)
    cache_write_tokens = models.BigIntegerField(default=0)
    cache_write_1h_tokens = models.BigIntegerField(default=0, db_default=0)  # part of cache_write_tokens
    reasoning_tokens = models.BigIntegerField(default=0, db_default=0)  # part of output_tokens
    # billing.models.ServiceTier: the tier the request was served on, which picks its price row.
    service_tier = models.CharField(max_length=16, default="default", db_default="default")
    occurred_at = models.DateTimeField()
    received_at = models.DateTimeField()
    latency_ms = models.IntegerField(null=True, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    token_source = models.CharField(max_length=8, choices=TokenSource.choices, default=TokenSource.REPORTED)
    encoding = models.CharField(max_length=32, blank=True)  # tiktoken encoding when counted
    # Comma-separated facts about usage that was recorded although a control would have refused
    # it (it happened, so it is billed): e.g. "model_not_allowed". Empty for ordinary usage.
    flags = models.CharField(max_length=100, blank=True, default="", db_default="")
    # Rating: null cost means no price matched yet (stored anyway, rated when one arrives).
    cost = models.DecimalField(**COST_FIELD, null=True, blank=True)
    currency = models.CharField(max_length=3)
    # Our own cost of the same tokens (resale): the event rated at the cost price its price was
    # derived from, converted into `currency` (billing/services/resale.py). Margin = cost -
    # cost_basis, exactly. Null when the price has no cost price (or the event is unpriced).
    cost_basis = models.DecimalField(**COST_FIELD, null=True, blank=True)
    price = models.ForeignKey(
        "billing.Price", null=True, blank=True, on_delete=models.PROTECT, related_name="+", db_constraint=False
    )
    # The tier choice made when the event was rated (billing.rating.tier_applies): True when the
    # price's context tier applied (input_tokens above its threshold). Invoices group by it.
    long_context = models.BooleanField(default=False, db_default=False)
    # Set by the relay (docs/relay.md): the upstream that served the request and its time to
    # first token in milliseconds (latency_ms is the whole request). Empty / null for usage
    # posted to the REST API.
    upstream = models.CharField(max_length=100, blank=True, default="", db_default="")
    ttft_ms = models.IntegerField(null=True, blank=True)
    # SHA-256 of the canonical body (without api_key) and the consuming key id: a replay with the
    # same hash is a duplicate, else a conflict (metering/validation.py, keyed_body_hash).
    body_hash = models.CharField(max_length=64)

    class Meta:
        # No unique (tenant, request_id) here: on PostgreSQL the table is partitioned by month of
        # occurred_at (metering/partitions.py), and a unique index of a partitioned table must
        # include the partition key. The exactly-once key lives in UsageRequest, claimed first.
        constraints = [
            models.CheckConstraint(
                condition=models.Q(
                    input_tokens__gte=0,
                    output_tokens__gte=0,
                    cached_input_tokens__gte=0,
                    cache_write_tokens__gte=0,
                    cache_write_1h_tokens__gte=0,
                    reasoning_tokens__gte=0,
                ),
                name="usage_event_tokens_non_negative",
            ),
            models.CheckConstraint(
                condition=models.Q(input_tokens__gte=models.F("cached_input_tokens") + models.F("cache_write_tokens")),
                name="usage_event_cache_within_input",
            ),
            models.CheckConstraint(
                condition=models.Q(cache_write_tokens__gte=models.F("cache_write_1h_tokens"))
                & models.Q(output_tokens__gte=models.F("reasoning_tokens")),
                name="usage_event_parts_within_kind",
            ),
        ]
        indexes = [
            models.Index(fields=["tenant", "occurred_at"], name="usage_event_tenant_time"),
            models.Index(
                fields=["tenant", "model"], condition=models.Q(cost__isnull=True), name="usage_event_unpriced"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.request_id} {self.model}"

    @property
    def is_priced(self) -> bool:
        return self.cost is not None


class UsageRequest(models.Model):
    """The exactly-once key of usage: one row per (tenant, request_id), claimed before the event.

    The event store inserts the key (ON CONFLICT DO NOTHING) and stores only the events whose key
    it inserted, in one statement. A replay is recognised here whatever its occurred_at (so in
    whichever month's partition the first copy went), and still after that month was archived:
    keys are never archived. Narrow on purpose: no id of its own, no foreign keys.
    """

    pk = models.CompositePrimaryKey("tenant_id", "request_id")
    tenant_id = models.BigIntegerField()
    request_id = models.CharField(max_length=128)
    event_id = models.BigIntegerField(null=True)  # UsageEvent.id (filled in the same transaction)
    body_hash = models.CharField(max_length=64)  # UsageEvent.body_hash: duplicate or conflict

    def __str__(self) -> str:
        return f"{self.tenant_id} {self.request_id}"


class UsageArchive(models.Model):
    """One UTC month of usage events exported to a compressed file (metering/services/archive.py).

    Written when the export starts, `verified` once the stored file was re-read and matched the
    manifest, `dropped` once the month's rows left the database. The manifest (row count,
    per-tenant sums, SHA-256 of the file) is kept here and beside the file.
    """

    class Status(models.TextChoices):
        EXPORTED = "exported"
        VERIFIED = "verified"
        DROPPED = "dropped"

    period = models.DateField(unique=True)  # first day of the UTC month
    status = models.CharField(max_length=16, choices=Status.choices)
    file_name = models.CharField(max_length=300)  # in the "archive" storage
    sha256 = models.CharField(max_length=64)
    rows = models.BigIntegerField()
    file_bytes = models.BigIntegerField()
    table_bytes = models.BigIntegerField()  # the month's partition (heap + indexes) when exported
    manifest = models.JSONField()
    created_at = models.DateTimeField(auto_now_add=True)
    dropped_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.period:%Y-%m} {self.status}"


class ArchivedUsageTotal(models.Model):
    """What an archived month held for one tenant and one tenant-local month, by basis.

    `occurred`: events that occurred in `month`; `received`: events received in `month` (both
    months in the tenant's time zone at export). Reconciliation adds these to the online rows,
    so a month reconciles after its events left the database.
    """

    class Basis(models.TextChoices):
        OCCURRED = "occurred"
        RECEIVED = "received"

    archive = models.ForeignKey(UsageArchive, on_delete=models.CASCADE, related_name="totals")
    tenant_id = models.BigIntegerField()
    basis = models.CharField(max_length=8, choices=Basis.choices)
    month = models.DateField()  # first day of the tenant-local month
    requests = models.BigIntegerField()
    unpriced_requests = models.BigIntegerField()
    cost = models.DecimalField(**COST_FIELD)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["archive", "tenant_id", "basis", "month"], name="archived_total_unique")
        ]
        indexes = [models.Index(fields=["tenant_id", "basis", "month"], name="archived_total_lookup")]

    def __str__(self) -> str:
        return f"{self.archive_id} {self.tenant_id} {self.basis} {self.month}"


class DailyUsage(models.Model):
    """Rollup per tenant x api key x model x service tier x tenant-local day. Rebuilt idempotently."""

    tenant = models.ForeignKey("accounts.Tenant", on_delete=models.CASCADE, related_name="+")
    api_key = models.ForeignKey("accounts.ApiKey", on_delete=models.CASCADE, related_name="+")
    model = models.CharField(max_length=200)
    service_tier = models.CharField(max_length=16, default="default", db_default="default")
    day = models.DateField()  # in the tenant's timezone
    requests = models.BigIntegerField(default=0)
    input_tokens = models.BigIntegerField(default=0)
    output_tokens = models.BigIntegerField(default=0)
    cached_input_tokens = models.BigIntegerField(default=0)
    cache_write_tokens = models.BigIntegerField(default=0)
    cache_write_1h_tokens = models.BigIntegerField(default=0, db_default=0)
    reasoning_tokens = models.BigIntegerField(default=0, db_default=0)
    cost = models.DecimalField(**COST_FIELD, default=0)
    # Sum of the events' cost_basis (events without one add nothing): the cost side of the margin.
    cost_basis = models.DecimalField(**COST_FIELD, default=0)
    unpriced_requests = models.BigIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "api_key", "model", "service_tier", "day"], name="daily_usage_unique"
            ),
        ]
        indexes = [models.Index(fields=["tenant", "day"], name="daily_usage_tenant_day")]

    def __str__(self) -> str:
        return f"{self.tenant_id} {self.day} {self.model}"


class RollupCursor(models.Model):
    """How far the incremental rollup has read UsageEvent.received_at (one row per name).

    Events received at or after `received_from` (minus a safety overlap) have not been folded
    into DailyUsage yet; the refresh rebuilds the tenant-days they touch and moves it on.
    """

    name = models.CharField(max_length=32, unique=True)
    received_from = models.DateTimeField()
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.name}: {self.received_from.isoformat()}"


class UnpricedUsageNotice(models.Model):
    """Staff were told on `day` (UTC) that `model` has unpriced usage: one row per model and day.

    The unpriced check claims the row (INSERT ... ON CONFLICT DO NOTHING) before it sends the
    email, so two runs, or two beat schedulers, tell staff about a model at most once a day.
    """

    model = models.CharField(max_length=200)
    day = models.DateField()
    events = models.BigIntegerField()  # unpriced events of the model when the notice was sent
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["model", "day"], name="unpriced_notice_once_a_day")]

    def __str__(self) -> str:
        return f"{self.model} {self.day}"
