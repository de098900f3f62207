"""The one in-process cache: bounded (least recently used out), optionally expiring, thread-safe.

Every cache a process keeps in memory goes through `BoundedCache`, because keys often come
from clients (model names, credentials) and a dict keyed by client input grows until the
worker is killed. Each cache has a name and is exported to Prometheus:

    tokenbill_cache_entries{cache}            entries held now (per process; summed live)
    tokenbill_cache_hits_total{cache}         lookups answered from memory
    tokenbill_cache_misses_total{cache}       lookups that were absent or expired
    tokenbill_cache_evictions_total{cache}    entries dropped to stay within max_size

`functools.cache` stays acceptable only where the keys are fixed by code or settings (a
model class, an encoding name, the configured networks), never by a request.

This module imports no app, so every layer may use it (docs/architecture.md).
"""

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any, Generic, TypeVar

from prometheus_client import Counter, Gauge

V = TypeVar("V")
_ABSENT: Any = object()

ENTRIES = Gauge(
    "tokenbill_cache_entries",
    "Entries held by each named in-process cache (summed over live worker processes).",
    ["cache"],
    multiprocess_mode="livesum",
)
HITS = Counter("tokenbill_cache_hits_total", "In-process cache lookups answered from memory.", ["cache"])
MISSES = Counter("tokenbill_cache_misses_total", "In-process cache lookups that missed or had expired.", ["cache"])
EVICTIONS = Counter(
    "tokenbill_cache_evictions_total", "In-process cache entries dropped to stay within the size bound.", ["cache"]
)

_BY_NAME: dict[str, "BoundedCache"] = {}  # one per name, made at import time: bounded by the code


def _resolve(value: float | Callable[[], float] | None) -> float | None:
    return value() if callable(value) else value


class BoundedCache(Generic[V]):
    """At most `max_size` entries, least recently used evicted first; each lives `ttl` seconds
    (None: until evicted). Both may be callables read on each write, so a setting changed in a
    test or at reload applies without rebuilding the cache."""

    def __init__(
        self,
        name: str,
        *,
        max_size: int | Callable[[], int],
        ttl: float | Callable[[], float] | None = None,
    ) -> None:
        if name in _BY_NAME:
            raise ValueError(f"A cache named {name!r} already exists.")
        self.name = name
        self._max_size = max_size
        self._ttl = ttl
        self._entries: OrderedDict[Hashable, tuple[float, V]] = OrderedDict()  # key -> (expires, value)
        self._lock = threading.Lock()  # gthread workers and Celery threads share the process's caches
        self._size = ENTRIES.labels(cache=name)
        self._hits = HITS.labels(cache=name)
        self._misses = MISSES.labels(cache=name)
        self._evictions = EVICTIONS.labels(cache=name)
        _BY_NAME[name] = self

    @property
    def max_size(self) -> int:
        return max(int(_resolve(self._max_size) or 0), 0)

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: Hashable, default: Any = None) -> V | Any:
        now = time.monotonic()
        with self._lock:
            entry = self._entries.get(key, _ABSENT)
            if entry is not _ABSENT and entry[0] > now:
                self._entries.move_to_end(key)
                self._hits.inc()
                return entry[1]
            if entry is not _ABSENT:
                del self._entries[key]
                self._size.set(len(self._entries))
        self._misses.inc()
        return default

    def peek(self, key: Hashable, default: Any = None) -> V | Any:
        """The live value without counting a lookup or refreshing its place: for a caller that
        only decides which path to take, the lookup that follows counts."""
        with self._lock:
            entry = self._entries.get(key, _ABSENT)
        return entry[1] if entry is not _ABSENT and entry[0] > time.monotonic() else default

    def set(self, key: Hashable, value: V) -> None:
        limit = self.max_size
        if limit == 0:
            return
        ttl = _resolve(self._ttl)
        expires = float("inf") if ttl is None else time.monotonic() + ttl
        evicted = 0
        with self._lock:
            self._entries[key] = (expires, value)
            self._entries.move_to_end(key)
            while len(self._entries) > limit:
                self._entries.popitem(last=False)
                evicted += 1
            self._size.set(len(self._entries))
        if evicted:
            self._evictions.inc(evicted)

    def get_or_load(self, key: Hashable, load: Callable[[], V]) -> V:
        """The cached value, or `load()` stored and returned (not under the lock: a slow load
        blocks no other key; two threads missing together both load, the last one is kept)."""
        value = self.get(key, _ABSENT)
        if value is _ABSENT:
            value = load()
            self.set(key, value)
        return value

    def pop(self, key: Hashable) -> None:
        with self._lock:
            self._entries.pop(key, None)
            self._size.set(len(self._entries))

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._size.set(0)


def cache_named(name: str) -> BoundedCache:
    """The cache of that name (tests and the operators' page read sizes through this)."""
    return _BY_NAME[name]


def caches() -> dict[str, BoundedCache]:
    return dict(_BY_NAME)
