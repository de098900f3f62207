"""GET /api/v1/prices: what the caller's plan charges, per token kind, per service and context tier."""

from decimal import Decimal
from typing import Any

from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from api.errors import ApiError
from api.views import TenantAPIView
from billing import selectors as billing_selectors
from billing.periods import TimeInvalid, typed_bounds, user_time
from billing.rating import TOKEN_KINDS
from metering.api import schema

_PARAMS = frozenset({"at", "api_key"})
_THOUSAND = Decimal(1000)


def _per_k(per_mtok: Decimal) -> str:
    return f"{per_mtok / _THOUSAND:.15f}"


def _rates(rates: dict[str, Decimal]) -> dict[str, dict[str, str]]:
    return {
        "per_1m": {kind: f"{rates[kind]:.12f}" for kind in TOKEN_KINDS},
        "per_1k": {kind: _per_k(rates[kind]) for kind in TOKEN_KINDS},
    }


def price_payload(price: billing_selectors.TenantPrice) -> dict[str, Any]:
    tier = None
    if price.tier_rates is not None:
        tier = {"above_input_tokens": price.tier_threshold, **_rates(price.tier_rates)}
    return {
        "model": price.model_pattern,
        "override": price.override,
        "service_tier": price.service_tier,
        "effective_from": price.effective_from,
        **_rates(price.rates),
        "context_tier": tier,
        "max_input_tokens": price.max_input_tokens,
        "max_output_tokens": price.max_output_tokens,
    }


class _RatesSerializer(serializers.Serializer[Any]):
    per_1m = serializers.DictField(
        child=serializers.CharField(), help_text=f"Token kind ({', '.join(TOKEN_KINDS)}) -> price per 1M tokens."
    )
    per_1k = serializers.DictField(child=serializers.CharField(), help_text="The same per 1,000 tokens.")


class _ContextTierSerializer(_RatesSerializer):
    above_input_tokens = serializers.IntegerField(
        help_text="A request with more input tokens than this pays these rates for all its tokens."
    )


class PriceOutSerializer(_RatesSerializer):
    model = serializers.CharField(help_text="A model name or a glob (gpt-4o*).")
    override = serializers.BooleanField(help_text="Your own price, in place of the plan's.")
    service_tier = serializers.ChoiceField(choices=["default", "priority", "flex", "batch"])
    effective_from = serializers.DateTimeField()
    context_tier = _ContextTierSerializer(allow_null=True)
    max_input_tokens = serializers.IntegerField(allow_null=True)
    max_output_tokens = serializers.IntegerField(allow_null=True)


class PricesOutSerializer(serializers.Serializer[Any]):
    plan = serializers.CharField(allow_null=True)
    plan_version = serializers.IntegerField(allow_null=True, help_text="Moves whenever the plan's prices change.")
    currency = serializers.CharField()
    at = serializers.DateTimeField()
    prices = PriceOutSerializer(many=True)


class PricesView(TenantAPIView):
    required_scope = "read"

    @extend_schema(
        operation_id="prices",
        parameters=[
            OpenApiParameter(
                "at", str, description="ISO 8601 time with a zone: the prices in force then (default now)."
            ),
            OpenApiParameter("api_key", str, description="Service tokens only: the tenant key to act for."),
        ],
        responses={
            200: PricesOutSerializer,
            400: schema.ErrorSerializer,
            401: schema.ErrorSerializer,
            403: OpenApiResponse(schema.ErrorSerializer, description="Scope, revoked key or suspended tenant."),
            404: OpenApiResponse(schema.ErrorSerializer, description="Service tokens: unknown_api_key."),
        },
        summary="The prices of the caller's plan: per token kind, per 1M and 1K tokens, by service and context tier.",
    )
    def get(self, request: Request) -> Response:
        params = request.query_params
        unknown = set(params.keys()) - _PARAMS
        if unknown:
            raise ApiError(
                status_code=400, code="unknown_field", message=f"Unknown parameter(s): {', '.join(sorted(unknown))}."
            )
        now = timezone.now()
        at = now
        if "at" in params:
            try:
                at = user_time(params["at"], field="at", bounds=typed_bounds(now=now))
            except TimeInvalid as exc:
                raise ApiError(status_code=400, code=exc.code, message=exc.message, details={"field": "at"}) from None
        tenant = self.acting_key(request, params.get("api_key")).tenant
        plan = tenant.price_plan
        prices = (
            billing_selectors.tenant_prices(tenant_id=tenant.pk, plan_id=plan.pk, at=at) if plan is not None else []
        )
        return Response(
            {
                "plan": plan.slug if plan is not None else None,
                "plan_version": plan.version if plan is not None else None,
                "currency": plan.currency if plan is not None else tenant.currency,
                "at": at,
                "prices": [price_payload(price) for price in prices],
            }
        )
