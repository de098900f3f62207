"""Which upstreams serve a model, in which order, and which of them are healthy.

The table of enabled upstreams is read from the database at most every
RELAY_ROUTES_CACHE_SECONDS per process (a change applies within that time). The circuit
breaker is per process on purpose: it describes what this process saw of an upstream, and
losing it on a restart costs a few failed tries, no money.
"""

import random
import threading
import time
from dataclasses import dataclass, field

from django.conf import settings

from relay import crypto
from relay.models import Upstream, mapped_model


@dataclass(frozen=True)
class Route:
    name: str
    base_url: str  # without a trailing slash
    api_key: str  # decrypted, in memory only
    patterns: dict[str, str]
    priority: int
    weight: int
    connect_timeout: float  # seconds
    first_byte_timeout: float
    total_timeout: float

    def upstream_model(self, model: str) -> str | None:
        return mapped_model(self.patterns, model)  # no model instance per call: its signals cost


@dataclass
class _Table:
    routes: list[Route]
    loaded_at: float


_lock = threading.Lock()
_tables: dict[str, _Table] = {}


def _load() -> list[Route]:
    return [
        Route(
            name=row.name,
            base_url=row.base_url.rstrip("/"),
            api_key=crypto.decrypt(row.api_key_encrypted),
            patterns=dict(row.model_map),
            priority=row.priority,
            weight=row.weight,
            connect_timeout=row.connect_timeout_ms / 1000,
            first_byte_timeout=row.first_byte_timeout_ms / 1000,
            total_timeout=row.total_timeout_ms / 1000,
        )
        for row in Upstream.objects.filter(enabled=True).order_by("priority", "name")
    ]


def routes_table() -> list[Route]:
    """The enabled upstreams (sync: reads the database when the cached table is stale)."""
    now = time.monotonic()
    table = _tables.get("enabled")
    if table is None or now - table.loaded_at >= settings.RELAY_ROUTES_CACHE_SECONDS:
        with _lock:
            table = _tables.get("enabled")
            if table is None or now - table.loaded_at >= settings.RELAY_ROUTES_CACHE_SECONDS:
                table = _tables["enabled"] = _Table(_load(), now)
    return table.routes


def routes_clear() -> None:
    _tables.clear()
    breakers.clear()


def candidates(routes: list[Route], model: str) -> list[tuple[Route, str]]:
    """The upstreams serving `model` with its upstream name: by priority, weighted-random inside
    one priority, upstreams with an open circuit last (tried only when nothing else is left)."""
    serving = [(route, target) for route in routes if (target := route.upstream_model(model)) is not None]
    ordered: list[tuple[Route, str]] = []
    for priority in sorted({route.priority for route, _ in serving}):
        group = [item for item in serving if item[0].priority == priority]
        while group:
            pick = random.choices(range(len(group)), weights=[r.weight for r, _ in group])[0]  # noqa: S311 - load spreading
            ordered.append(group.pop(pick))
    now = time.monotonic()
    return sorted(ordered, key=lambda item: not breakers.get(item[0].name).allows(now))


@dataclass
class Breaker:
    """Closed; open for RELAY_BREAKER_COOLDOWN_SECONDS after RELAY_BREAKER_FAILURES failures in a
    row; then half-open: one trial call closes it (success) or opens it again (failure)."""

    failures: int = 0
    opened_at: float | None = None
    trial: bool = False
    successes: int = 0
    errors: int = 0

    def allows(self, now: float) -> bool:
        if self.opened_at is None:
            return True
        return now - self.opened_at >= settings.RELAY_BREAKER_COOLDOWN_SECONDS and not self.trial

    def state(self, now: float) -> str:
        if self.opened_at is None:
            return "closed"
        return "half_open" if now - self.opened_at >= settings.RELAY_BREAKER_COOLDOWN_SECONDS else "open"

    def begin(self, now: float) -> None:
        if self.opened_at is not None and self.allows(now):
            self.trial = True

    def success(self) -> None:
        self.successes += 1
        self.failures, self.opened_at, self.trial = 0, None, False

    def failure(self, now: float) -> None:
        self.errors += 1
        self.failures += 1
        if self.trial or self.failures >= settings.RELAY_BREAKER_FAILURES:
            self.opened_at, self.trial = now, False


@dataclass
class _Breakers:
    by_name: dict[str, Breaker] = field(default_factory=dict)

    def get(self, name: str) -> Breaker:
        breaker = self.by_name.get(name)
        if breaker is None:
            breaker = self.by_name[name] = Breaker()
        return breaker

    def clear(self) -> None:
        self.by_name.clear()

    def snapshot(self) -> dict[str, Breaker]:
        return dict(self.by_name)


breakers = _Breakers()
