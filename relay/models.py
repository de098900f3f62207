"""Upstreams of the relay (docs/relay.md) and the per-tenant content setting."""

import fnmatch

from django.db import models


class Upstream(models.Model):
    """An OpenAI-compatible provider endpoint that operators configure (never tenants).

    `model_map` maps each served model (an exact name or a glob, as clients name it) to the
    upstream's own name for it ("" keeps the client's name). Among the upstreams serving a
    model, the lowest `priority` is tried first, `weight` spreads load inside one priority;
    the next one is tried on a connection error, a 5xx or a 429 before any byte reached the client.
    """

    name = models.SlugField(max_length=100, unique=True)
    base_url = models.CharField(max_length=500)  # e.g. https://api.openai.com/v1 (with /v1)
    api_key_encrypted = models.TextField(blank=True, default="")  # Fernet token (relay.crypto)
    model_map = models.JSONField(default=dict, blank=True)  # {"gpt-4o*": "", "fast": "gpt-4o-mini"}
    priority = models.PositiveSmallIntegerField(default=100)  # lower first
    weight = models.PositiveSmallIntegerField(default=1)
    connect_timeout_ms = models.PositiveIntegerField(default=5_000)
    first_byte_timeout_ms = models.PositiveIntegerField(default=60_000)  # headers and first chunk
    total_timeout_ms = models.PositiveIntegerField(default=600_000)
    enabled = models.BooleanField(default=True)
    # What the upstream charges us, for margin reports: a plan of the price book (optional).
    cost_plan = models.ForeignKey(
        "billing.PricePlan", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["priority", "name"]
        constraints = [
            models.CheckConstraint(condition=models.Q(weight__gte=1), name="relay_upstream_weight_positive"),
            models.CheckConstraint(
                condition=models.Q(connect_timeout_ms__gte=1, first_byte_timeout_ms__gte=1, total_timeout_ms__gte=1),
                name="relay_upstream_timeouts_positive",
            ),
        ]

    def __str__(self) -> str:
        return self.name

    def upstream_model(self, model: str) -> str | None:
        """The upstream's name for `model`, or None when this upstream does not serve it."""
        return mapped_model(self.model_map, model)


def mapped_model(model_map: dict[str, str], model: str) -> str | None:
    """The name a model map gives `model` (exact names first, then globs in order; an empty
    target keeps the name), or None when the map does not serve it."""
    if model in model_map:
        return model_map[model] or model
    for pattern, target in model_map.items():
        if fnmatch.fnmatchcase(model, pattern):
            return target or model
    return None


class TenantRelaySettings(models.Model):
    """Per-tenant relay switches that only operators set (admin)."""

    tenant = models.OneToOneField("accounts.Tenant", on_delete=models.CASCADE, related_name="+")
    # Off by default: the relay keeps token counts only. On: each call's request body and the
    # text delivered are kept in RelayTranscript (docs/relay.md, "What is stored").
    store_content = models.BooleanField(default=False)

    def __str__(self) -> str:
        return f"relay settings of tenant {self.tenant_id}"


class RelayTranscript(models.Model):
    """The request and the delivered text of one relayed call, kept only with store_content."""

    tenant = models.ForeignKey("accounts.Tenant", on_delete=models.CASCADE, related_name="+")
    request_id = models.CharField(max_length=128)
    endpoint = models.CharField(max_length=32)
    request = models.JSONField()
    response_text = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["tenant", "request_id"], name="relay_transcript_unique")]

    def __str__(self) -> str:
        return self.request_id
