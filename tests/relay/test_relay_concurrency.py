"""200 concurrent streams against a balance whose holds cover 50: admission never spends beyond it,
every refusal is a 402 before any upstream call, and the wallet never goes below zero."""

import asyncio
import math
import time
from decimal import Decimal

import httpx
import openai
import pytest

from billing.models import Hold
from metering.models import UsageEvent
from relay.recorder import recorders_flush
from relay.services.counting import chat_input_tokens
from tests import factories
from tests.relay.conftest import run_async, wallet_balance

MESSAGES = [{"role": "user", "content": "Count to ten."}]
MAX_TOKENS = 100


async def _together(base_url: str, secrets: list[str], one) -> list[int]:
    """`one(client)` for each secret, all at once over one connection pool: the statuses."""
    http = openai.DefaultAsyncHttpxClient(limits=httpx.Limits(max_connections=300), timeout=60)
    clients = {secret: openai.AsyncOpenAI(base_url=base_url, api_key=secret, max_retries=0, http_client=http)
               for secret in set(secrets)}  # fmt: skip
    try:
        return await asyncio.gather(*(one(clients[secret]) for secret in secrets))
    finally:
        await http.aclose()


# 60: as in production, the key found once and reused by the burst's calls.
@pytest.mark.parametrize("key_cache_seconds", [0, 60])
def test_two_hundred_streams_against_a_balance_for_fifty(relay_stack, relay_tenant, fake):
    tenant = factories.TenantFactory(slug="relay-small", price_plan=relay_tenant.price_plan)
    _, secret = factories.issue_api_key(tenant)
    input_tokens = chat_input_tokens("gpt-4o", {"messages": MESSAGES}, tenant_id=tenant.pk)
    estimate = Decimal(math.ceil(input_tokens * 2.5 + MAX_TOKENS * 10)) / Decimal(1_000_000)
    factories.topup(tenant, str(estimate * 50))
    fake.interval = 0.1

    async def one(client: openai.AsyncOpenAI) -> int:
        try:
            stream = await client.chat.completions.create(
                model="gpt-4o", messages=MESSAGES, max_tokens=MAX_TOKENS, stream=True
            )
            async for _ in stream:
                pass
        except openai.APIStatusError as exc:
            return exc.status_code
        return 200

    statuses = run_async(lambda: _together(relay_stack.base_url, [secret] * 200, one))
    admitted = statuses.count(200)
    assert set(statuses) <= {200, 402}
    # Settled calls give back the rest of their hold, so a few more than 50 may fit; the money may not.
    assert admitted >= 45
    assert fake.calls == admitted  # every refusal came before any upstream call
    deadline = time.monotonic() + 20
    recorders_flush()
    while Hold.objects.filter(tenant=tenant, status=Hold.Status.OPEN).exists():
        assert time.monotonic() < deadline, "holds still open"
        time.sleep(0.1)
    assert UsageEvent.objects.filter(tenant=tenant).count() == admitted
    assert Hold.objects.filter(tenant=tenant, status=Hold.Status.SETTLED).count() == admitted
    spent = sum(event.cost for event in UsageEvent.objects.filter(tenant=tenant))
    assert spent <= estimate * 50
    assert wallet_balance(tenant) >= 0


def test_calls_prepared_together_answer_each_for_itself(relay_stack, relay_key, fake):
    """A burst's calls are prepared in batches: a bad key among them gets its own 401 and takes
    none of the good calls with it."""
    _, secret = relay_key

    async def one(client: openai.AsyncOpenAI) -> int:
        try:
            await client.chat.completions.create(model="gpt-4o", messages=MESSAGES, max_tokens=5)
        except openai.APIStatusError as exc:
            return exc.status_code
        return 200

    statuses = run_async(
        lambda: _together(relay_stack.base_url, [secret if i % 2 else "tb_wrong" for i in range(60)], one)
    )
    assert statuses == [200 if i % 2 else 401 for i in range(60)]
    assert fake.calls == 30
