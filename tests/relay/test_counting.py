"""The relay's input estimates: OpenAI's message accounting, and the per-tenant count cache."""

import uuid

import pytest

from metering.tokens import count_tokens
from relay.services import counting


def tiktoken_count(text: str) -> int:
    return count_tokens(model="gpt-4o", text=text).tokens


@pytest.fixture
def counted(monkeypatch) -> list[str]:
    """The texts tiktoken was asked to count, in order."""
    texts: list[str] = []

    def spy(*, model: str, text: str):
        texts.append(text)
        return count_tokens(model=model, text=text)

    monkeypatch.setattr(counting, "count_tokens", spy)
    return texts


def test_each_field_is_counted_on_its_own_as_openai_accounts():
    body = {
        "messages": [
            {"role": "system", "content": "You answer in one line.\n"},
            {"role": "user", "name": "ada", "content": [{"type": "text", "text": "Hi"}, {"type": "text", "text": "!"}]},
        ],
        "tools": [{"type": "function", "function": {"name": "lookup"}}],
    }
    expected = (
        3  # primes the reply
        + 2 * 3  # per message
        + 1  # the name
        + sum(tiktoken_count(t) for t in ("system", "You answer in one line.\n", "user", "ada", "Hi!"))
        + tiktoken_count('[{"type":"function","function":{"name":"lookup"}}]')
    )
    assert counting.chat_input_tokens("gpt-4o", body, tenant_id=1) == expected
    assert counting.chat_input_tokens("gpt-4o", body, tenant_id=1) == expected  # from the cache: the same


def test_a_repeated_prompt_is_counted_once_per_tenant(counted):
    prompt = f"You are the support assistant of shop {uuid.uuid4()}. " * 50

    def body(question: str) -> dict:
        return {"messages": [{"role": "system", "content": prompt}, {"role": "user", "content": question}]}

    first = counting.chat_input_tokens("gpt-4o", body("Where is my order?"), tenant_id=101)
    second = counting.chat_input_tokens("gpt-4o", body("And my refund?"), tenant_id=101)
    assert counted.count(prompt) == 1  # the second call found the system prompt's count
    assert second - first == tiktoken_count("And my refund?") - tiktoken_count("Where is my order?")

    # Another tenant with the same prompt counts it itself: a faster answer must not tell it
    # that someone else sent this text lately.
    counting.chat_input_tokens("gpt-4o", body("Where is my order?"), tenant_id=102)
    assert counted.count(prompt) == 2


def test_a_text_too_long_to_keep_is_counted_every_time(counted):
    long_text = f"{uuid.uuid4()} " + "word " * (counting.CACHE_MAX_CHARS // 5)
    assert len(long_text) > counting.CACHE_MAX_CHARS
    for _ in range(2):
        tokens = counting.responses_input_tokens("gpt-4o", {"input": long_text}, tenant_id=103)
        assert tokens == tiktoken_count(long_text)
    assert counted.count(long_text) == 2


def test_responses_input_uses_the_same_accounting(counted):
    instructions = f"Answer as the archivist {uuid.uuid4()}."
    body = {"instructions": instructions, "input": [{"role": "user", "content": "Find the 1921 ledger."}]}
    expected = 3 + tiktoken_count(instructions) + tiktoken_count("Find the 1921 ledger.")
    assert counting.responses_input_tokens("gpt-4o", body, tenant_id=104) == expected
    assert counting.responses_input_tokens("gpt-4o", body, tenant_id=104) == expected
    assert counted.count(instructions) == 1
