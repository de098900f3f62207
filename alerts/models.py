"""Alert rules, the channels they notify, and the record of every alert and delivery.

One alert per rule x threshold x period is a database fact: AlertEvent is unique on those
three, and whoever inserts the row (INSERT ... ON CONFLICT DO NOTHING semantics through
get_or_create in a transaction) is the one that queues its deliveries. A delivery row exists
before anything is sent and records every attempt's outcome.
"""

from django.db import models

from billing.money import DecimalColumn

AMOUNT_FIELD: DecimalColumn = {"max_digits": 24, "decimal_places": 6}  # currency units, or tokens for token quotas


def default_thresholds() -> list[str]:
    return ["80", "100"]


class NotificationChannel(models.Model):
    """Where a tenant's alerts go. `config` is what the channel's transport needs."""

    class Kind(models.TextChoices):
        EMAIL = "email", "Email"
        DINGTALK = "dingtalk", "DingTalk robot"
        WEBHOOK = "webhook", "Webhook"
        WECOM = "wecom", "WeCom robot"
        FEISHU = "feishu", "Feishu / Lark bot"
        SLACK = "slack", "Slack incoming webhook"

    tenant = models.ForeignKey("accounts.Tenant", on_delete=models.CASCADE, related_name="notification_channels")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    name = models.CharField(max_length=100)
    # email: {"recipients": [...]}; dingtalk: {"webhook_url", "secret"?, "keyword"?};
    # webhook: {"url", "secret"}; wecom: {"webhook_url"}; feishu: {"webhook_url", "secret"?,
    # "keyword"?}; slack: {"url"}. Validated by the transport (infra/notifications).
    config = models.JSONField(default=dict)
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(fields=["tenant", "name"], name="channel_unique_name"),
            models.CheckConstraint(
                condition=models.Q(kind__in=["email", "dingtalk", "webhook", "wecom", "feishu", "slack"]),
                name="channel_kind_valid",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.kind})"


class AlertRule(models.Model):
    """A condition on a tenant's (or one key's) usage, balance or spend, with thresholds.

    - quota: usage of `quota` in its window against its limit.
    - balance: the wallet balance; percent thresholds are shares of `amount` used up
      (80 % = balance at or below 20 % of `amount`), absolute ones are balance levels.
    - spend: cost in `window` (per key when `api_key` is set) against the budget `amount`.
    - forecast: at the last 7 days' pace, `quota` (or the balance, without a quota) runs out
      within `forecast_days`.
    - spike: today's spend is above `spike_factor` x the trailing 7-day daily average.
    """

    class Kind(models.TextChoices):
        QUOTA = "quota", "Quota"
        BALANCE = "balance", "Balance"
        SPEND = "spend", "Spend"
        FORECAST = "forecast", "Forecast"
        SPIKE = "spike", "Spend spike"

    class Unit(models.TextChoices):
        PERCENT = "percent", "% of the limit"
        ABSOLUTE = "absolute", "absolute amount"

    class Window(models.TextChoices):
        DAY = "day", "Day"
        MONTH = "month", "Month"

    tenant = models.ForeignKey("accounts.Tenant", on_delete=models.CASCADE, related_name="alert_rules")
    api_key = models.ForeignKey(
        "accounts.ApiKey", null=True, blank=True, on_delete=models.CASCADE, related_name="alert_rules"
    )
    quota = models.ForeignKey("billing.Quota", null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    name = models.CharField(max_length=100, blank=True)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    window = models.CharField(max_length=8, choices=Window.choices, default=Window.MONTH)  # spend rules
    amount = models.DecimalField(**AMOUNT_FIELD, null=True, blank=True)  # spend budget / balance reference
    threshold_unit = models.CharField(max_length=8, choices=Unit.choices, default=Unit.PERCENT)
    thresholds = models.JSONField(default=default_thresholds)  # decimal strings, e.g. ["80", "100"]
    forecast_days = models.PositiveIntegerField(default=7)
    spike_factor = models.DecimalField(max_digits=8, decimal_places=2, default=3)
    channels = models.ManyToManyField(NotificationChannel, blank=True, related_name="rules")
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(kind__in=["quota", "balance", "spend", "forecast", "spike"]),
                name="alert_rule_kind_valid",
            ),
            models.CheckConstraint(condition=~models.Q(kind="quota") | models.Q(quota__isnull=False),
                                   name="alert_rule_quota_needs_quota"),
            models.CheckConstraint(condition=~models.Q(kind="spend") | models.Q(amount__gt=0),
                                   name="alert_rule_spend_needs_budget"),
            models.CheckConstraint(condition=models.Q(amount__isnull=True) | models.Q(amount__gte=0),
                                   name="alert_rule_amount_non_negative"),
            models.CheckConstraint(condition=models.Q(spike_factor__gt=0), name="alert_rule_spike_factor_positive"),
        ]  # fmt: skip

    def __str__(self) -> str:
        return self.name or f"{self.kind} #{self.pk}"


class AlertEvent(models.Model):
    """One alert: a rule's threshold crossed in one period. Never two for the same three."""

    rule = models.ForeignKey(AlertRule, on_delete=models.CASCADE, related_name="events")
    tenant = models.ForeignKey("accounts.Tenant", on_delete=models.CASCADE, related_name="+")
    threshold = models.CharField(max_length=32)  # "80%", "1000.00", "forecast", "x3.00"
    period = models.CharField(max_length=64)  # "2026-03", "2026-03-14", "lifetime", "balance:<top-up id>"
    fired_at = models.DateTimeField()
    usage = models.DecimalField(**AMOUNT_FIELD, null=True, blank=True)  # what was measured
    limit = models.DecimalField(**AMOUNT_FIELD, null=True, blank=True)  # what it was measured against
    # What the message says, language-neutral (rendered in the tenant's language when sent).
    details = models.JSONField(default=dict)

    class Meta:
        ordering = ["-fired_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["rule", "threshold", "period"], name="alert_event_once_per_period"),
        ]
        indexes = [models.Index(fields=["tenant", "-fired_at"], name="alert_event_tenant_time")]

    def __str__(self) -> str:
        return f"{self.rule_id} {self.threshold} {self.period}"


class AlertDelivery(models.Model):
    """One message to one channel: written before sending, updated after every attempt."""

    class Status(models.TextChoices):
        PENDING = "pending"  # not tried yet (or released by a worker that failed before sending)
        SENDING = "sending"  # claimed by a worker until lease_expires_at
        RETRY = "retry"  # a transient error; tried again at next_attempt_at
        DELIVERED = "delivered"
        FAILED = "failed"  # a permanent error, or out of attempts

    class ErrorKind(models.TextChoices):
        NONE = "", "none"
        TRANSIENT = "transient"
        PERMANENT = "permanent"

    tenant = models.ForeignKey("accounts.Tenant", on_delete=models.CASCADE, related_name="+")
    event = models.ForeignKey(
        AlertEvent, null=True, blank=True, on_delete=models.CASCADE, related_name="deliveries"
    )  # null: a "send test" from the portal
    channel = models.ForeignKey(NotificationChannel, on_delete=models.CASCADE, related_name="deliveries")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True)
    error_kind = models.CharField(max_length=16, choices=ErrorKind.choices, blank=True, default="")
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "alert deliveries"
        constraints = [
            models.UniqueConstraint(
                fields=["event", "channel"], condition=models.Q(event__isnull=False), name="alert_delivery_once"
            ),
            models.CheckConstraint(
                condition=models.Q(status__in=["pending", "sending", "retry", "delivered", "failed"]),
                name="alert_delivery_status_valid",
            ),
        ]
        indexes = [
            models.Index(
                fields=["status", "next_attempt_at"],
                condition=~models.Q(status__in=["delivered", "failed"]),
                name="alert_delivery_open",
            ),
            models.Index(fields=["tenant", "-created_at"], name="alert_delivery_tenant_time"),
        ]

    def __str__(self) -> str:
        return f"{self.channel_id} {self.status} ({self.attempts})"
