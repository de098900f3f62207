"""Rate limits: requests per minute, tokens per minute and parallel requests, per key and tenant.

They are decided with the balance, in the same admission (one Lua script on the Redis
backend, one transaction on the database one), so a limit costs no extra round trip and a
request refused for money consumes no rate and the other way round.

Requests and tokens are leaky buckets (GCRA, as OpenAI's limits behave): a bucket holds up
to `limit` and drains at `limit` per minute, so a full minute's allowance can be spent at
once and then comes back steadily. What a bucket counts:
- requests: every admitted authorize (a check or a new hold; the replay of a hold is free);
- tokens: the admitted estimate (input + max output); when the usage event settles a hold the
  bucket is corrected by (settled tokens - estimate), so over-estimates come back.
Parallel requests are the open holds of the key (or tenant); a hold's slot frees when its
usage settles it or it expires. A check (no hold) is refused when the slots are full but
takes none.

Rate-limit state is not money: if Redis loses it, buckets restart empty (the limits forgive
for a minute); the balance, holds and quotas stay exact (they are seeded from PostgreSQL).
"""

import datetime as dt
import math
from dataclasses import dataclass

REQUESTS, TOKENS, PARALLEL = "requests", "tokens", "parallel"
KEY_SCOPE, TENANT_SCOPE = "key", "tenant"
WINDOW_MS = 60_000  # every limit is per minute


@dataclass(frozen=True, slots=True)
class RateLimit:
    scope: str  # KEY_SCOPE | TENANT_SCOPE
    kind: str  # REQUESTS | TOKENS | PARALLEL
    limit: int
    cost: int  # what this request takes: 1 request, its estimated tokens, 1 slot

    def name(self, tenant_id: int, api_key_id: int) -> str:
        return limit_name(tenant_id, api_key_id, self.scope, self.kind)


def limit_name(tenant_id: int, api_key_id: int, scope: str, kind: str) -> str:
    """The Redis key (and database bucket name); the tenant's hash tag keeps one cluster slot."""
    owner = f"k{api_key_id}" if scope == KEY_SCOPE else "t"
    code = {REQUESTS: "r", TOKENS: "t", PARALLEL: "p"}[kind]
    return f"rl:{{{tenant_id}}}:{owner}:{code}"


@dataclass(frozen=True)
class LimitedScopes:
    """Which scopes of a settling batch have token or parallel limits (the others have no state)."""

    key_ids: frozenset[int] = frozenset()
    tenant: bool = False

    def scopes(self, api_key_id: int) -> list[str]:
        return [scope for scope, on in ((KEY_SCOPE, api_key_id in self.key_ids), (TENANT_SCOPE, self.tenant)) if on]


def settlement_moves(
    tenant_id: int, holds: list[tuple[int, str, int, int]], limited: LimitedScopes
) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """What settling holds does to the limits: (token bucket deltas, parallel slots to free).

    `holds`: (api_key_id, request_id, estimated tokens, settled tokens). A bucket took the
    estimate at admission; settlement replaces it with what was used. Scopes without limits
    are left out, so settlement costs nothing more where no limit is set.
    """
    buckets: dict[str, int] = {}
    slots: list[tuple[str, str]] = []
    for api_key_id, request_id, estimated, settled in holds:
        for scope in limited.scopes(api_key_id):
            name = limit_name(tenant_id, api_key_id, scope, TOKENS)
            buckets[name] = buckets.get(name, 0) + settled - estimated
            slots.append((limit_name(tenant_id, api_key_id, scope, PARALLEL), request_id))
    return buckets, slots


@dataclass(frozen=True, slots=True)
class LimitState:
    """One limit as this request left it (or found it, when refused)."""

    limit: RateLimit
    remaining: int
    reset_ms: int  # until the bucket is empty again (parallel: until the oldest slot expires)
    retry_after_ms: int = 0  # when refused: until this request would fit


def limits_for(
    *,
    key_limits: tuple[int | None, int | None, int | None],
    tenant_limits: tuple[int | None, int | None, int | None],
    tokens: int,
) -> tuple[RateLimit, ...]:
    """The limits of a request costing `tokens`, from (rpm, tpm, parallel) of the key and tenant."""
    found = []
    for scope, (rpm, tpm, parallel) in ((KEY_SCOPE, key_limits), (TENANT_SCOPE, tenant_limits)):
        if rpm:
            found.append(RateLimit(scope, REQUESTS, rpm, 1))
        if tpm:
            found.append(RateLimit(scope, TOKENS, tpm, tokens))
        if parallel:
            found.append(RateLimit(scope, PARALLEL, parallel, 1))
    return tuple(found)


def drained(level: float, limit: int, elapsed_ms: float) -> float:
    """A bucket's level after `elapsed_ms` of draining at `limit` per minute."""
    return max(level - max(elapsed_ms, 0.0) * limit / WINDOW_MS, 0.0)


def bucket_take(limit: RateLimit, level: float) -> LimitState:
    """The verdict on a drained bucket; the Lua script (authorize.lua) applies the same rule."""
    rate = limit.limit / WINDOW_MS  # per ms
    if level + limit.cost > limit.limit:
        wait = (level + limit.cost - limit.limit) / rate
        # A request larger than the whole bucket never fits: tell the caller a minute.
        if limit.cost > limit.limit:
            wait = WINDOW_MS
        return LimitState(limit, max(int(limit.limit - level), 0), math.ceil(level / rate), max(math.ceil(wait), 1))
    after = level + limit.cost
    return LimitState(limit, int(limit.limit - after), math.ceil(after / rate))


def reset_text(milliseconds: int) -> str:
    """OpenAI's duration format for x-ratelimit-reset-*: "1s", "6m0s", "250ms"."""
    if milliseconds < 1000:
        return f"{max(milliseconds, 0)}ms"
    seconds = math.ceil(milliseconds / 1000)
    minutes, seconds = divmod(seconds, 60)
    return f"{minutes}m{seconds}s" if minutes else f"{seconds}s"


def headers_for(states: list[LimitState]) -> dict[str, str]:
    """OpenAI's x-ratelimit-* headers: per kind, the tightest of the key's and tenant's limits."""
    headers: dict[str, str] = {}
    for kind, suffix in ((REQUESTS, "requests"), (TOKENS, "tokens")):
        relevant = [s for s in states if s.limit.kind == kind]
        if not relevant:
            continue
        tightest = min(relevant, key=lambda s: (s.remaining, -s.reset_ms))
        headers[f"x-ratelimit-limit-{suffix}"] = str(tightest.limit.limit)
        headers[f"x-ratelimit-remaining-{suffix}"] = str(tightest.remaining)
        headers[f"x-ratelimit-reset-{suffix}"] = reset_text(tightest.reset_ms)
    return headers


def elapsed_ms(since: dt.datetime, now: dt.datetime) -> float:
    return (now - since).total_seconds() * 1000
