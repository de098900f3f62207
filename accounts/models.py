"""Tenants, who may act for them, and the credentials machines use."""

import datetime as dt
import fnmatch
import zoneinfo

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models


def validate_timezone(value: str) -> None:
    if value not in zoneinfo.available_timezones():
        raise ValidationError(f"{value!r} is not an IANA time zone name (e.g. Asia/Shanghai).")


# A rate limit is a positive number or absent: 0 would be a key that can never be used, which
# is what revoking is for.
RATE_LIMITS_POSITIVE = (
    (models.Q(rpm_limit__isnull=True) | models.Q(rpm_limit__gt=0))
    & (models.Q(tpm_limit__isnull=True) | models.Q(tpm_limit__gt=0))
    & (models.Q(max_parallel_requests__isnull=True) | models.Q(max_parallel_requests__gt=0))
)


def validate_currency(value: str) -> None:
    if len(value) != 3 or not value.isascii() or not value.isupper():
        raise ValidationError(f"{value!r} is not an ISO 4217 code (three upper-case letters).")


class Tenant(models.Model):
    class Status(models.TextChoices):
        ACTIVE = "active"
        SUSPENDED = "suspended"

    class Language(models.TextChoices):
        ENGLISH = "en", "English"
        CHINESE = "zh-hans", "简体中文"

    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=64, unique=True)
    # Billing days and months are cut in this zone; storage is always UTC.
    timezone = models.CharField(max_length=64, default="UTC", validators=[validate_timezone])
    currency = models.CharField(max_length=3, default="USD", validators=[validate_currency])
    language = models.CharField(max_length=8, choices=Language.choices, default=Language.ENGLISH)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    # Which price plan rates this tenant's usage. Lives here so that a tenant is one row, but
    # only billing interprets it (the string reference keeps this layer import-free).
    price_plan = models.ForeignKey(
        "billing.PricePlan", null=True, blank=True, on_delete=models.PROTECT, related_name="tenants"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    # Rate limits over all of the tenant's keys (null: none). See RateLimits below.
    rpm_limit = models.PositiveIntegerField(null=True, blank=True)
    tpm_limit = models.PositiveBigIntegerField(null=True, blank=True)
    max_parallel_requests = models.PositiveIntegerField(null=True, blank=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(condition=models.Q(status__in=["active", "suspended"]), name="tenant_status_valid"),
            models.CheckConstraint(condition=RATE_LIMITS_POSITIVE, name="tenant_rate_limits_positive"),
        ]

    def __str__(self) -> str:
        return self.slug

    @property
    def is_active(self) -> bool:
        return self.status == self.Status.ACTIVE


class Membership(models.Model):
    class Role(models.TextChoices):
        OWNER = "owner"
        ADMIN = "admin"
        FINANCE = "finance"
        VIEWER = "viewer"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.VIEWER)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "tenant"], name="membership_unique_user_tenant")]

    def __str__(self) -> str:
        return f"{self.user} @ {self.tenant} ({self.role})"


class ApiKey(models.Model):
    """A tenant's credential. The secret is shown once; only prefix + HMAC-SHA256 are kept."""

    class Scope(models.TextChoices):
        INGEST = "ingest"
        READ = "read"

    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="api_keys")
    name = models.CharField(max_length=100, blank=True)
    prefix = models.CharField(max_length=16, unique=True)  # public part, used for lookup
    secret_hash = models.CharField(max_length=64)  # hex HMAC-SHA256 of the whole key
    scopes = models.JSONField(default=list)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    # Controls the key's owner sets (docs/security.md, "Rate limits and per-key controls"):
    # from expires_at on the key answers 403 like a revoked one; allowed_models holds exact
    # names and globs (empty: every model); allowed_networks holds CIDRs the key may be used
    # from as the caller (empty: anywhere); the limits are per minute, null meaning none.
    expires_at = models.DateTimeField(null=True, blank=True)
    allowed_models = models.JSONField(default=list, blank=True)
    allowed_networks = models.JSONField(default=list, blank=True)
    rpm_limit = models.PositiveIntegerField(null=True, blank=True)
    tpm_limit = models.PositiveBigIntegerField(null=True, blank=True)
    max_parallel_requests = models.PositiveIntegerField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [models.CheckConstraint(condition=RATE_LIMITS_POSITIVE, name="api_key_rate_limits_positive")]

    def __str__(self) -> str:
        return f"{self.name or self.prefix} ({self.tenant.slug})"

    @property
    def is_revoked(self) -> bool:
        return self.revoked_at is not None

    def allows_model(self, model: str) -> bool:
        """No list means every model; otherwise an exact name or a glob of the list must match."""
        return not self.allowed_models or any(fnmatch.fnmatchcase(model, p) for p in self.allowed_models)

    def is_expired(self, now: dt.datetime) -> bool:
        return self.expires_at is not None and self.expires_at <= now

    def has_scope(self, scope: str) -> bool:
        return scope in self.scopes


class ServiceToken(models.Model):
    """A platform credential for gateways: may act for any tenant's key."""

    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=16, unique=True)
    secret_hash = models.CharField(max_length=64)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return self.name

    @property
    def is_revoked(self) -> bool:
        return self.revoked_at is not None


class AuditLog(models.Model):
    """Who changed prices, balances, keys, tenants or invoices, and when. Append-only."""

    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # Who acted when there is no user: "cli", "service-token:<name>", "system".
    actor_label = models.CharField(max_length=200)
    tenant = models.ForeignKey(Tenant, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    action = models.CharField(max_length=64)  # e.g. "api_key.create", "price.import"
    target_type = models.CharField(max_length=64)
    target_id = models.CharField(max_length=64, blank=True)
    changes = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["tenant", "-created_at"])]

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M} {self.actor_label} {self.action}"
