"""Metering endpoints: thin. Parse, call one service or selector, render."""

import datetime as dt
import time
from typing import Any

from django.conf import settings
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import exceptions, status
from rest_framework.request import Request
from rest_framework.response import Response

from accounts.models import ApiKey
from api.ceiling import ingest_ceiling_wait
from api.errors import ApiError
from api.views import TenantAPIView, resolve_named_key
from billing.periods import TimeInvalid, day_period, typed_bounds, user_time
from infra.db_routing import replica_reads
from metering import metrics, selectors
from metering.api import schema
from metering.models import UsageEvent
from metering.services.event_store import NewEvent
from metering.services.ingest import BatchResult, KeyRejected, usage_record_batch
from metering.tokens import count_tokens

ERRORS = {400: schema.ErrorSerializer, 401: schema.ErrorSerializer, 403: schema.ErrorSerializer}
# A service token naming a key that does not exist (`?api_key=` or the event's `api_key`).
UNKNOWN_KEY = {404: OpenApiResponse(schema.ErrorSerializer, description="not_found, or unknown_api_key.")}
TOO_MANY = {
    429: OpenApiResponse(
        schema.ErrorSerializer,
        description="too_many_requests: this credential passed INGEST_CEILING_PER_MINUTE; retry after "
        "`Retry-After` seconds with the same request_id.",
    )
}
RETRY_AFTER = OpenApiParameter(
    "Retry-After",
    OpenApiTypes.INT,
    location=OpenApiParameter.HEADER,
    response=[429],
    description="Seconds until the ingest ceiling's window turns.",
)


def event_payload(event: UsageEvent | NewEvent, *, event_id: int, duplicate: bool) -> dict[str, Any]:
    """A stored event as the API shows it (an event stored just now is answered from memory)."""
    return {
        "id": event_id,
        "request_id": event.request_id,
        "duplicate": duplicate,
        "cost": str(event.cost) if event.cost is not None else None,
        "currency": event.currency,
        "priced": event.cost is not None,
        "model": event.model,
        "input_tokens": event.input_tokens,
        "output_tokens": event.output_tokens,
        "cached_input_tokens": event.cached_input_tokens,
        "cache_write_tokens": event.cache_write_tokens,
        "cache_write_1h_tokens": event.cache_write_1h_tokens,
        "reasoning_tokens": event.reasoning_tokens,
        "service_tier": event.service_tier,
        "timestamp": event.occurred_at,
        "received_at": event.received_at,
        "latency_ms": event.latency_ms,
        "ttft_ms": event.ttft_ms,  # the relay's calls only (docs/relay.md)
        "upstream": event.upstream,
        "api_key_id": event.api_key_id,
        "token_source": event.token_source,
        "encoding": event.encoding,
        "metadata": event.metadata,
        "flags": [flag for flag in event.flags.split(",") if flag],
    }


def _service_key(ref: str | int) -> ApiKey:
    try:
        return resolve_named_key(ref)
    except ApiError as exc:
        raise KeyRejected(exc.code, exc.message, exc.status_code) from None
    except exceptions.PermissionDenied as exc:  # revoked key or suspended tenant
        detail: dict[str, Any] = {"code": "forbidden", "message": str(exc.detail)}
        if isinstance(exc.detail, dict):
            detail = dict(exc.detail)
        raise KeyRejected(str(detail["code"]), str(detail["message"]), 403) from None


class IngestView(TenantAPIView):
    required_scope = "ingest"

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        super().initial(request, *args, **kwargs)
        principal = self.principal(request)
        if not principal.is_service:
            self.acting_key(request)  # the scope is checked before the body is read or judged
        wait = ingest_ceiling_wait(principal.label)
        if wait:
            metrics.INGEST_CEILING.inc()
            raise ApiError(
                status_code=429,
                code="too_many_requests",
                message=f"This credential sent more than {settings.INGEST_CEILING_PER_MINUTE} ingest requests "
                f"this minute. Retry after {wait} s with the same request_id (nothing is stored twice).",
                details={"retry_after": wait},
                headers={"Retry-After": str(wait)},
            )

    def record(self, request: Request, raw_events: list[Any]) -> BatchResult:
        principal = self.principal(request)
        if principal.is_service:
            return usage_record_batch(raw_events=raw_events, api_key=None, resolve_key=_service_key)
        key = self.acting_key(request)
        return usage_record_batch(raw_events=raw_events, api_key=key)


class EventView(IngestView):
    @extend_schema(
        operation_id="events_create",
        request=schema.EventInSerializer,
        responses={
            201: schema.EventOutSerializer,
            200: schema.EventOutSerializer,
            409: schema.ErrorSerializer,
            413: schema.ErrorSerializer,
            **ERRORS,
            **UNKNOWN_KEY,
            **TOO_MANY,
        },
        parameters=[RETRY_AFTER],
        summary="Record one usage event (idempotent on request_id).",
    )
    def post(self, request: Request) -> Response:
        started = time.perf_counter()
        if not isinstance(request.data, dict):
            raise ApiError(status_code=400, code="invalid_request", message="Send one event as a JSON object.")
        principal = self.principal(request)
        if principal.is_service:
            result = usage_record_batch(
                raw_events=[request.data], api_key=None, resolve_key=_service_key, with_events=True
            )
        else:
            result = usage_record_batch(raw_events=[request.data], api_key=self.acting_key(request), with_events=True)
        item = result.items[0]
        metrics.REQUEST_SECONDS.labels(endpoint="event").observe(time.perf_counter() - started)
        if item.status == "rejected":
            assert item.error is not None
            raise ApiError(
                status_code=item.http_status,
                code=item.error["code"],
                message=item.error["message"],
                details={"field": item.error["field"]},
            )
        assert item.event_id is not None
        event = result.events[item.event_id]
        payload = event_payload(event, event_id=item.event_id, duplicate=item.status == "duplicate")
        return Response(payload, status=item.http_status)


class EventDetailView(TenantAPIView):
    required_scope = "read"

    @extend_schema(
        operation_id="events_retrieve",
        parameters=[OpenApiParameter("api_key", str, description="Service tokens only: the tenant key to act for.")],
        responses={200: schema.EventOutSerializer, 404: schema.ErrorSerializer, **ERRORS},
        summary="One stored event of the caller's tenant (404 for any other tenant's id).",
    )
    def get(self, request: Request, event_id: int) -> Response:
        unknown = set(request.query_params.keys()) - {"api_key"}
        if unknown:
            raise ApiError(
                status_code=400, code="unknown_field", message=f"Unknown parameter(s): {', '.join(sorted(unknown))}."
            )
        key = self.acting_key(request, request.query_params.get("api_key"))
        event = selectors.event_for_tenant(tenant_id=key.tenant_id, event_id=event_id)
        if event is None:
            raise ApiError(status_code=404, code="not_found", message=f"No event {event_id} in this tenant.")
        return Response(event_payload(event, event_id=event.pk, duplicate=False))


class EventBatchView(IngestView):
    @extend_schema(
        operation_id="events_batch_create",
        request=schema.BatchInSerializer,
        responses={200: schema.BatchOutSerializer, 413: schema.ErrorSerializer, **ERRORS, **TOO_MANY},
        parameters=[RETRY_AFTER],
        summary="Record up to 1,000 events; per-item results in input order.",
    )
    def post(self, request: Request) -> Response:
        started = time.perf_counter()
        data = request.data
        events = data.get("events") if isinstance(data, dict) else data
        if not isinstance(events, list):
            raise ApiError(
                status_code=400,
                code="invalid_request",
                message='Send {"events": [...]} (or a JSON array of events).',
                details={"field": "events"},
            )
        if isinstance(data, dict) and data.keys() - {"events"}:
            unknown = ", ".join(sorted(data.keys() - {"events"}))
            raise ApiError(status_code=400, code="unknown_field", message=f"Unknown field(s): {unknown}.")
        limit = settings.INGEST_MAX_BATCH
        if not events:
            raise ApiError(status_code=400, code="empty_batch", message="The batch has no events.")
        if len(events) > limit:
            raise ApiError(
                status_code=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
                code="batch_too_large",
                message=f"A batch holds at most {limit} events; this one has {len(events)}.",
                details={"limit": limit, "received": len(events)},
            )
        if not self.principal(request).is_service:
            self.acting_key(request)  # scope check before any work
        result = self.record(request, events)
        metrics.REQUEST_SECONDS.labels(endpoint="batch").observe(time.perf_counter() - started)
        counts = result.counts()
        return Response(
            {
                "results": [item.as_dict() for item in result.items],
                "accepted": counts["accepted"],
                "duplicates": counts["duplicate"],
                "rejected": counts["rejected"],
            }
        )


class TokenizeView(TenantAPIView):
    required_scope = "ingest"

    @extend_schema(
        operation_id="tokenize",
        request=schema.TokenizeInSerializer,
        responses={200: schema.TokenizeOutSerializer, **ERRORS},
        summary="Count tokens with the model's tiktoken encoding (offline).",
    )
    def post(self, request: Request) -> Response:
        if not self.principal(request).is_service:
            self.acting_key(request)  # a tenant key needs the ingest scope
        data = request.data
        if not isinstance(data, dict):
            raise ApiError(status_code=400, code="invalid_request", message='Send {"model": ..., "text": ...}.')
        unknown = data.keys() - {"model", "text"}
        if unknown:
            raise ApiError(
                status_code=400, code="unknown_field", message=f"Unknown field(s): {', '.join(sorted(unknown))}."
            )
        model, text = data.get("model"), data.get("text")
        if not isinstance(model, str) or not model.strip() or len(model) > 200:
            raise ApiError(
                status_code=400,
                code="invalid_field",
                message="model must be a non-empty string.",
                details={"field": "model"},
            )
        if not isinstance(text, str):
            raise ApiError(
                status_code=400, code="invalid_field", message="text must be a string.", details={"field": "text"}
            )
        counted = count_tokens(model=model, text=text)
        return Response({"model": model, "tokens": counted.tokens, "encoding": counted.encoding})


def _parse_bound(value: str, tz_name: str, *, end: bool, now: dt.datetime) -> dt.datetime:
    """`from` / `to`: a tenant-local date (a whole day; `to` includes it) or an ISO 8601 time."""
    name = "to" if end else "from"
    try:
        bound = user_time(value, field=name, bounds=typed_bounds(now=now), shape="date_or_time", tz_name=tz_name)
    except TimeInvalid as exc:
        raise ApiError(status_code=400, code=exc.code, message=exc.message, details={"field": name}) from None
    if isinstance(bound, dt.datetime):
        return bound
    period = day_period(bound, tz_name)
    return period.end if end else period.start


MAX_USAGE_RANGE = dt.timedelta(days=400)


class UsageView(TenantAPIView):
    required_scope = "read"

    @extend_schema(
        operation_id="usage",
        parameters=[
            OpenApiParameter("from", str, description="Date (tenant-local) or ISO 8601 time; default 30 days ago."),
            OpenApiParameter("to", str, description="Date (included) or ISO 8601 time (excluded); default now."),
            OpenApiParameter("group_by", str, enum=list(selectors.GROUPINGS), description="Default day."),
            OpenApiParameter("api_key", str, description="Service tokens only: the tenant key to report for."),
        ],
        responses={200: schema.UsageOutSerializer, **ERRORS, **UNKNOWN_KEY},
        summary="Aggregated usage of the caller's tenant.",
    )
    def get(self, request: Request) -> Response:
        params = request.query_params
        unknown = set(params.keys()) - {"from", "to", "group_by", "api_key"}
        if unknown:
            raise ApiError(
                status_code=400, code="unknown_field", message=f"Unknown parameter(s): {', '.join(sorted(unknown))}."
            )
        key = self.acting_key(request, params.get("api_key"))
        tenant = key.tenant
        group_by = params.get("group_by", "day")
        if group_by not in selectors.GROUPINGS:
            raise ApiError(
                status_code=400,
                code="invalid_field",
                message=f"group_by must be one of {', '.join(selectors.GROUPINGS)}.",
                details={"field": "group_by"},
            )
        now = timezone.now()
        end = _parse_bound(params["to"], tenant.timezone, end=True, now=now) if "to" in params else now
        start = (
            _parse_bound(params["from"], tenant.timezone, end=False, now=now)
            if "from" in params
            else end - dt.timedelta(days=30)
        )
        if start >= end:
            raise ApiError(status_code=400, code="invalid_range", message="from must be before to.")
        if end - start > MAX_USAGE_RANGE:
            raise ApiError(status_code=400, code="invalid_range", message="The range may span at most 400 days.")
        with replica_reads():  # a report: the replica when configured (the key was checked on the primary)
            rows = selectors.usage_aggregate(
                tenant_id=tenant.pk, tz_name=tenant.timezone, start=start, end=end, group_by=group_by
            )
        for row in rows:
            row["cost"] = str(row["cost"])
        currency = tenant.price_plan.currency if tenant.price_plan is not None else tenant.currency
        return Response({"results": rows, "currency": currency, "group_by": group_by, "start": start, "end": end})
