"""The relay through the official openai SDK, against the live ASGI server, PostgreSQL, Redis and a
fake upstream: what the client sees, and that the ledger holds exactly one correct charge (or none)."""

import asyncio
import time
from decimal import Decimal

import httpx
import openai
import pytest
from prometheus_client import REGISTRY

from accounts.services import api_key_revoke
from billing.models import Hold
from metering.models import UsageEvent
from metering.tokens import count_tokens
from relay.models import RelayTranscript, TenantRelaySettings
from relay.recorder import recorders_flush
from relay.services.calls import _store_content
from relay.services.upstreams import upstream_save
from tests import factories
from tests.assertions import metric_value
from tests.relay.conftest import run_async, wallet_balance
from tests.relay.fake_upstream import FakeUpstream, reply_text

MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hello to the relay."}]


def client_for(relay_stack, secret: str) -> openai.OpenAI:
    return relay_stack.client(secret)


def settled(request_id: str, timeout: float = 10) -> UsageEvent:
    """The call's one event, once the relay recorded it (after the response ended)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        recorders_flush()  # what the recorder holds is written before we look
        events = list(UsageEvent.objects.filter(request_id=request_id))
        if events:
            assert len(events) == 1
            hold = Hold.objects.get(request_id=request_id)
            if hold.status == Hold.Status.SETTLED:
                return events[0]
        time.sleep(0.05)
    pytest.fail(f"no settled event for {request_id}")


def released(request_id: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        hold = Hold.objects.filter(request_id=request_id).first()
        if hold is not None and hold.status == Hold.Status.RELEASED:
            assert not UsageEvent.objects.filter(request_id=request_id).exists()
            return
        time.sleep(0.05)
    pytest.fail(f"hold of {request_id} not released")


def tokens(text: str) -> int:
    return count_tokens(model="gpt-4o", text=text).tokens


def expected_cost(event: UsageEvent) -> Decimal:
    uncached = event.input_tokens - event.cached_input_tokens
    return (
        Decimal(uncached) * Decimal("2.5") + Decimal(event.cached_input_tokens) * Decimal("1.25")
        + Decimal(event.output_tokens) * Decimal(10)
    ) / Decimal(1_000_000)  # fmt: skip


@pytest.mark.parametrize("key_cache_seconds", [0, 60])
def test_chat_with_usage_is_charged_once_from_the_upstream_usage(
    relay_stack, relay_key, relay_tenant, fake, key_cache_seconds
):
    before = wallet_balance(relay_tenant)
    raw = client_for(relay_stack, relay_key[1]).chat.completions.with_raw_response.create(
        model="gpt-4o", messages=MESSAGES, service_tier="default"
    )
    completion = raw.parse()
    request_id = raw.headers["x-request-id"]
    assert completion.choices[0].message.content == "".join(reply_text(0))
    assert completion.usage.prompt_tokens == fake.prompt_tokens
    event = settled(request_id)
    assert (event.input_tokens, event.output_tokens, event.cached_input_tokens) == (
        fake.prompt_tokens, completion.usage.completion_tokens, 5,
    )  # fmt: skip
    assert event.token_source == "reported"
    assert event.reasoning_tokens == 3 and event.service_tier == "default"
    assert event.metadata["service_tier"] == "default"
    assert event.upstream == "primary" and event.ttft_ms is not None and event.latency_ms >= event.ttft_ms
    assert event.cost == expected_cost(event)
    assert wallet_balance(relay_tenant) == before - event.cost.quantize(Decimal("0.000001"), rounding="ROUND_HALF_EVEN")
    assert fake.bodies[-1]["model"] == "gpt-4o"
    if key_cache_seconds:  # the second call found its key in the process's cache: charged the same way
        again = client_for(relay_stack, relay_key[1]).chat.completions.with_raw_response.create(
            model="gpt-4o", messages=MESSAGES
        )
        second = settled(again.headers["x-request-id"])
        assert second.cost == event.cost and UsageEvent.objects.count() == 2


def test_an_upstream_cookie_never_rides_along_on_another_call(relay_stack, relay_key, relay_tenant, fake):
    other = factories.TenantFactory(slug="relay-other-tenant", price_plan=relay_tenant.price_plan)
    factories.topup(other, "10.00")
    _, other_secret = factories.issue_api_key(other)
    # By name: aiohttp's default jar ignores cookies of bare IP addresses, so this one would keep it.
    upstream_save(name="primary", base_url=fake.base_url.replace("127.0.0.1", "localhost"))
    fake.response_headers = {"Set-Cookie": "session=tenant-a-affinity; Path=/"}
    first = client_for(relay_stack, relay_key[1]).chat.completions.with_raw_response.create(
        model="gpt-4o", messages=MESSAGES
    )
    assert "set-cookie" not in first.headers  # the relay answers with its own headers only
    client_for(relay_stack, other_secret).chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert [h.get("Cookie") for h in fake.request_headers] == [None, None]


def test_chat_without_usage_is_counted_from_the_delivered_text(relay_stack, relay_key, fake):
    fake.behavior = "no_usage"
    raw = client_for(relay_stack, relay_key[1]).chat.completions.with_raw_response.create(
        model="gpt-4o", messages=MESSAGES
    )
    content = raw.parse().choices[0].message.content
    event = settled(raw.headers["x-request-id"])
    assert event.token_source == "counted" and event.encoding == "o200k_base"
    assert event.output_tokens == tokens(content)
    # Input: OpenAI's message accounting (3 per message, 3 to prime the reply, each field's text).
    fields = ("system", "Be brief.", "user", "Say hello to the relay.")
    assert event.input_tokens == 3 + 2 * 3 + sum(tokens(text) for text in fields)
    assert event.cost == expected_cost(event)


def _stream_text(chunks) -> str:
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def test_stream_with_usage_requested_by_the_client(relay_stack, relay_key, fake):
    raw = client_for(relay_stack, relay_key[1]).chat.completions.with_raw_response.create(
        model="gpt-4o", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(raw.parse())
    assert chunks[-1].usage is not None and chunks[-1].choices == []
    event = settled(raw.headers["x-request-id"])
    assert event.token_source == "reported"
    assert event.output_tokens == chunks[-1].usage.completion_tokens == tokens(_stream_text(chunks))


def test_stream_usage_chunk_is_asked_for_and_stripped_when_the_client_did_not(relay_stack, relay_key, fake):
    raw = client_for(relay_stack, relay_key[1]).chat.completions.with_raw_response.create(
        model="gpt-4o", messages=MESSAGES, stream=True
    )
    chunks = list(raw.parse())
    assert all(chunk.usage is None for chunk in chunks)
    assert fake.bodies[-1]["stream_options"] == {"include_usage": True}
    event = settled(raw.headers["x-request-id"])
    assert event.token_source == "reported" and event.output_tokens == tokens(_stream_text(chunks))


def test_stream_without_usage_is_counted(relay_stack, relay_key, fake):
    fake.behavior = "no_usage"
    raw = client_for(relay_stack, relay_key[1]).chat.completions.with_raw_response.create(
        model="gpt-4o", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(raw.parse())
    event = settled(raw.headers["x-request-id"])
    assert event.token_source == "counted"
    assert event.output_tokens == tokens(_stream_text(chunks)) > 0


def test_stream_cut_midway_charges_what_was_delivered(relay_stack, relay_key, fake):
    fake.behavior = "cut"
    raw = client_for(relay_stack, relay_key[1]).chat.completions.with_raw_response.create(
        model="gpt-4o", messages=MESSAGES, stream=True
    )
    chunks = list(raw.parse())
    text = _stream_text(chunks)
    assert text and text != "".join(reply_text(0))
    event = settled(raw.headers["x-request-id"])
    assert event.token_source == "counted" and event.output_tokens == tokens(text)


def test_client_disconnect_charges_what_was_sent_once(relay_stack, relay_key, fake):
    fake.chunks, fake.interval = 20, 0.1
    with httpx.Client(timeout=10) as http, http.stream(
        "POST", f"{relay_stack.base_url}/chat/completions",
        headers={"Authorization": f"Bearer {relay_key[1]}"},
        json={"model": "gpt-4o", "messages": MESSAGES, "stream": True},
    ) as response:  # fmt: skip
        request_id = response.headers["x-request-id"]
        received = b""
        for part in response.iter_bytes():
            received += part
            if received.count(b"data:") >= 4:
                break
    event = settled(request_id)
    assert event.token_source == "counted" and event.metadata.get("client_disconnected") is True
    full = tokens("".join(reply_text(0, 20)))
    assert 0 < event.output_tokens < full
    time.sleep(0.5)
    assert UsageEvent.objects.filter(request_id=request_id).count() == 1


@pytest.mark.parametrize(
    ("behavior", "status", "error"), [("429", 429, openai.RateLimitError), ("500", 502, openai.InternalServerError)]
)
def test_upstream_error_before_output_is_not_charged(
    relay_stack, relay_key, relay_tenant, fake, behavior, status, error
):
    fake.behavior = behavior
    before = wallet_balance(relay_tenant)
    with pytest.raises(error) as caught:
        client_for(relay_stack, relay_key[1]).chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert caught.value.status_code == status
    assert caught.value.body["type"] in ("requests", "server_error")
    if behavior == "429":
        assert caught.value.response.headers["retry-after"] == "7"
    released(caught.value.response.headers["x-request-id"])
    assert wallet_balance(relay_tenant) == before


def test_upstream_4xx_passes_through_uncharged(relay_stack, relay_key, fake):
    fake.behavior = "400"
    with pytest.raises(openai.BadRequestError) as caught:
        client_for(relay_stack, relay_key[1]).chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert caught.value.param == "temperature"
    released(caught.value.response.headers["x-request-id"])


@pytest.fixture
def second():
    server = FakeUpstream("second")
    server.start()
    yield server
    server.stop()


def test_failover_to_the_next_upstream(relay_stack, relay_key, fake, second):
    upstream_save(name="secondary", base_url=second.base_url, model_map={"gpt-4o*": ""}, priority=200)
    fake.behavior = "500"
    raw = client_for(relay_stack, relay_key[1]).chat.completions.with_raw_response.create(
        model="gpt-4o", messages=MESSAGES, stream=True
    )
    assert _stream_text(list(raw.parse())) == "".join(reply_text(0))
    event = settled(raw.headers["x-request-id"])
    assert event.upstream == "secondary" and fake.calls == 1 and second.calls == 1


def test_slow_first_byte_fails_over(relay_stack, relay_key, fake, second):
    upstream_save(name="primary", first_byte_timeout_ms=300)
    upstream_save(name="secondary", base_url=second.base_url, model_map={"gpt-4o*": ""}, priority=200)
    fake.first_byte_delay = 2
    raw = client_for(relay_stack, relay_key[1]).chat.completions.with_raw_response.create(
        model="gpt-4o", messages=MESSAGES, stream=True
    )
    list(raw.parse())
    assert settled(raw.headers["x-request-id"]).upstream == "secondary"


def test_circuit_breaker_skips_a_failing_upstream(relay_stack, relay_key, fake, second, settings):
    settings.RELAY_BREAKER_FAILURES = 2
    upstream_save(name="secondary", base_url=second.base_url, model_map={"gpt-4o*": ""}, priority=200)
    fake.behavior = "500"
    client = client_for(relay_stack, relay_key[1])
    for _ in range(4):
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert fake.calls == 2 and second.calls == 4


def test_tool_calls_and_n_are_counted(relay_stack, relay_key, fake):
    fake.behavior = "tools"
    client = client_for(relay_stack, relay_key[1])
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o", messages=MESSAGES, stream=True)
    chunks = list(raw.parse())
    arguments = "".join(
        call.function.arguments or "" for c in chunks if c.choices for call in (c.choices[0].delta.tool_calls or [])
    )
    assert arguments
    assert settled(raw.headers["x-request-id"]).output_tokens == tokens("get_weather" + arguments)

    fake.behavior = "no_usage"
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o", messages=MESSAGES, n=2, max_tokens=50)
    completion = raw.parse()
    assert len(completion.choices) == 2
    event = settled(raw.headers["x-request-id"])
    assert event.output_tokens == sum(tokens(c.message.content) for c in completion.choices)
    hold = Hold.objects.get(request_id=raw.headers["x-request-id"])
    assert hold.estimated_tokens == event.input_tokens + 100  # max_tokens x n held


def test_embeddings_and_responses(relay_stack, relay_key, fake):
    client = client_for(relay_stack, relay_key[1])
    raw = client.embeddings.with_raw_response.create(model="gpt-4o-mini-embed", input=["one two", "three"])
    assert len(raw.parse().data) == 2
    event = settled(raw.headers["x-request-id"])
    assert (event.input_tokens, event.output_tokens) == (tokens("one two") + tokens("three"), 0)

    raw = client.responses.with_raw_response.create(model="gpt-4o", input="Hello", max_output_tokens=100)
    response = raw.parse()
    assert response.output_text == "".join(reply_text(0))
    event = settled(raw.headers["x-request-id"])
    assert (event.input_tokens, event.cached_input_tokens, event.reasoning_tokens) == (17, 4, 2)

    raw = client.responses.with_raw_response.create(model="gpt-4o", input="Hello", stream=True)
    kinds = [event.type for event in raw.parse()]
    assert kinds[-1] == "response.completed"
    assert settled(raw.headers["x-request-id"]).output_tokens == tokens("".join(reply_text(0)))


def test_async_client_and_models(relay_stack, relay_key, fake):
    async def go():
        client = openai.AsyncOpenAI(base_url=relay_stack.base_url, api_key=relay_key[1], max_retries=0)
        stream = await client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True)
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        models = await client.models.list()
        await client.close()
        return text, [m.id for m in models.data]

    text, models = run_async(go)
    assert text == "".join(reply_text(0))
    assert models == []  # the upstream serves a glob only: nothing exact to list
    upstream_save(name="primary", model_map={"gpt-4o*": "", "gpt-4o": "", "gpt-4o-mini": "", "secret-model": ""})
    relay_key[0].allowed_models = ["gpt-4o*"]
    relay_key[0].save()
    assert [m.id for m in client_for(relay_stack, relay_key[1]).models.list().data] == ["gpt-4o", "gpt-4o-mini"]


@pytest.mark.parametrize("key_cache_seconds", [60])
def test_refusals_in_one_hold_group_reach_their_own_call_only(relay_stack, relay_key, relay_tenant, fake):
    """Concurrent calls of one key, held in groups: each bad one is answered alone, before any
    upstream call, and the good ones go through and are charged once."""
    client = openai.AsyncOpenAI(base_url=relay_stack.base_url, api_key=relay_key[1], max_retries=0, timeout=20)
    asks = [{"model": "gpt-4o"}, {"model": "claude-x"}, {"model": "gpt-4o", "max_tokens": -5},
            {"model": "gpt-4o", "max_tokens": 1_000_000, "n": 100}] * 5  # fmt: skip

    async def one(ask: dict) -> int:
        try:
            await client.chat.completions.create(messages=MESSAGES, **ask)
        except openai.APIStatusError as exc:
            return exc.status_code
        return 200

    async def run() -> list[int]:
        try:
            warm = await client.chat.completions.create(model="gpt-4o", messages=MESSAGES)  # caches the key
            assert warm.choices
            return await asyncio.gather(*(one(ask) for ask in asks))
        finally:
            await client.close()

    assert run_async(run) == [200, 404, 400, 402] * 5
    assert fake.calls == 1 + 5
    recorders_flush()
    deadline = time.monotonic() + 10
    while Hold.objects.filter(status=Hold.Status.OPEN).exists():
        assert time.monotonic() < deadline, "holds still open"
        time.sleep(0.05)
    assert UsageEvent.objects.count() == 6


def test_refusals_use_openai_errors_before_any_upstream_call(relay_stack, relay_key, relay_tenant, fake):
    with pytest.raises(openai.AuthenticationError) as caught:
        client_for(relay_stack, "tb_wrong").chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert caught.value.code == "invalid_api_key" and caught.value.response.headers["x-request-id"]
    relay_key[0].allowed_models = ["gpt-4o-mini"]
    relay_key[0].save()
    with pytest.raises(openai.PermissionDeniedError) as caught:
        client_for(relay_stack, relay_key[1]).chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert caught.value.code == "model_not_allowed"
    relay_key[0].allowed_models = []
    relay_key[0].save()
    with pytest.raises(openai.NotFoundError):
        client_for(relay_stack, relay_key[1]).chat.completions.create(model="claude-x", messages=MESSAGES)
    with pytest.raises(openai.BadRequestError) as caught:
        client_for(relay_stack, relay_key[1]).chat.completions.create(model="gpt-4o", messages=MESSAGES, max_tokens=-5)
    assert caught.value.param == "max_tokens"
    with pytest.raises(openai.APIStatusError) as caught:  # 402
        client_for(relay_stack, relay_key[1]).chat.completions.create(
            model="gpt-4o", messages=MESSAGES, max_tokens=1_000_000, n=100
        )
    assert caught.value.status_code == 402 and caught.value.code == "insufficient_quota"
    relay_key[0].rpm_limit = 1
    relay_key[0].save()
    client_for(relay_stack, relay_key[1]).chat.completions.create(model="gpt-4o", messages=MESSAGES)
    with pytest.raises(openai.RateLimitError) as caught:
        client_for(relay_stack, relay_key[1]).chat.completions.create(model="gpt-4o", messages=MESSAGES)
    headers = caught.value.response.headers
    assert headers["x-ratelimit-limit-requests"] == "1" and headers["x-ratelimit-remaining-requests"] == "0"
    assert fake.calls == 1


def test_a_key_limited_to_networks_is_judged_by_the_one_client_address_rule(relay_stack, relay_key, fake, settings):
    """accounts/client_ip.py's rule, as on the portal: X-Forwarded-For counts only through the
    TRUSTED_PROXY_COUNT proxies declared, never because the peer is loopback."""
    relay_key[0].allowed_networks = ["10.0.0.0/8"]
    relay_key[0].save()
    spoofed = openai.OpenAI(
        base_url=relay_stack.base_url,
        api_key=relay_key[1],
        max_retries=0,
        default_headers={"X-Forwarded-For": "10.1.2.3"},
    )
    with pytest.raises(openai.PermissionDeniedError) as caught:
        spoofed.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert caught.value.code == "network_not_allowed" and fake.calls == 0
    settings.TRUSTED_PROXY_COUNT = 1  # now a proxy in front appended the client's address
    assert spoofed.chat.completions.create(model="gpt-4o", messages=MESSAGES).choices
    spoofed.close()


@pytest.mark.parametrize("key_cache_seconds", [60])
def test_each_call_counts_one_key_lookup(relay_stack, relay_key, fake):
    """The gateway peeks at the key cache to choose a call's path; only the lookup that follows
    counts, so the cache's hit rate means what it says."""

    def lookups() -> tuple[float, float]:
        hits = metric_value("tokenbill_cache_hits_total", cache="relay_api_keys")
        return hits, metric_value("tokenbill_cache_misses_total", cache="relay_api_keys")

    hits, misses = lookups()
    client = client_for(relay_stack, relay_key[1])
    for _ in range(3):
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    after_hits, after_misses = lookups()
    assert (after_hits - hits, after_misses - misses) == (2, 1)


def test_a_revoked_key_reaches_the_relay_within_its_key_cache_time(relay_stack, relay_key, settings):
    settings.RELAY_KEY_CACHE_SECONDS = 0.5
    client = client_for(relay_stack, relay_key[1])
    client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    api_key_revoke(api_key=relay_key[0])
    time.sleep(0.6)
    with pytest.raises(openai.PermissionDeniedError) as caught:
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert caught.value.code == "key_revoked"


def test_content_is_kept_only_when_an_operator_turns_it_on(relay_stack, relay_key, relay_tenant, fake):
    client = client_for(relay_stack, relay_key[1])
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o", messages=MESSAGES)
    settled(raw.headers["x-request-id"])
    assert not RelayTranscript.objects.exists()
    TenantRelaySettings.objects.create(tenant=relay_tenant, store_content=True)
    _store_content.clear()
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o", messages=MESSAGES)
    request_id = raw.headers["x-request-id"]
    settled(request_id)
    transcript = RelayTranscript.objects.get(request_id=request_id)
    assert transcript.request["messages"] == MESSAGES
    assert transcript.response_text == raw.parse().choices[0].message.content


def test_upstream_health_is_exported_as_metrics(relay_stack, relay_key, fake):
    def sample(outcome: str) -> float:
        return (
            REGISTRY.get_sample_value(
                "tokenbill_relay_upstream_calls_total", {"upstream": "primary", "outcome": outcome}
            )
            or 0.0
        )

    before_ok, before_failed = sample("ok"), sample("http_5xx")
    client = client_for(relay_stack, relay_key[1])
    client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    fake.behavior = "500"
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert (sample("ok"), sample("http_5xx")) == (before_ok + 1, before_failed + 1)


def test_priority_calls_pay_the_priority_row_and_over_length_is_refused_first(
    relay_stack, relay_key, relay_tenant, fake
):
    plan = relay_tenant.price_plan
    default = plan.prices.get(model_pattern="gpt-4o")
    factories.PriceFactory(
        plan=plan, model_pattern="gpt-4o", service_tier="priority", effective_from=default.effective_from,
        input_per_mtok="5", output_per_mtok="20", cached_input_per_mtok="2.5", max_output_tokens=1_000,
    )  # fmt: skip
    client = client_for(relay_stack, relay_key[1])
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o", messages=MESSAGES, service_tier="priority")
    event = settled(raw.headers["x-request-id"])
    assert event.service_tier == "priority" and event.price_id != default.pk
    assert event.cost == 2 * expected_cost(event)  # every rate of the priority row is twice the default's
    calls = fake.calls
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES, service_tier="priority", max_tokens=1_001)
    assert caught.value.code == "context_length_exceeded" and caught.value.param == "max_tokens"
    assert "max_output_tokens" in caught.value.message and "1001" in caught.value.message
    assert fake.calls == calls  # refused before any upstream call
    # The limit is per completion: n=2 at 1,000 each holds 2,000 tokens and is not over it.
    two = client.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=MESSAGES, service_tier="priority", max_tokens=1_000, n=2
    )
    assert len(two.parse().choices) == 2 and fake.calls == calls + 1
    client.chat.completions.create(model="gpt-4o", messages=MESSAGES, max_tokens=1_001)  # the default row has no limit
