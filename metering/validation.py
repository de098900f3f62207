"""Validation of one usage event as sent to the API, into an `EventInput`.

Hand-written rather than a DRF serializer per item: a 1,000-event batch is validated in a few
milliseconds, and every error names the field and what was wrong. The fields, their bounds and
`required` flags come from the EVENT input contract (metering/contracts.py), from which
metering/api/schema.py also generates the OpenAPI schema; the rules across fields (input_tokens
or input_text, cached + cache write <= input, timestamp bounds, metadata shape) are here.
"""

import datetime as dt
import hashlib
from dataclasses import dataclass
from typing import Any

import orjson

from billing.periods import TimeBounds, TimeInvalid, TimeOutOfRange, event_bounds, user_time
from metering.contracts import EVENT, InputField, choice_error
from metering.limits import MAX_METADATA_KEY_LENGTH, MAX_METADATA_KEYS, MAX_METADATA_VALUE_LENGTH
from metering.tokens import count_tokens

ALLOWED_FIELDS = EVENT.names
TOKEN_FIELDS = tuple(spec.name for spec in EVENT.fields if spec.tokens)
_TEXT_FIELDS = ("input_text", "output_text")
# One bound for every token kind: the inline check of parse_event relies on it (unpacking fails
# at import if the contract ever gives the kinds different bounds).
((_TOKENS_MIN, _TOKENS_MAX),) = {EVENT[name].bounds for name in TOKEN_FIELDS}
_REQUEST_ID = EVENT["request_id"]
_MODEL = EVENT["model"]
_LATENCY_MIN, _LATENCY_MAX = EVENT["latency_ms"].bounds
_TEXT_MAX = {name: EVENT[name].length for name in _TEXT_FIELDS}
_SERVICE_TIER = EVENT["service_tier"]
_DEFAULT_TIER = _SERVICE_TIER.choices[0]


class EventInvalid(Exception):
    def __init__(self, field: str | None, message: str, code: str = "invalid_field") -> None:
        super().__init__(message)
        self.field = field
        self.message = message
        self.code = code

    def as_dict(self) -> dict[str, Any]:
        return {"code": self.code, "field": self.field, "message": self.message}


@dataclass(slots=True)
class EventInput:
    """One event as the client sent it, checked: what the EVENT contract describes.

    It looks like metering.services.event_store.NewEvent but is a different stage, on purpose:
    EventInput is what the client said (before the key is resolved: `api_key_ref` may name a key
    by value or id; no price yet), NewEvent is the row about to be stored (tenant and key ids,
    received_at, cost, currency, price, tier, flags, in the column order of the INSERT). Ingest
    builds one NewEvent from one EventInput after resolving the key and rating it. Merging them
    would put half-filled rows on the hot path; a new column goes on NewEvent only, a new
    request field on the contract and here.
    """

    request_id: str
    model: str
    input_tokens: int
    output_tokens: int
    cached_input_tokens: int
    cache_write_tokens: int
    cache_write_1h_tokens: int
    reasoning_tokens: int
    service_tier: str
    occurred_at: dt.datetime
    latency_ms: int | None
    metadata: dict[str, Any]
    token_source: str
    encoding: str
    body_hash: str
    api_key_ref: str | int | None  # service tokens only: which tenant key consumed


def body_hash(raw: dict[str, Any]) -> str:
    return hashlib.sha256(orjson.dumps(raw, option=orjson.OPT_SORT_KEYS)).hexdigest()


def keyed_body_hash(body: str, api_key_id: int) -> str:
    """What a replay is compared on: the body (whatever way it named api_key) and the consuming key.

    So a gateway retrying with the key's id instead of the full key, or the key posting its own
    event, is a duplicate; the same request_id for another key of the tenant is a conflict.
    """
    return hashlib.sha256(f"{body}:{api_key_id}".encode()).hexdigest()


def _token_count(raw: dict[str, Any], name: str) -> int:
    value = raw.get(name, 0)
    if type(value) is float and abs(value) > 2**63:
        # The JSON parser turns integers beyond 64 bits into floats: say what was wrong.
        bound = f">= {_TOKENS_MIN}" if value < 0 else f"<= {_TOKENS_MAX}"
        raise EventInvalid(name, f"{name} must be a whole number {bound}; got a number beyond 64 bits.")
    # bool is an int subclass in Python: reject it explicitly.
    if type(value) is not int:
        kind = "a boolean" if isinstance(value, bool) else f"a {type(value).__name__}"
        raise EventInvalid(name, f"{name} must be a whole number of tokens, not {kind}.")
    if value < _TOKENS_MIN:
        raise EventInvalid(name, f"{name} must be >= {_TOKENS_MIN}, got {value}.")
    if value > _TOKENS_MAX:
        raise EventInvalid(name, f"{name} must be <= {_TOKENS_MAX}, got {value}.")
    return value


def _printable_string(raw: dict[str, Any], spec: InputField) -> str | None:
    name, max_length = spec.name, spec.length
    value = raw.get(name)
    if value is None:
        if spec.required:
            raise EventInvalid(name, f"{name} is required.")
        return None
    if not isinstance(value, str):
        raise EventInvalid(name, f"{name} must be a string.")
    if not 1 <= len(value) <= max_length:
        raise EventInvalid(name, f"{name} must be 1 to {max_length} characters long, got {len(value)}.")
    if not value.isprintable() or value != value.strip():
        raise EventInvalid(name, f"{name} must be printable characters without surrounding spaces.")
    return value


def _timestamp(raw: dict[str, Any], now: dt.datetime, bounds: TimeBounds) -> dt.datetime:
    value = raw.get("timestamp")
    if value is None:
        return now
    try:
        return user_time(value, field="timestamp", bounds=bounds)
    except TimeOutOfRange as exc:
        if exc.later:  # a real time, only ahead of the clock: it keeps its own (older) code
            raise EventInvalid(
                "timestamp",
                f"timestamp {value!r} is more than {int((bounds.latest - now).total_seconds())} s in the future; "
                f"the accepted range is {bounds.describe()}.",
                code="timestamp_in_future",
            ) from None
        raise EventInvalid("timestamp", exc.message, code=exc.code) from None
    except TimeInvalid as exc:
        raise EventInvalid("timestamp", exc.message) from None


def _metadata(raw: dict[str, Any]) -> dict[str, Any]:
    value = raw.get("metadata")
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise EventInvalid("metadata", "metadata must be a flat JSON object.")
    if len(value) > MAX_METADATA_KEYS:
        raise EventInvalid("metadata", f"metadata may have at most {MAX_METADATA_KEYS} keys.")
    for key, item in value.items():
        if len(key) > MAX_METADATA_KEY_LENGTH:
            raise EventInvalid("metadata", f"metadata key {key[:20]!r}... is longer than {MAX_METADATA_KEY_LENGTH}.")
        kind = type(item)
        if kind is str:
            if len(item) > MAX_METADATA_VALUE_LENGTH:
                raise EventInvalid("metadata", f"metadata.{key} is longer than {MAX_METADATA_VALUE_LENGTH} characters.")
            if "\x00" in item:
                raise EventInvalid(
                    "metadata", f"metadata.{key} contains a NUL character (\\u0000), which cannot be stored."
                )
        elif kind is dict or kind is list:
            raise EventInvalid("metadata", f"metadata.{key} must be a string, number, boolean or null (flat).")
        if "\x00" in key:
            raise EventInvalid("metadata", "A metadata key contains a NUL character (\\u0000), which cannot be stored.")
    return value


def _latency(raw: dict[str, Any]) -> int | None:
    value = raw.get("latency_ms")
    if value is None:
        return None
    if type(value) is not int or not _LATENCY_MIN <= value <= _LATENCY_MAX:
        raise EventInvalid("latency_ms", f"latency_ms must be a whole number from {_LATENCY_MIN} to {_LATENCY_MAX}.")
    return value


def _text(raw: dict[str, Any], name: str) -> str | None:
    value = raw.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise EventInvalid(name, f"{name} must be a string.")
    if len(value) > _TEXT_MAX[name]:
        raise EventInvalid(name, f"{name} is longer than {_TEXT_MAX[name]} characters.")
    return value


def _counts_from_text(raw: dict[str, Any], model: str) -> tuple[dict[str, int], str, str]:
    """Token counts when input_text or output_text is sent: counted with the model's encoding."""
    texts = {name: _text(raw, name) for name in _TEXT_FIELDS}
    counts = {name: _token_count(raw, name) for name in TOKEN_FIELDS}
    token_source, encoding = "reported", ""
    for text_field, count_field in (("input_text", "input_tokens"), ("output_text", "output_tokens")):
        text = texts[text_field]
        if text is None:
            continue
        if count_field in raw:
            raise EventInvalid(text_field, f"Send either {count_field} or {text_field}, not both.")
        counted = count_tokens(model=model, text=text)
        counts[count_field] = counted.tokens
        token_source, encoding = "counted", counted.encoding
    if "input_tokens" not in raw and texts["input_text"] is None:
        raise EventInvalid("input_tokens", "input_tokens (or input_text) is required.")
    if "output_tokens" not in raw and texts["output_text"] is None:
        raise EventInvalid("output_tokens", "output_tokens (or output_text) is required.")
    return counts, token_source, encoding


def event_time_bounds(*, now: dt.datetime, max_past_days: int, max_future_seconds: int) -> TimeBounds:
    """The timestamps an event may carry: max_past_days back (never before 2000-01-01) to
    max_future_seconds ahead of `now` (INGEST_MAX_PAST_DAYS, INGEST_MAX_FUTURE_SECONDS)."""
    return event_bounds(
        now=now, max_past=dt.timedelta(days=max_past_days), max_future=dt.timedelta(seconds=max_future_seconds)
    )


def _check_api_key_ref(api_key_ref: Any, *, allow_api_key: bool) -> None:
    if not allow_api_key:
        raise EventInvalid("api_key", "api_key is only accepted from a service token; a tenant key meters itself.")
    if isinstance(api_key_ref, bool) or not isinstance(api_key_ref, (str, int)):
        raise EventInvalid("api_key", "api_key must be the consuming tenant key or its api_key_id.")


def _reported_counts(raw: dict[str, Any]) -> dict[str, int]:
    """The token counts of an event that sends them (no text): one inline test per kind."""
    get = raw.get
    counts = {name: get(name, 0) for name in TOKEN_FIELDS}
    for name, value in counts.items():
        if type(value) is not int or not _TOKENS_MIN <= value <= _TOKENS_MAX:
            _token_count(raw, name)  # raises, naming what is wrong
    if "input_tokens" not in raw:
        raise EventInvalid("input_tokens", "input_tokens (or input_text) is required.")
    if "output_tokens" not in raw:
        raise EventInvalid("output_tokens", "output_tokens (or output_text) is required.")
    return counts


def parse_event(raw: Any, *, now: dt.datetime, bounds: TimeBounds, allow_api_key: bool) -> EventInput:
    """Validate one event; raise EventInvalid naming the first field that is wrong.

    `bounds` (event_time_bounds) is computed once per batch: a timestamp outside it is refused
    here, so no stored event can overflow the period arithmetic of rollups, quotas or invoices.

    The checks run in a fixed order. A field passes with one inline test; only a failing or
    unusual field goes to its helper, which finds the message. A 1,000-event batch runs this
    1,000 times per request, so the common case must cost microseconds.
    """
    if not isinstance(raw, dict):
        raise EventInvalid(None, "Each event must be a JSON object.")
    if not raw.keys() <= ALLOWED_FIELDS:
        unknown = sorted(raw.keys() - ALLOWED_FIELDS)
        raise EventInvalid(unknown[0], f"Unknown field(s): {', '.join(unknown)}.", code="unknown_field")
    request_id = _printable_string(raw, _REQUEST_ID)
    model = _printable_string(raw, _MODEL)
    assert request_id is not None and model is not None

    get = raw.get
    api_key_ref = get("api_key")
    if api_key_ref is not None:
        _check_api_key_ref(api_key_ref, allow_api_key=allow_api_key)
    if "input_text" in raw or "output_text" in raw:
        counts, token_source, encoding = _counts_from_text(raw, model)
    else:
        counts, token_source, encoding = _reported_counts(raw), "reported", ""
    if counts["cached_input_tokens"] + counts["cache_write_tokens"] > counts["input_tokens"]:
        raise EventInvalid(
            "cached_input_tokens",
            "cached_input_tokens + cache_write_tokens must not exceed input_tokens "
            "(input_tokens counts every prompt token, cached ones included).",
        )
    if counts["cache_write_1h_tokens"] > counts["cache_write_tokens"]:
        raise EventInvalid(
            "cache_write_1h_tokens",
            "cache_write_1h_tokens must not exceed cache_write_tokens (the 1-hour writes are part of them).",
        )
    if counts["reasoning_tokens"] > counts["output_tokens"]:
        raise EventInvalid(
            "reasoning_tokens", "reasoning_tokens must not exceed output_tokens (reasoning is part of the output)."
        )
    service_tier = get("service_tier", _DEFAULT_TIER)
    if service_tier is not _DEFAULT_TIER:
        wrong_tier = choice_error(_SERVICE_TIER, service_tier)
        if wrong_tier is not None:
            raise EventInvalid("service_tier", wrong_tier)
    latency_ms = get("latency_ms")
    occurred_at = _timestamp(raw, now, bounds)
    if latency_ms is not None and (type(latency_ms) is not int or not _LATENCY_MIN <= latency_ms <= _LATENCY_MAX):
        _latency(raw)  # raises
    return EventInput(
        request_id=request_id,
        model=model,
        occurred_at=occurred_at,
        latency_ms=latency_ms,
        metadata=_metadata(raw),
        token_source=token_source,
        encoding=encoding,
        body_hash=body_hash(raw if api_key_ref is None else {k: v for k, v in raw.items() if k != "api_key"}),
        api_key_ref=api_key_ref,
        service_tier=service_tier,
        **counts,
    )
