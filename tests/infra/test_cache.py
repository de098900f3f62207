"""In-process caches stay within their bound, whatever keys clients send, and report metrics."""

import time

import pytest

from accounts.models import Tenant
from billing.selectors import price_book_for_tenant
from infra.cache import BoundedCache, cache_named, caches
from tests.assertions import metric_value
from tests.factories import EventBodyFactory

pytestmark = pytest.mark.django_db

BOUND = 50


def test_least_recently_used_entries_go_first():
    cache: BoundedCache[int] = BoundedCache("test_lru", max_size=3)
    for key in "abc":
        cache.set(key, ord(key))
    assert cache.get("a") == ord("a")  # a is now the most recently used
    cache.set("d", 4)
    assert len(cache) == 3
    assert cache.get("b") is None
    assert [cache.get(key) for key in "acd"] == [ord("a"), ord("c"), 4]
    assert metric_value("tokenbill_cache_entries", cache="test_lru") == 3
    assert metric_value("tokenbill_cache_evictions_total", cache="test_lru") == 1
    assert metric_value("tokenbill_cache_hits_total", cache="test_lru") == 4
    assert metric_value("tokenbill_cache_misses_total", cache="test_lru") == 1


def test_entries_expire_after_their_ttl():
    cache: BoundedCache[str] = BoundedCache("test_ttl", max_size=10, ttl=0.05)
    loads = []
    assert cache.get_or_load("k", lambda: loads.append(1) or "v") == "v"
    assert cache.get_or_load("k", lambda: loads.append(1) or "v") == "v"
    assert len(loads) == 1
    time.sleep(0.06)
    assert cache.get("k") is None
    assert len(cache) == 0


def test_a_peek_counts_no_lookup_and_moves_nothing():
    cache: BoundedCache[int] = BoundedCache("test_peek", max_size=2, ttl=0.05)
    cache.set("a", 1)
    cache.set("b", 2)
    assert cache.peek("a") == 1 and cache.peek("z") is None
    cache.set("c", 3)  # "a" is still the least recently used: the peek did not refresh it
    assert cache.peek("a") is None and cache.peek("b") == 2
    assert metric_value("tokenbill_cache_hits_total", cache="test_peek") == 0
    assert metric_value("tokenbill_cache_misses_total", cache="test_peek") == 0
    time.sleep(0.06)
    assert cache.peek("c") is None  # expired entries are not answered


def test_a_zero_size_caches_nothing():
    cache: BoundedCache[str] = BoundedCache("test_zero", max_size=lambda: 0)
    cache.set("k", "v")
    assert cache.get("k") is None


def test_every_process_cache_is_bounded():
    names = set(caches())
    assert {
        "price_book",
        "authorize_quota_lists",
        "alert_rule_tenants",
        "notify_rate_windows",
        "ingest_ceiling_windows",
        "unpriced_gauge",
    } <= names
    assert all(cache.max_size > 0 for name, cache in caches().items() if not name.startswith("test_"))


def test_distinct_unknown_model_names_through_the_api_leave_the_price_book_at_its_bound(key_a, settings):
    settings.PRICE_BOOK_CACHE_SIZE = BOUND
    books = cache_named("price_book")
    books.clear()
    evicted = metric_value("tokenbill_cache_evictions_total", cache="price_book")
    events = [EventBodyFactory(model=f"attacker-{n:05d}") for n in range(4 * BOUND)]
    response = key_a.post("/api/v1/events/batch", {"events": events})
    assert response.json()["accepted"] == len(events)
    for n in range(3):  # one request per name, as a flood of small requests would be
        key_a.post("/api/v1/events", EventBodyFactory(model=f"other-{n}"))
    assert len(books) == BOUND
    assert metric_value("tokenbill_cache_entries", cache="price_book") == BOUND
    assert metric_value("tokenbill_cache_evictions_total", cache="price_book") >= evicted + 3 * BOUND + 3
    # A known model still prices correctly after the flood.
    priced = key_a.post("/api/v1/events", EventBodyFactory(model="gpt-4o")).json()
    assert priced["priced"] is True


def test_distinct_unknown_model_names_through_the_selector_leave_the_price_book_at_its_bound(tenant_a, settings):
    settings.PRICE_BOOK_CACHE_SIZE = BOUND
    books = cache_named("price_book")
    books.clear()
    tenant = Tenant.objects.select_related("price_plan").get(pk=tenant_a.pk)  # as the API key lookup loads it
    for n in range(3 * BOUND):
        book = price_book_for_tenant(tenant=tenant, models={f"unknown-{n}"})
        assert book is not None
        assert book.terms_for(f"unknown-{n}", tenant.created_at) is None
        assert len(books) <= BOUND
    assert len(books) == BOUND
    # Hits: a name seen recently is answered from memory.
    hits = metric_value("tokenbill_cache_hits_total", cache="price_book")
    price_book_for_tenant(tenant=tenant, models={f"unknown-{3 * BOUND - 1}"})
    assert metric_value("tokenbill_cache_hits_total", cache="price_book") == hits + 1
