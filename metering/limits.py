"""What one API request may carry: the one home of every bound on request and event input.

The input contracts (metering/contracts.py) read these names, and through them the parsers
(metering/validation.py, metering/api/authorize.py) and the OpenAPI schema; no code repeats a
number. docs/api.md ("Limits", "authorize") states them for clients.

Two token bounds, on purpose, because they bound different things:

- `EVENT_MAX_TOKENS` bounds a *recorded* count (each of input, output, cached input and cache
  write, per usage event). The usage happened; anything up to it is stored and billed, and
  only a count no real request reaches (a client bug) is refused.
- `AUTHORIZE_MAX_TOKENS` bounds an *estimate* (estimated_input_tokens and max_output_tokens of
  one authorize request) before money is held. It is ten times tighter: it bounds what one
  request may reserve, and real context windows and completion limits are far below it. A
  request whose real usage exceeds its estimate is still recorded in full (up to
  EVENT_MAX_TOKENS) and charged as overage.
"""

# --- Usage events (POST /events, POST /events/batch) -------------------------------------------
EVENT_MAX_TOKENS = 1_000_000_000  # per token kind per event; above it is a client bug, not usage
MAX_LATENCY_MS = 24 * 3600 * 1000
MAX_METADATA_KEYS = 32
MAX_METADATA_KEY_LENGTH = 64
MAX_METADATA_VALUE_LENGTH = 512
MAX_TEXT_LENGTH = 2_000_000  # input_text, output_text: characters each

# --- Shared by events and authorize --------------------------------------------------------------
MAX_MODEL_LENGTH = 200
MAX_REQUEST_ID_LENGTH = 128

# --- Authorize (POST /authorize) -----------------------------------------------------------------
AUTHORIZE_MAX_TOKENS = 100_000_000  # estimated_input_tokens, max_output_tokens: each, per request
