"""Text is counted with tiktoken, exactly as tiktoken counts it, offline."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import tiktoken

from metering import tokens
from metering.models import UsageEvent
from tests.conftest import Credential
from tests.factories import issue_api_key

pytestmark = pytest.mark.django_db

TEXTS = {
    "english": "The quick brown fox jumps over the lazy dog. It's 3.14159 o'clock; résumé naïve café!",
    "chinese": "计量每一个请求，恰好一次。余额不足时返回 402，月底账单精确到分。",  # noqa: RUF001
    "emoji": "🚀🔥 family: 👨‍👩‍👧‍👦 flags: 🇨🇳🇺🇸 skin tones: 👍🏽👋🏿 ✨",
    "special": "<|endoftext|> <|im_start|>system<|im_sep|>hi<|im_end|> <|fim_prefix|><|endofprompt|>",
    "code": "def f(x):\n\treturn {'a': [1, 2, 3]}  # comment\r\n\n\n    ",
    "empty": "",
}

MODELS = [
    ("gpt-4o", "o200k_base"),
    ("gpt-4o-mini", "o200k_base"),
    ("gpt-4.1", "o200k_base"),
    ("gpt-4.1-nano", "o200k_base"),
    ("o1", "o200k_base"),
    ("o1-mini", "o200k_base"),
    ("o3", "o200k_base"),
    ("o3-mini", "o200k_base"),
    ("gpt-5", "o200k_base"),
    ("gpt-5-mini", "o200k_base"),
    ("openai/gpt-4o", "o200k_base"),
    ("gpt-4", "cl100k_base"),
    ("gpt-4-turbo", "cl100k_base"),
    ("gpt-4-0613", "cl100k_base"),
    ("gpt-3.5-turbo", "cl100k_base"),
    ("gpt-3.5-turbo-16k", "cl100k_base"),
    ("claude-3-5-sonnet", "cl100k_base"),
    ("qwen-max", "cl100k_base"),
    ("llama-3.1-70b-instruct", "cl100k_base"),
    ("my-internal-model", "cl100k_base"),
]


def reference(encoding: str, text: str) -> int:
    """tiktoken's own count, read from the same offline files."""
    os.environ.setdefault("TIKTOKEN_CACHE_DIR", tokens._bundled_cache_dir() or "")
    return len(tiktoken.get_encoding(encoding).encode_ordinary(text))


@pytest.mark.parametrize("text_name", list(TEXTS))
@pytest.mark.parametrize(("model", "encoding"), [("gpt-4o", "o200k_base"), ("gpt-4", "cl100k_base")])
def test_event_text_is_counted_like_tiktoken(key_a, text_name, model, encoding):
    text = TEXTS[text_name]
    body = {"request_id": f"{model}-{text_name}", "model": model, "input_text": text, "output_text": text * 2}
    response = key_a.post("/api/v1/events", body)
    assert response.status_code == 201, response.content
    payload = response.json()
    assert payload["input_tokens"] == reference(encoding, text)
    assert payload["output_tokens"] == reference(encoding, text * 2)
    assert payload["encoding"] == encoding
    assert payload["token_source"] == "counted"
    stored = UsageEvent.objects.get(pk=payload["id"])
    assert (stored.input_tokens, stored.encoding) == (payload["input_tokens"], encoding)


def test_special_token_text_counts_as_ordinary_text(key_a):
    text = TEXTS["special"]
    response = key_a.post("/api/v1/tokenize", {"model": "gpt-4o", "text": text})
    encoding = tiktoken.get_encoding("o200k_base")
    assert response.json()["tokens"] == len(encoding.encode_ordinary(text))
    assert response.json()["tokens"] != len(encoding.encode(text, allowed_special="all"))


@pytest.mark.parametrize(("model", "encoding"), MODELS)
def test_tokenize_names_the_encoding(key_a, model, encoding):
    text = TEXTS["english"] + TEXTS["chinese"] + TEXTS["emoji"]
    response = key_a.post("/api/v1/tokenize", {"model": model, "text": text})
    assert response.status_code == 200, response.content
    assert response.json() == {"model": model, "tokens": reference(encoding, text), "encoding": encoding}


def test_text_and_count_mix_across_kinds(key_a):
    body = {"request_id": "mix", "model": "gpt-4o", "input_text": TEXTS["english"], "output_tokens": 7}
    response = key_a.post("/api/v1/events", body)
    assert response.status_code == 201
    assert response.json()["input_tokens"] == reference("o200k_base", TEXTS["english"])
    assert response.json()["output_tokens"] == 7


@pytest.mark.parametrize(
    ("text_field", "count_field"), [("input_text", "input_tokens"), ("output_text", "output_tokens")]
)
def test_text_and_count_for_the_same_kind_is_400(key_a, text_field, count_field):
    body = {"request_id": "both", "model": "gpt-4o", "input_tokens": 1, "output_tokens": 1, text_field: "hello"}
    response = key_a.post("/api/v1/events", body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["details"] == {"field": text_field}
    assert count_field in error["message"]
    assert UsageEvent.objects.count() == 0


def test_cached_tokens_cannot_exceed_counted_input(key_a):
    body = {"request_id": "c", "model": "gpt-4o", "input_text": "hi", "output_tokens": 1, "cached_input_tokens": 50}
    response = key_a.post("/api/v1/events", body)
    assert response.status_code == 400
    assert response.json()["error"]["details"] == {"field": "cached_input_tokens"}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"text": "hi"}, "model"),
        ({"model": "", "text": "hi"}, "model"),
        ({"model": 4, "text": "hi"}, "model"),
        ({"model": "gpt-4o"}, "text"),
        ({"model": "gpt-4o", "text": 12}, "text"),
        ({"model": "gpt-4o", "text": ["a"]}, "text"),
    ],
)
def test_tokenize_bad_input(key_a, body, field):
    response = key_a.post("/api/v1/tokenize", body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["details"] == {"field": field}
    assert field in error["message"]


@pytest.mark.parametrize("extra", ["tenant", "encoding"])
def test_tokenize_unknown_fields(key_a, extra):
    response = key_a.post("/api/v1/tokenize", {"model": "gpt-4o", "text": "hi", extra: "x"})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "unknown_field"


def test_tokenize_needs_the_ingest_scope(tenant_a):
    reader = Credential(*issue_api_key(tenant_a, scopes=["read"]))
    response = reader.post("/api/v1/tokenize", {"model": "gpt-4o", "text": "hi"})
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "insufficient_scope"


def test_tokenize_for_a_service_token(service):
    response = service.post("/api/v1/tokenize", {"model": "gpt-4o", "text": "hello world"})
    assert response.status_code == 200
    assert response.json()["tokens"] == 2


OFFLINE_PROBE = """
import socket, sys
def refuse(*args, **kwargs):
    raise OSError("network access attempted")
socket.socket.connect = refuse
socket.create_connection = refuse
import tiktoken.load
def no_download(blobpath):
    raise AssertionError(f"download attempted: {blobpath}")
tiktoken.load.read_file = no_download
from metering import tokens
import os
for model in ("gpt-4o", "gpt-4", "text-davinci-003", "unknown-model"):
    print(model, tokens.count_tokens(model=model, text="hello world, 你好").encoding)
print("CACHE", os.environ["TIKTOKEN_CACHE_DIR"])
"""


def test_counting_works_offline_from_the_litellm_wheel(tmp_path):
    env = {key: value for key, value in os.environ.items() if key not in ("TIKTOKEN_CACHE_DIR", "DATA_GYM_CACHE_DIR")}
    env.update(TMPDIR=str(tmp_path), HTTP_PROXY="http://127.0.0.1:9", HTTPS_PROXY="http://127.0.0.1:9")
    result = subprocess.run(
        [sys.executable, "-c", OFFLINE_PROBE],
        env=env,
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    lines = dict(line.split(" ", 1) for line in result.stdout.strip().splitlines())
    assert lines["gpt-4o"] == "o200k_base"
    assert lines["gpt-4"] == "cl100k_base"
    assert lines["text-davinci-003"] == "p50k_base"
    assert lines["unknown-model"] == "cl100k_base"
    cache = Path(lines["CACHE"])
    assert cache.parts[-3:] == ("litellm", "litellm_core_utils", "tokenizers")
    assert not (tmp_path / "data-gym-cache").exists()  # nothing fetched into the default cache
