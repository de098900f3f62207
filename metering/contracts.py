"""One input contract per API request: the fields a request may carry, their types and bounds.

Each contract drives two things, so they cannot drift apart:

- the hand-written parsers read their field lists, `required` flags and bounds from here
  (metering/validation.py for events, metering/api/authorize.py for authorize and balance).
  They stay hand-written because a 1,000-event batch must validate in milliseconds, with
  messages that name the field; a DRF serializer per event would cost far more;
- metering/api/schema.py generates the DRF serializer drf-spectacular documents from the same
  contract (`serializer_for`), so the OpenAPI schema states what the parser accepts.

The numbers come from metering/limits.py. Rules that are not one field's bounds (input_tokens
or input_text, cached + cache write <= input, timestamp bounds, metadata shape) stay in the
parser, and `help_text` says them in the schema.

Pure data: importing this module costs nothing on the hot path and imports no DRF.
"""

from dataclasses import dataclass, field
from typing import Literal

from metering.limits import (
    AUTHORIZE_MAX_TOKENS,
    EVENT_MAX_TOKENS,
    MAX_LATENCY_MS,
    MAX_METADATA_KEY_LENGTH,
    MAX_METADATA_KEYS,
    MAX_METADATA_VALUE_LENGTH,
    MAX_MODEL_LENGTH,
    MAX_REQUEST_ID_LENGTH,
    MAX_TEXT_LENGTH,
)

# string: a JSON string; integer: a whole number (never a boolean); boolean; datetime: ISO 8601
# with a zone; object: a JSON object; key: a tenant key or its id (documented as a string).
Kind = Literal["string", "integer", "boolean", "datetime", "object", "key", "choice"]

# billing.models.ServiceTier's values, in the order the docs list them (a test keeps them equal).
SERVICE_TIERS = ("default", "priority", "flex", "batch")


@dataclass(frozen=True, slots=True)
class InputField:
    name: str
    kind: Kind
    required: bool = False
    min_value: int | None = None  # integer
    max_value: int | None = None  # integer
    max_length: int | None = None  # string
    allow_blank: bool = False  # string, key: "" means absent (a query parameter)
    default: bool | None = None  # boolean: the value when absent
    help_text: str = ""
    tokens: bool = False  # a token count (events: input, output, cached input, cache write)
    choices: tuple[str, ...] = ()  # choice: the values accepted

    @property
    def bounds(self) -> tuple[int, int]:
        """(min_value, max_value) of an integer field; both are set for every integer here."""
        assert self.min_value is not None and self.max_value is not None, self.name
        return self.min_value, self.max_value

    @property
    def length(self) -> int:
        """max_length of a string field."""
        assert self.max_length is not None, self.name
        return self.max_length


def choice_error(spec: InputField, value: object) -> str | None:
    """Why `value` is not one of a choice field's values (None: it is; absent is the caller's)."""
    if isinstance(value, str) and value in spec.choices:
        return None
    shown = repr(value)[:40] if isinstance(value, str) else f"a {type(value).__name__}"
    return f"{spec.name} must be one of {', '.join(spec.choices)}; got {shown}."


@dataclass(frozen=True)
class InputContract:
    """The fields of one API request body (or query string), in the order the docs list them."""

    name: str  # the OpenAPI component: <name>Serializer
    fields: tuple[InputField, ...]
    by_name: dict[str, InputField] = field(init=False, repr=False)
    names: frozenset[str] = field(init=False, repr=False)  # the fields a request may send

    def __post_init__(self) -> None:
        object.__setattr__(self, "by_name", {item.name: item for item in self.fields})
        object.__setattr__(self, "names", frozenset(self.by_name))

    def __getitem__(self, name: str) -> InputField:
        return self.by_name[name]


def _tokens(name: str, help_text: str = "") -> InputField:
    return InputField(name, "integer", min_value=0, max_value=EVENT_MAX_TOKENS, help_text=help_text, tokens=True)


# POST /events, and each item of POST /events/batch.
EVENT = InputContract(
    "EventIn",
    (
        InputField(
            "request_id",
            "string",
            required=True,
            max_length=MAX_REQUEST_ID_LENGTH,
            help_text="Idempotency key, unique per tenant.",
        ),
        InputField("model", "string", required=True, max_length=MAX_MODEL_LENGTH),
        _tokens("input_tokens", "All prompt tokens."),
        _tokens("output_tokens"),
        _tokens("cached_input_tokens", "Part of input_tokens."),
        _tokens("cache_write_tokens", "Part of input_tokens."),
        _tokens("cache_write_1h_tokens", "1-hour cache writes: part of cache_write_tokens."),
        _tokens("reasoning_tokens", "Part of output_tokens."),
        InputField(
            "service_tier",
            "choice",
            choices=SERVICE_TIERS,
            help_text="The tier that served the request (priority, flex, batch); default when absent.",
        ),
        InputField(
            "input_text",
            "string",
            max_length=MAX_TEXT_LENGTH,
            help_text="Counted with tiktoken instead of input_tokens.",
        ),
        InputField(
            "output_text",
            "string",
            max_length=MAX_TEXT_LENGTH,
            help_text="Counted with tiktoken instead of output_tokens.",
        ),
        InputField("timestamp", "datetime", help_text="ISO 8601 with a zone; default now."),
        InputField("latency_ms", "integer", min_value=0, max_value=MAX_LATENCY_MS),
        InputField("api_key", "key", help_text="Service tokens only: the consuming key or its id."),
        InputField(
            "metadata",
            "object",
            help_text=f"Flat, small: at most {MAX_METADATA_KEYS} keys of at most {MAX_METADATA_KEY_LENGTH} "
            f"characters; string values at most {MAX_METADATA_VALUE_LENGTH}.",
        ),
    ),
)

# POST /authorize.
AUTHORIZE = InputContract(
    "AuthorizeIn",
    (
        InputField("model", "string", required=True, max_length=MAX_MODEL_LENGTH),
        InputField("estimated_input_tokens", "integer", required=True, min_value=0, max_value=AUTHORIZE_MAX_TOKENS),
        InputField(
            "max_output_tokens",
            "integer",
            required=True,
            min_value=0,
            max_value=AUTHORIZE_MAX_TOKENS,
            help_text="The completion limit you send the model.",
        ),
        InputField(
            "service_tier",
            "choice",
            choices=SERVICE_TIERS,
            help_text="The tier the request will be sent with (priority, flex, batch); default when absent.",
        ),
        InputField(
            "request_id",
            "string",
            max_length=MAX_REQUEST_ID_LENGTH,
            help_text="Required with hold: the usage event's request_id.",
        ),
        InputField(
            "hold", "boolean", default=False, help_text="Reserve the estimate until the usage event settles it."
        ),
        InputField(
            "api_key",
            "key",
            help_text="Service tokens only: the customer's full key, or the api_key_id authorize returned.",
        ),
    ),
)

# GET /balance (query string).
BALANCE = InputContract(
    "BalanceQuery",
    (InputField("api_key", "key", allow_blank=True, help_text="Service tokens only: the tenant key to act for."),),
)
