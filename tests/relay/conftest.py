"""The live stack for relay tests: uvicorn serving portal.asgi on loopback (in this process, so
it reads the test database), a fake upstream, a tenant with money and an API key.

Tests use `transactional_db`: the server's threads have their own database connections and
must see committed rows.
"""

import asyncio
import os
import socket
import threading
import time
from decimal import Decimal

import openai
import pytest
import uvicorn

from portal.asgi_worker import UVICORN_OPTIONS
from relay.gateway import executor_shutdown
from relay.services import calls, routing
from relay.services.upstreams import upstream_save
from tests import factories
from tests.relay.fake_upstream import FakeUpstream


def run_async(main):
    """asyncio.run(main()) on a thread of its own, returning its result or raising its error.

    The browser tests' Playwright (sync API) keeps an event loop running on the main thread for
    the rest of the session, where asyncio.run refuses to start another."""
    outcome = {}

    def target() -> None:
        try:
            outcome["result"] = asyncio.run(main())
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class LiveRelay:
    """uvicorn serving portal.asgi in a thread; the SDK clients made by `client` close with it."""

    def __init__(self) -> None:
        from django.conf import settings  # noqa: PLC0415

        os.makedirs(settings.STATIC_ROOT, exist_ok=True)  # whitenoise warns without it (make test collects)
        from portal.asgi import application  # noqa: PLC0415 - after Django is set up

        self.port = _free_port()
        config = uvicorn.Config(
            application, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on", loop="asyncio",
            http="httptools", **UVICORN_OPTIONS,
        )  # fmt: skip
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=lambda: asyncio.run(self.server.serve()), daemon=True)
        self.clients: list[openai.OpenAI] = []

    def client(self, secret: str) -> openai.OpenAI:
        made = openai.OpenAI(base_url=self.base_url, api_key=secret, max_retries=0, timeout=20)
        self.clients.append(made)
        return made

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> None:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "relay server did not start"
            time.sleep(0.02)

    def stop(self) -> None:
        for made in self.clients:
            made.close()
        self.server.should_exit = True
        self.thread.join(10)
        executor_shutdown()


@pytest.fixture
def fake():
    server = FakeUpstream("fake")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def key_cache_seconds() -> float:
    """RELAY_KEY_CACHE_SECONDS for the stack: 0 here, since most tests change a key and expect the
    next call to see it; a test parametrized with a positive value runs as production does."""
    return 0


@pytest.fixture
def relay_stack(transactional_db, redis_backend, settings, fake, key_cache_seconds):
    settings.RELAY_ROUTES_CACHE_SECONDS = 0
    settings.RELAY_KEY_CACHE_SECONDS = key_cache_seconds
    calls._keys.clear()
    settings.RELAY_BREAKER_COOLDOWN_SECONDS = 30
    routing.routes_clear()
    upstream_save(name="primary", base_url=fake.base_url, api_key="sk-upstream-secret", model_map={"gpt-4o*": ""})
    relay = LiveRelay()
    relay.start()
    yield relay
    relay.stop()
    routing.routes_clear()


@pytest.fixture
def relay_tenant(transactional_db):
    plan = factories.PricePlanFactory(slug="relay-plan", currency="USD")
    factories.PriceFactory(
        plan=plan, model_pattern="gpt-4o", input_per_mtok="2.5", output_per_mtok="10", cached_input_per_mtok="1.25"
    )
    factories.PriceFactory(plan=plan, model_pattern="gpt-4o-mini*", input_per_mtok="0.15", output_per_mtok="0.6")
    tenant = factories.TenantFactory(slug="relay-acme", price_plan=plan)
    factories.topup(tenant, "100.00")
    return tenant


@pytest.fixture
def relay_key(relay_tenant):
    key, secret = factories.issue_api_key(relay_tenant)
    return key, secret


def wallet_balance(tenant) -> Decimal:
    from billing.models import Wallet  # noqa: PLC0415

    return Wallet.objects.get(tenant=tenant).balance
