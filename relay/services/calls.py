"""The relay's business steps, synchronous (the gateway runs them on its thread pool).

`relay_prepare` authenticates the key, checks its controls, finds the upstreams and estimates
the call; `relay_admit_many` places the holds of a group of prepared calls (relay/admitter.py
groups them; `relay_admit` does both for one call alone); `relay_record_batch` records usage
through metering's ingest service (the same exactly-once key, the same settlement of the hold);
`relay_release` gives the hold back when the call failed before any output.
"""

import contextlib
import dataclasses
import functools
import hashlib
import logging
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.http import HttpRequest
from django.utils import timezone
from rest_framework import exceptions

from accounts import selectors as account_selectors
from accounts import services as account_services
from accounts.authentication import ensure_key_usable, ensure_network_allowed
from accounts.models import ApiKey
from billing import selectors as billing_selectors
from billing.models import ServiceTier
from billing.services.balances import BalanceUnavailable
from billing.services.holds import hold_release
from infra.cache import BoundedCache
from metering.services.authorize import AuthorizeRefused, PreparedAuthorization, authorize_holds, authorize_prepare
from metering.services.ingest import ACCEPTED, DUPLICATE, RelayFacts, usage_record_batch
from relay.errors import RelayError
from relay.models import RelayTranscript, TenantRelaySettings
from relay.services import counting, routing

logger = logging.getLogger("relay")

CHAT, EMBEDDINGS, RESPONSES = "chat.completions", "embeddings", "responses"


@dataclass
class Admitted:
    api_key: ApiKey
    request_id: str
    endpoint: str
    model: str
    input_tokens: int  # estimated with tiktoken (the counted fallback's input too)
    max_output_tokens: int
    candidates: list[tuple[routing.Route, str]]
    store_content: bool
    headers: dict[str, str] = field(default_factory=dict)  # x-ratelimit-*
    service_tier: str = ServiceTier.DEFAULT  # the price row (billing.models.ServiceTier)


@dataclass
class Usage:
    input_tokens: int
    output_tokens: int
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    encoding: str = ""  # set when counted by the relay


def service_tier_of(body: dict[str, Any]) -> str:
    """The price row of a call: OpenAI's `service_tier` when it names one of ours (`priority`,
    `flex`); `auto`, `default`, `scale` or none are the default tier (docs/relay.md)."""
    asked = body.get("service_tier")
    return asked if asked in (ServiceTier.PRIORITY, ServiceTier.FLEX) else ServiceTier.DEFAULT


_store_content: BoundedCache[bool] = BoundedCache(
    "relay_store_content", max_size=10_000, ttl=lambda: settings.RELAY_ROUTES_CACHE_SECONDS
)


# Keys found by their secret, for RELAY_KEY_CACHE_SECONDS: a burst of calls with one key makes
# one query, not one each (they queued on the database before their holds). Keyed by the
# secret's SHA-256, never the secret; unknown secrets are not kept (a new key works at once).
_keys: BoundedCache[ApiKey] = BoundedCache(
    "relay_api_keys", max_size=10_000, ttl=lambda: settings.RELAY_KEY_CACHE_SECONDS
)


def _bearer_secret(authorization: str) -> str:
    """The secret of an `Authorization: Bearer <secret>` header; "" for any other header."""
    scheme, _, raw = authorization.partition(" ")
    return raw.strip() if scheme.lower() == "bearer" else ""


def _cache_key(raw: str) -> bytes:
    return hashlib.sha256(raw.encode()).digest()


def _key_by_secret(raw: str) -> ApiKey | None:
    digest = _cache_key(raw)
    key = _keys.get(digest)
    if key is None:
        key = account_selectors.api_key_by_secret(raw)
        if key is not None and settings.RELAY_KEY_CACHE_SECONDS > 0:
            _keys.set(digest, key)
    return key


def cached_tenant_id(authorization: str) -> int | None:
    """The tenant of the bearer key when this process has it cached, else None: no I/O, so the
    gateway may ask on its event loop (to prepare and hold a lone call in one hop)."""
    raw = _bearer_secret(authorization)
    key = _keys.peek(_cache_key(raw)) if raw else None
    return key.tenant_id if key is not None else None


def _authenticate(authorization: str, client: tuple[str, str]) -> ApiKey:
    raw = _bearer_secret(authorization)
    if not raw:
        raise RelayError(
            401,
            "You didn't provide an API key. Send it as 'Authorization: Bearer <key>'.",
            code="invalid_api_key",
        )
    key = _key_by_secret(raw)
    if key is None:
        raise RelayError(401, "Incorrect API key provided.", code="invalid_api_key")
    request = HttpRequest()
    request.META = {"REMOTE_ADDR": client[0], "HTTP_X_FORWARDED_FOR": client[1]}
    try:
        ensure_key_usable(key)
        ensure_network_allowed(key, request)  # type: ignore[arg-type]  # reads request.META only
    except exceptions.PermissionDenied as exc:
        detail: Any = exc.detail
        raise RelayError(
            403, str(detail.get("message", "")), type="permission_error", code=str(detail.get("code", ""))
        ) from None
    if not key.has_scope(ApiKey.Scope.INGEST):
        raise RelayError(
            403, "This API key lacks the 'ingest' scope.", type="permission_error", code="insufficient_scope"
        )
    account_services.credential_touch(credential=key)
    return key


def relay_authenticate(*, authorization: str, client: tuple[str, str]) -> ApiKey:
    return _authenticate(authorization, client)


def relay_models(*, api_key: ApiKey) -> list[str]:
    """The exact model names the upstreams serve and this key may use."""
    names = {pattern for route in routing.routes_table() for pattern in route.patterns if not _is_glob(pattern)}
    return sorted(name for name in names if api_key.allows_model(name))


def _is_glob(pattern: str) -> bool:
    return any(char in pattern for char in "*?[")


def _output_limit(key: ApiKey, model: str, service_tier: str) -> int | None:
    """The max_output_tokens of the price the call will pay (billing's price book, cached)."""
    book = billing_selectors.price_book_for_tenant(tenant=key.tenant, models={model})
    terms = book.terms_for(model, timezone.now(), service_tier) if book is not None else None
    return terms.max_output_tokens if terms is not None else None


def _estimate(
    endpoint: str, model: str, body: dict[str, Any], *, tenant_id: int, output_limit: int | None
) -> tuple[int, int, int]:
    """(input tokens, output tokens of one choice, choices): the call may produce their product."""
    ceiling = settings.RELAY_MAX_OUTPUT_TOKENS
    # A call that names no maximum may produce up to the model's own limit, never more.
    default = min(settings.RELAY_DEFAULT_MAX_OUTPUT_TOKENS, output_limit or ceiling)
    if endpoint == CHAT:
        inputs = counting.chat_input_tokens(model, body, tenant_id=tenant_id)
        return inputs, *counting.max_output(body, ("max_completion_tokens", "max_tokens"), default, ceiling)
    if endpoint == RESPONSES:
        inputs = counting.responses_input_tokens(model, body, tenant_id=tenant_id)
        return inputs, *counting.max_output({**body, "n": 1}, ("max_output_tokens",), default, ceiling)
    return counting.embeddings_input_tokens(model, body), 0, 1


@dataclass
class Prepared:
    """A call past the checks that need no balance: the hold is all that is left to decide."""

    call: Admitted  # without the hold's headers and the tenant's content switch yet
    authorization: PreparedAuthorization

    @property
    def tenant_id(self) -> int:
        return self.call.api_key.tenant_id

    @property
    def request_id(self) -> str:
        return self.call.request_id


def relay_prepare(
    *, authorization: str, client: tuple[str, str], endpoint: str, body: dict[str, Any], request_id: str
) -> Prepared:
    """Everything before the hold, or RelayError (401, 403, 404, 400, 422)."""
    key = _authenticate(authorization, client)
    model = body.get("model")
    if not isinstance(model, str) or not model or len(model) > 200:
        raise RelayError(400, "model must be a model name (a string of 1 to 200 characters).", param="model")
    if not key.allows_model(model):
        raise RelayError(
            403, f"This API key may not use model {model!r}.", type="permission_error", code="model_not_allowed",
            param="model",
        )  # fmt: skip
    candidates = routing.candidates(routing.routes_table(), model)
    if not candidates:
        raise RelayError(
            404, f"The model {model!r} does not exist or you do not have access to it.", code="model_not_found",
            param="model",
        )  # fmt: skip
    service_tier = service_tier_of(body)
    try:
        input_tokens, per_choice, choices = _estimate(
            endpoint, model, body, tenant_id=key.tenant_id, output_limit=_output_limit(key, model, service_tier)
        )
    except counting.BadRequest as exc:
        raise RelayError(400, exc.message, param=exc.param, code=exc.code) from None
    max_output = per_choice * choices
    try:
        prepared = authorize_prepare(
            api_key=key,
            model=model,
            estimated_input_tokens=input_tokens,
            max_output_tokens=max_output,
            output_choices=choices,
            request_id=request_id,
            hold=True,
            service_tier=service_tier,
        )
    except AuthorizeRefused as exc:
        raise _refusal(exc) from None
    call = Admitted(key, request_id, endpoint, model, input_tokens, max_output, candidates, False, {}, service_tier)
    return Prepared(call, prepared)


def relay_prepare_many(*, facts: list[dict[str, Any]]) -> list[Prepared | Exception]:
    """`relay_prepare(**one)` for each call of a batch (one thread-pool hop for a burst's calls):
    each call gets its own result or its own error, never another call's."""
    answers: list[Prepared | Exception] = []
    for one in facts:
        try:
            answers.append(relay_prepare(**one))
        except Exception as exc:  # noqa: BLE001 - the call's own answer (RelayError) or failure
            answers.append(exc)
    return answers


def _stores_content(tenant_id: int) -> bool:
    return TenantRelaySettings.objects.filter(tenant_id=tenant_id, store_content=True).exists()


def relay_admit_many(*, prepared: list[Prepared]) -> list[Admitted | RelayError]:
    """Hold for many prepared calls at once (one group commit per tenant, metering's
    authorize_holds): per call its admission, or the RelayError to answer (402, 429, 503)."""
    try:
        answers = authorize_holds([call.authorization for call in prepared])
    except Exception as exc:
        # Part of the group may hold already (a later tenant's group, or a retry alone, failed):
        # give those back now rather than at expiry, then answer every call 503.
        if not isinstance(exc, BalanceUnavailable):
            logger.exception("relay_admit_failed", extra={"calls": len(prepared)})
        for call in prepared:
            with contextlib.suppress(Exception):
                hold_release(tenant_id=call.tenant_id, request_id=call.request_id)
        return [
            RelayError(
                503, "The balance store is unavailable; try again.", type="server_error", code="balance_unavailable"
            )
            for _ in prepared
        ]
    admitted: list[Admitted | RelayError] = []
    for call, answer in zip(prepared, answers, strict=True):
        if isinstance(answer, AuthorizeRefused):
            admitted.append(_refusal(answer))
            continue
        store = _store_content.get_or_load(call.tenant_id, functools.partial(_stores_content, call.tenant_id))
        admitted.append(dataclasses.replace(call.call, store_content=store, headers=answer.headers))
    return admitted


def relay_admit(
    *, authorization: str, client: tuple[str, str], endpoint: str, body: dict[str, Any], request_id: str
) -> Admitted:
    """Admit one call or raise RelayError (401, 403, 404, 400, 402, 429, 422, 503)."""
    prepared = relay_prepare(
        authorization=authorization, client=client, endpoint=endpoint, body=body, request_id=request_id
    )
    answer = relay_admit_many(prepared=[prepared])[0]
    if isinstance(answer, RelayError):
        raise answer
    return answer


def _refusal(exc: AuthorizeRefused) -> RelayError:
    headers = {name: str(value) for name, value in exc.headers.items()}
    if exc.status == 402:
        return RelayError(402, exc.message, type="insufficient_quota", code="insufficient_quota", headers=headers)
    if exc.status == 429:
        return RelayError(429, exc.message, type="requests", code="rate_limit_exceeded", headers=headers)
    if exc.status == 403:
        return RelayError(403, exc.message, type="permission_error", code=exc.code, param="model", headers=headers)
    if exc.code == "context_length_exceeded":  # the price's max_input_tokens / max_output_tokens
        param = "messages" if exc.details.get("field") == "estimated_input_tokens" else "max_tokens"
        return RelayError(400, exc.message, code=exc.code, param=param, headers=headers)
    return RelayError(exc.status, exc.message, code=exc.code, param="model", headers=headers)


@dataclass
class Finished:
    """A call that ended with output: what recording it needs (the gateway's recorder batches these)."""

    admitted: Admitted
    usage: Usage
    upstream: str
    latency_ms: int
    ttft_ms: int | None
    metadata: dict[str, Any]
    request_body: dict[str, Any] | None = None
    response_text: str = ""


def _event(call: Finished) -> dict[str, Any]:
    admitted, usage = call.admitted, call.usage
    event: dict[str, Any] = {
        "request_id": admitted.request_id,
        "api_key": admitted.api_key.pk,
        "model": admitted.model,
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "cached_input_tokens": min(usage.cached_input_tokens, usage.input_tokens),
        "latency_ms": max(0, min(call.latency_ms, 86_400_000)),
        "metadata": {"endpoint": admitted.endpoint, **call.metadata},
        "service_tier": admitted.service_tier,
    }
    if usage.reasoning_tokens:
        event["reasoning_tokens"] = min(usage.reasoning_tokens, usage.output_tokens)
    if usage.cache_write_tokens:
        event["cache_write_tokens"] = min(usage.cache_write_tokens, usage.input_tokens - event["cached_input_tokens"])
    return event


def relay_record_batch(*, finished: list[Finished]) -> list[bool]:
    """Record many calls' usage in one ingest batch (one transaction per tenant), each exactly once
    by its request_id, settling their holds. True per call when stored now or before.

    The key is the one admitted: a key revoked since is still charged for the call it made.
    """
    if not finished:
        return []
    keys = {call.admitted.api_key.pk: call.admitted.api_key for call in finished}
    facts = {
        call.admitted.request_id: RelayFacts(upstream=call.upstream, ttft_ms=call.ttft_ms, encoding=call.usage.encoding)
        for call in finished
    }

    def resolve(ref: str | int) -> ApiKey:
        return keys[int(ref)]

    result = usage_record_batch(
        raw_events=[_event(call) for call in finished], api_key=None, resolve_key=resolve, relayed=facts
    )
    outcomes = []
    for call, item in zip(finished, result.items, strict=True):
        if item.status not in (ACCEPTED, DUPLICATE):
            logger.error("relay_usage_rejected", extra={"request_id": call.admitted.request_id, "error": item.error})
            outcomes.append(False)
            continue
        outcomes.append(True)
        if call.admitted.store_content and call.request_body is not None:
            RelayTranscript.objects.get_or_create(
                tenant_id=call.admitted.api_key.tenant_id,
                request_id=call.admitted.request_id,
                defaults={
                    "endpoint": call.admitted.endpoint,
                    "request": call.request_body,
                    "response_text": call.response_text,
                },
            )
    return outcomes


def relay_release(*, admitted: Admitted) -> None:
    """The call failed before any output: no charge, the hold goes back at once."""
    hold_release(tenant_id=admitted.api_key.tenant_id, request_id=admitted.request_id)
