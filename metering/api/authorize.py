"""POST /api/v1/authorize and GET /api/v1/balance: thin views over the authorize service and
billing's balance selectors. The serializers here document the shapes in OpenAPI only; the
request shapes come from the input contracts (metering/contracts.py) that `_parse` reads."""

from decimal import Decimal
from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from accounts.models import ApiKey, Tenant
from api.errors import ApiError, error_body
from api.views import TenantAPIView
from billing import selectors as billing_selectors
from billing.money import format_ledger_amount
from metering.api import schema
from metering.contracts import AUTHORIZE, BALANCE, InputField, choice_error
from metering.services.authorize import AuthorizeRefused, authorize_request

# The authorize contract's bounds, read once (metering/contracts.py; numbers in metering/limits.py).
_MODEL_MAX = AUTHORIZE["model"].length
_REQUEST_ID_MAX = AUTHORIZE["request_id"].length
_HOLD_DEFAULT = AUTHORIZE["hold"].default
_TIER_DEFAULT = AUTHORIZE["service_tier"].choices[0]


# --- OpenAPI shapes ------------------------------------------------------------------------------


AuthorizeInSerializer = schema.serializer_for(AUTHORIZE)
BalanceQuerySerializer = schema.serializer_for(BALANCE)


class QuotaStateSerializer(serializers.Serializer[Any]):
    id = serializers.IntegerField()
    metric = serializers.ChoiceField(choices=["tokens", "money"])
    window = serializers.ChoiceField(choices=["day", "month", "lifetime"])
    enforcement = serializers.ChoiceField(choices=["hard", "soft"])
    scope = serializers.ChoiceField(choices=["tenant", "api_key"])
    api_key_id = serializers.IntegerField(allow_null=True)
    limit = serializers.CharField(help_text="Tokens (a JSON integer) or money (a decimal string).")
    used = serializers.CharField(help_text="Settled usage in the current window.")
    held = serializers.CharField(help_text="Reserved by open holds in the current window.")
    remaining = serializers.CharField()
    period_start = serializers.DateTimeField(allow_null=True)
    period_end = serializers.DateTimeField(allow_null=True, help_text="Excluded; null for lifetime.")


class HoldOutSerializer(serializers.Serializer[Any]):
    id = serializers.IntegerField()
    amount = serializers.CharField()
    expires_at = serializers.DateTimeField()
    created = serializers.BooleanField(help_text="False when an earlier call with this request_id placed it.")


class AuthorizeOutSerializer(serializers.Serializer[Any]):
    allowed = serializers.BooleanField()
    tenant = serializers.CharField(help_text="The tenant's slug.")
    api_key_id = serializers.IntegerField()
    balance = serializers.CharField(help_text="Prepaid balance after this request's hold (decimal string).")
    currency = serializers.CharField()
    estimated_cost = serializers.CharField()
    estimated_tokens = serializers.IntegerField()
    priced = serializers.BooleanField()
    request_id = serializers.CharField(required=False)
    hold_id = serializers.IntegerField(required=False)
    hold = HoldOutSerializer(required=False)
    quotas = QuotaStateSerializer(many=True)


class OpenHoldSerializer(serializers.Serializer[Any]):
    id = serializers.IntegerField()
    request_id = serializers.CharField()
    api_key_id = serializers.IntegerField()
    model = serializers.CharField()
    amount = serializers.CharField()
    estimated_tokens = serializers.IntegerField()
    created_at = serializers.DateTimeField()
    expires_at = serializers.DateTimeField()


class LimitsSerializer(serializers.Serializer[Any]):
    requests_per_minute = serializers.IntegerField(allow_null=True)
    tokens_per_minute = serializers.IntegerField(allow_null=True)
    max_parallel_requests = serializers.IntegerField(allow_null=True)


class RateLimitsSerializer(serializers.Serializer[Any]):
    api_key = LimitsSerializer()
    tenant = LimitsSerializer()


class BalanceOutSerializer(serializers.Serializer[Any]):
    tenant = serializers.CharField()
    balance = serializers.CharField(help_text="sum(ledger): prepaid money net of open holds.")
    currency = serializers.CharField()
    held = serializers.CharField(help_text="Total reserved by open holds (already out of balance).")
    holds_count = serializers.IntegerField()
    holds = OpenHoldSerializer(many=True, help_text="Open holds, oldest first (at most 100).")
    quotas = QuotaStateSerializer(many=True)
    rate_limits = RateLimitsSerializer(help_text="The configured rate limits of the acting key and its tenant.")


_402 = OpenApiResponse(
    response=schema.ErrorSerializer,
    description=(
        "Payment required: the prepaid balance or a hard quota does not cover the estimate. "
        "`error.code` is `insufficient_balance` or `quota_exceeded`; `error.details.limit` names the "
        "limit (`balance` or `quota`, with quota_id, metric, window, scope), `remaining`, `requested` "
        "and `currency`. A day or month quota sends `Retry-After` (seconds until its window resets)."
    ),
    examples=[
        OpenApiExample(
            "insufficient_balance",
            value=error_body(
                "insufficient_balance",
                "The prepaid balance (0.01 USD) does not cover this request's estimate (0.0125 USD). "
                "Top up to continue.",
                {"limit": "balance", "balance": "0.01", "remaining": "0.01", "requested": "0.0125", "currency": "USD"},
            ),
        ),
        OpenApiExample(
            "quota_exceeded",
            value=error_body(
                "quota_exceeded",
                "The hard day tokens quota of this API key (100000 tokens) has 500 left; "
                "this request needs up to 1500.",
                {
                    "limit": "quota",
                    "quota_id": 3,
                    "metric": "tokens",
                    "window": "day",
                    "scope": "api_key",
                    "api_key_id": 7,
                    "quota_limit": 100000,
                    "used": 99000,
                    "held": 500,
                    "remaining": 500,
                    "requested": 1500,
                    "currency": "USD",
                    "period_start": "2026-01-31T16:00:00Z",
                    "period_end": "2026-02-01T16:00:00Z",
                },
            ),
        ),
    ],
)
_RETRY_AFTER = OpenApiParameter(
    "Retry-After",
    OpenApiTypes.INT,
    location=OpenApiParameter.HEADER,
    response=[402, 429],
    description="On quota_exceeded for a day or month quota: seconds until the window resets; on "
    "rate_limited: seconds until a retry can pass.",
)


# --- Views -----------------------------------------------------------------------------------------


def _invalid(field: str, message: str, code: str = "invalid_field") -> ApiError:
    return ApiError(status_code=400, code=code, message=message, details={"field": field})


def _whole(data: dict[str, Any], spec: InputField) -> int:
    name, value = spec.name, data.get(spec.name)
    if value is None and spec.required:
        raise _invalid(name, f"{name} is required.", code="missing_field")
    if type(value) is not int:
        kind = "a boolean" if isinstance(value, bool) else f"a {type(value).__name__}"
        raise _invalid(name, f"{name} must be a whole number of tokens, not {kind}.")
    low, high = spec.bounds
    if not low <= value <= high:
        raise _invalid(name, f"{name} must be between {low} and {high}, got {value}.")
    return value


def _parse(data: Any) -> dict[str, Any]:
    """The authorize body, checked against the AUTHORIZE contract; an ApiError names what is wrong."""
    if not isinstance(data, dict):
        raise ApiError(status_code=400, code="invalid_request", message="Send the request as a JSON object.")
    unknown = data.keys() - AUTHORIZE.names
    if unknown:
        raise ApiError(
            status_code=400, code="unknown_field", message=f"Unknown field(s): {', '.join(sorted(unknown))}."
        )
    model = data.get("model")
    if not isinstance(model, str) or not model.strip() or len(model) > _MODEL_MAX:
        raise _invalid("model", f"model must be a non-empty string of at most {_MODEL_MAX} characters.")
    request_id = data.get("request_id")
    if request_id is not None and (
        not isinstance(request_id, str)
        or not 1 <= len(request_id) <= _REQUEST_ID_MAX
        or not request_id.isprintable()
        or request_id != request_id.strip()
    ):
        raise _invalid(
            "request_id", f"request_id must be 1 to {_REQUEST_ID_MAX} printable characters, no outer spaces."
        )
    hold = data.get("hold", _HOLD_DEFAULT)
    if not isinstance(hold, bool):
        raise _invalid("hold", "hold must be true or false.")
    api_key = data.get("api_key")
    if isinstance(api_key, bool) or (api_key is not None and not isinstance(api_key, str | int)):
        raise _invalid("api_key", "api_key must be the customer's key or its api_key_id.")
    service_tier = data.get("service_tier", _TIER_DEFAULT)
    wrong_tier = choice_error(AUTHORIZE["service_tier"], service_tier)
    if wrong_tier is not None:
        raise _invalid("service_tier", wrong_tier)
    return {
        "service_tier": service_tier,
        "model": model,
        "estimated_input_tokens": _whole(data, AUTHORIZE["estimated_input_tokens"]),
        "max_output_tokens": _whole(data, AUTHORIZE["max_output_tokens"]),
        "request_id": request_id,
        "hold": hold,
        "api_key": api_key,
    }


class AuthorizeView(TenantAPIView):
    """A tenant key authorizes itself (scope ingest); a service token names the customer's key."""

    required_scope = "ingest"

    def customer_key(self, request: Request, named: str | int | None) -> ApiKey:
        try:
            return self.acting_key(request, named)
        except ApiError as exc:
            if exc.code == "unknown_api_key":  # the customer's key is what is being verified: 401
                raise ApiError(status_code=401, code="invalid_api_key", message="Unknown API key.") from None
            raise

    @extend_schema(
        operation_id="authorize",
        request=AuthorizeInSerializer,
        responses={
            200: AuthorizeOutSerializer,
            400: schema.ErrorSerializer,
            401: OpenApiResponse(schema.ErrorSerializer, description="Unknown credential or customer key."),
            402: _402,
            403: OpenApiResponse(schema.ErrorSerializer, description="Revoked key or suspended tenant."),
            409: OpenApiResponse(schema.ErrorSerializer, description="request_id already used by a closed hold."),
            422: OpenApiResponse(schema.ErrorSerializer, description="model_not_priced: no price, plan refuses."),
            429: OpenApiResponse(
                schema.ErrorSerializer,
                description="rate_limited: the key's or tenant's requests, tokens or parallel requests per "
                "minute; `Retry-After` says when to retry.",
            ),
            503: OpenApiResponse(schema.ErrorSerializer, description="balance_unavailable: the store failed."),
        },
        parameters=[_RETRY_AFTER],
        summary="May this key spend now? Checks balance and hard quotas; optionally holds the estimate.",
    )
    def post(self, request: Request) -> Response:
        body = _parse(request.data)
        key = self.customer_key(request, body["api_key"])
        try:
            result = authorize_request(
                api_key=key,
                model=body["model"],
                estimated_input_tokens=body["estimated_input_tokens"],
                max_output_tokens=body["max_output_tokens"],
                request_id=body["request_id"],
                hold=body["hold"],
                service_tier=body["service_tier"],
            )
        except AuthorizeRefused as exc:
            return Response(
                error_body(exc.code, exc.message, exc.details or None), status=exc.status, headers=exc.headers
            )
        return Response(result.as_dict(), headers=result.headers)


class BalanceView(TenantAPIView):
    required_scope = "read"

    @extend_schema(
        operation_id="balance",
        parameters=[BalanceQuerySerializer],
        responses={
            200: BalanceOutSerializer,
            400: schema.ErrorSerializer,
            401: schema.ErrorSerializer,
            403: OpenApiResponse(schema.ErrorSerializer, description="Scope, revoked key or suspended tenant."),
            404: OpenApiResponse(schema.ErrorSerializer, description="unknown_api_key (service tokens)."),
        },
        summary="The caller's tenant: prepaid balance, open holds and quota usage (from the ledger).",
    )
    def get(self, request: Request) -> Response:
        unknown = set(request.query_params.keys()) - BALANCE.names
        if unknown:
            raise ApiError(
                status_code=400, code="unknown_field", message=f"Unknown parameter(s): {', '.join(sorted(unknown))}."
            )
        key = self.acting_key(request, request.query_params.get("api_key"))
        tenant = key.tenant
        summary = billing_selectors.balance_summary(tenant_id=tenant.pk)
        currency = summary.currency

        def money(value: Decimal) -> str:
            return format_ledger_amount(value, currency)

        return Response(
            {
                "tenant": tenant.slug,
                "balance": money(summary.balance),
                "currency": currency,
                "held": money(summary.held),
                "holds_count": summary.holds_count,
                "holds": [
                    {
                        "id": hold.pk,
                        "request_id": hold.request_id,
                        "api_key_id": hold.api_key_id,
                        "model": hold.model,
                        "amount": money(hold.amount),
                        "estimated_tokens": hold.estimated_tokens,
                        "created_at": hold.created_at,
                        "expires_at": hold.expires_at,
                    }
                    for hold in summary.holds
                ],
                "quotas": [quota.as_dict() for quota in summary.quotas],
                "rate_limits": {"api_key": _limits_of(key), "tenant": _limits_of(tenant)},
            }
        )


def _limits_of(row: ApiKey | Tenant) -> dict[str, Any]:
    """The configured rate limits of a key or tenant (null: none); docs/security.md."""
    return {
        "requests_per_minute": row.rpm_limit,
        "tokens_per_minute": row.tpm_limit,
        "max_parallel_requests": row.max_parallel_requests,
    }


__all__ = ["AuthorizeView", "BalanceView"]
