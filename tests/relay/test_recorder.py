"""The relay's recorder: finished calls written in batches, each exactly once, none left behind by
a graceful stop, and a failing batch not keeping its other calls out."""

import asyncio
import uuid

import pytest
from django.db import connections

from billing.models import Hold
from metering.models import UsageEvent
from relay.recorder import Recorder
from relay.services import calls, routing
from relay.services.calls import CHAT, Finished, Usage
from relay.services.upstreams import upstream_save
from tests import factories
from tests.relay.conftest import run_async, wallet_balance

MESSAGES = [{"role": "user", "content": "Say hello to the relay."}]


@pytest.fixture
def admit(transactional_db, redis_backend, settings, relay_key):
    settings.RELAY_ROUTES_CACHE_SECONDS = 0
    routing.routes_clear()
    upstream_save(name="primary", base_url="http://127.0.0.1:9", api_key="sk-x", model_map={"gpt-4o*": ""})

    def admitted(secret: str = relay_key[1]) -> calls.Admitted:
        return calls.relay_admit(
            authorization=f"Bearer {secret}", client=("127.0.0.1", ""), endpoint=CHAT,
            body={"model": "gpt-4o", "messages": MESSAGES, "max_tokens": 50}, request_id="relay-" + uuid.uuid4().hex,
        )  # fmt: skip

    yield admitted
    routing.routes_clear()


def finished(admitted: calls.Admitted) -> Finished:
    return Finished(admitted, Usage(20, 10), "primary", 5, 3, {"stream": False})


def test_a_batch_of_two_tenants_is_recorded_once_even_when_written_twice(admit, relay_tenant):
    other = factories.TenantFactory(slug="relay-other", price_plan=relay_tenant.price_plan)
    factories.topup(other, "10.00")
    _, other_secret = factories.issue_api_key(other)
    batch = [finished(admit()) for _ in range(3)] + [finished(admit(other_secret)) for _ in range(2)]
    assert calls.relay_record_batch(finished=batch) == [True] * 5
    balances = wallet_balance(relay_tenant), wallet_balance(other)
    # A retry of the same batch (an unclear failure of the first write) stores and charges nothing.
    assert calls.relay_record_batch(finished=batch) == [True] * 5
    assert (wallet_balance(relay_tenant), wallet_balance(other)) == balances
    assert UsageEvent.objects.filter(tenant=relay_tenant).count() == 3
    assert UsageEvent.objects.filter(tenant=other).count() == 2
    assert Hold.objects.filter(status=Hold.Status.SETTLED).count() == 5
    assert not Hold.objects.filter(status=Hold.Status.OPEN).exists()


def record_closing(batch: list[Finished]) -> list[bool]:
    try:
        return calls.relay_record_batch(finished=batch)
    finally:
        connections.close_all()  # this thread's own connection


def test_a_failing_batch_is_written_call_by_call(admit):
    batch = [finished(admit()) for _ in range(4)]
    writes: list[int] = []

    async def write(calls_: list[Finished]) -> list[bool]:
        writes.append(len(calls_))
        if len(calls_) > 1:
            raise RuntimeError("a batch-wide failure")
        return await asyncio.to_thread(record_closing, calls_)

    async def run() -> None:
        recorder = Recorder(asyncio.get_running_loop(), write)
        for call in batch:
            recorder.add(call)
        await recorder.close()

    run_async(run)
    assert writes == [4, 1, 1, 1, 1]
    assert UsageEvent.objects.filter(request_id__in=[c.admitted.request_id for c in batch]).count() == 4


def test_a_graceful_stop_writes_what_the_recorder_holds(relay_stack, relay_key, relay_tenant, fake, settings):
    settings.RELAY_RECORD_INTERVAL_MS = 5000  # nothing would be written before the stop
    settings.RELAY_RECORD_BATCH = 1000
    client = relay_stack.client(relay_key[1])
    response = client.chat.completions.with_raw_response.create(model="gpt-4o", messages=MESSAGES)
    request_id = response.headers["x-request-id"]
    relay_stack.stop()
    event = UsageEvent.objects.get(request_id=request_id)
    assert Hold.objects.get(request_id=request_id).status == Hold.Status.SETTLED
    assert event.output_tokens > 0
