"""Token estimates before a call and counts of what was delivered, with tiktoken.

Chat input follows OpenAI's message accounting (the cookbook's num_tokens_from_messages):
3 tokens per message, 1 more for a name, 3 to prime the reply, plus the tokens of every
field's text, each counted on its own. Tool definitions count as their JSON. Images and audio
parts are not counted (no text).

The texts of a chat or Responses estimate are counted through a small per-process cache
(infra/cache.py's BoundedCache "relay_token_counts"), per tenant: a system prompt or a set of
tool definitions comes again with every call of an application, and counting a 3,000-token
prompt took half a millisecond each time. Per tenant, so that whether a text was seen lately
(a faster answer) says nothing about another tenant's prompts.
"""

import functools
from typing import Any

import orjson

from infra.cache import BoundedCache
from metering.tokens import count_tokens, encoding_name_for

TOKENS_PER_MESSAGE = 3
TOKENS_PER_NAME = 1
REPLY_PRIMING = 3


class BadRequest(Exception):
    """A request body the relay refuses (400 invalid_request_error), naming the parameter."""

    def __init__(self, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message, self.param, self.code = message, param, code


def _text_of(content: Any) -> str:
    """The text of a message's content: a string, or a list of parts with `text`."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(part["text"] for part in content if isinstance(part, dict) and isinstance(part.get("text"), str))
    return ""


def tokens(model: str, text: str) -> int:
    return count_tokens(model=model, text=text).tokens if text else 0


# Bounds the cache's memory per process: at most CACHE_ENTRIES texts of at most CACHE_MAX_CHARS
# characters each (16 MiB of ASCII text, 64 MiB if every character took four bytes); a longer
# text is counted every time.
CACHE_ENTRIES = 1024
CACHE_MAX_CHARS = 16_384


_counts: BoundedCache[int] = BoundedCache("relay_token_counts", max_size=CACHE_ENTRIES)


def _input_tokens(tenant_id: int, model: str, texts: list[str]) -> int:
    total = 0
    for text in texts:
        if len(text) > CACHE_MAX_CHARS:
            total += tokens(model, text)
        elif text:
            total += _counts.get_or_load((tenant_id, model, text), functools.partial(tokens, model, text))
    return total


def chat_input_tokens(model: str, body: dict[str, Any], *, tenant_id: int) -> int:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("messages must be a non-empty array of message objects.", "messages")
    texts: list[str] = []
    total = REPLY_PRIMING
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            raise BadRequest(f"messages[{index}] must be an object.", f"messages[{index}]")
        total += TOKENS_PER_MESSAGE
        for key, value in message.items():
            if key == "content":
                texts.append(_text_of(value))
            elif key == "tool_calls" and isinstance(value, list):
                texts.append(orjson.dumps(value).decode())
            elif isinstance(value, str):
                texts.append(value)
                if key == "name":
                    total += TOKENS_PER_NAME
    for extra in ("tools", "functions", "response_format"):
        if body.get(extra):
            texts.append(orjson.dumps(body[extra]).decode())
    return total + _input_tokens(tenant_id, model, texts)


def responses_input_tokens(model: str, body: dict[str, Any], *, tenant_id: int) -> int:
    value = body.get("input")
    texts: list[str] = []
    if isinstance(body.get("instructions"), str):
        texts.append(body["instructions"])
    total = 0
    if isinstance(value, str):
        texts.append(value)
    elif isinstance(value, list):
        for item in value:
            if isinstance(item, dict):
                total += TOKENS_PER_MESSAGE
                texts.append(_text_of(item.get("content")) or str(item.get("output") or item.get("arguments") or ""))
    else:
        raise BadRequest("input must be a string or an array of input items.", "input")
    if body.get("tools"):
        texts.append(orjson.dumps(body["tools"]).decode())
    return total + _input_tokens(tenant_id, model, texts)


def embeddings_input_tokens(model: str, body: dict[str, Any]) -> int:
    """Not through the cache: documents to embed rarely come twice, and a batch of them would
    push every tenant's prompts out of it."""
    value = body.get("input")
    if isinstance(value, str):
        return tokens(model, value)
    if isinstance(value, list) and value:
        if all(isinstance(item, str) for item in value):
            return sum(tokens(model, item) for item in value)
        if all(isinstance(item, int) for item in value):
            return len(value)
        if all(isinstance(item, list) for item in value):
            return sum(len(item) for item in value)
    raise BadRequest("input must be a string, an array of strings or an array of token arrays.", "input")


def max_output(body: dict[str, Any], names: tuple[str, ...], default: int, ceiling: int) -> tuple[int, int]:
    """(max tokens of one choice, n), validated: the request may produce their product."""
    for name in names:
        value = body.get(name)
        if value is None:
            continue
        if type(value) is not int or not 1 <= value <= ceiling:
            raise BadRequest(f"{name} must be a whole number from 1 to {ceiling}.", name)
        break
    else:
        value = default
    n = body.get("n", 1)
    if n is None:
        n = 1
    if type(n) is not int or not 1 <= n <= 128:
        raise BadRequest("n must be a whole number from 1 to 128.", "n")
    return int(value), n


def encoding_for(model: str) -> str:
    return encoding_name_for(model)
