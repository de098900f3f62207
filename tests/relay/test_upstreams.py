"""Operators' upstreams: URL and model validation, keys encrypted at rest and rotated, the commands."""

import io

import pytest
from cryptography.fernet import Fernet
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command

from relay import crypto
from relay.models import Upstream
from relay.services import routing
from relay.services.upstreams import upstream_save

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    "url",
    ["ftp://example.com/v1", "http:///v1", "https://user:pw@example.com/v1", "https://example.com/v1?x=1",
     "https://example.com:99999/v1", "javascript:alert(1)"],
)  # fmt: skip
def test_bad_base_urls_are_refused(url):
    with pytest.raises(ValidationError) as caught:
        upstream_save(name="bad", base_url=url, model_map={"gpt-4o": ""})
    assert "base_url" in caught.value.message_dict
    assert not Upstream.objects.exists()


def test_loopback_is_allowed_for_operators():
    upstream = upstream_save(name="local", base_url="http://127.0.0.1:8089/v1/", model_map={"demo-*": ""})
    assert upstream.base_url == "http://127.0.0.1:8089/v1"


@pytest.mark.parametrize("model_map", [{}, [], {"": "x"}, {"gpt-4o": "gpt-*"}, {"gpt-4o": 5}])
def test_bad_model_maps_are_refused(model_map):
    with pytest.raises(ValidationError) as caught:
        upstream_save(name="bad", base_url="https://example.com/v1", model_map=model_map)
    assert "model_map" in caught.value.message_dict


def test_routing_by_exact_name_and_glob_with_upstream_names():
    upstream_save(name="a", base_url="https://a.example/v1", model_map={"fast": "gpt-4o-mini", "gpt-4o*": ""})
    upstream_save(name="b", base_url="https://b.example/v1", model_map={"gpt-4o": ""}, priority=1)
    upstream_save(name="off", base_url="https://c.example/v1", model_map={"gpt-4o": ""}, priority=0, enabled=False)
    routing.routes_clear()
    routes = routing.routes_table()
    assert [(r.name, target) for r, target in routing.candidates(routes, "gpt-4o")] == [
        ("b", "gpt-4o"),
        ("a", "gpt-4o"),
    ]
    assert [(r.name, target) for r, target in routing.candidates(routes, "fast")] == [("a", "gpt-4o-mini")]
    assert routing.candidates(routes, "claude") == []


def test_upstream_keys_are_encrypted_and_rotate(settings):
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings.RELAY_ENCRYPTION_KEYS = [old]
    upstream = upstream_save(name="p", base_url="https://p.example/v1", model_map={"m": ""}, api_key="sk-live-123")
    assert "sk-live-123" not in upstream.api_key_encrypted
    assert crypto.decrypt(upstream.api_key_encrypted) == "sk-live-123"
    settings.RELAY_ENCRYPTION_KEYS = [new, old]
    out = io.StringIO()
    call_command("relay_reencrypt", stdout=out)
    assert "1 upstream key(s) re-encrypted" in out.getvalue()
    settings.RELAY_ENCRYPTION_KEYS = [new]
    assert crypto.decrypt(Upstream.objects.get().api_key_encrypted) == "sk-live-123"
    settings.RELAY_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]
    with pytest.raises(CommandError, match="keep the old key"):
        call_command("relay_reencrypt")


def test_relay_upstream_command(monkeypatch):
    monkeypatch.setenv("UPSTREAM_KEY", "sk-from-env")
    out = io.StringIO()
    call_command(
        "relay_upstream", "set", "openai", "--base-url", "https://api.openai.com/v1", "--models", '{"gpt-4o*": ""}',
        "--api-key-env", "UPSTREAM_KEY", "--priority", "5", stdout=out,
    )  # fmt: skip
    assert crypto.decrypt(Upstream.objects.get(name="openai").api_key_encrypted) == "sk-from-env"
    call_command("relay_upstream", "set", "openai", "--disable")
    assert not Upstream.objects.get(name="openai").enabled
    call_command("relay_upstream", "list", stdout=out)
    assert "openai\thttps://api.openai.com/v1\tpriority=5" in out.getvalue()
    with pytest.raises(CommandError, match="not valid JSON"):
        call_command("relay_upstream", "set", "x", "--base-url", "https://x.example/v1", "--models", "{")
    with pytest.raises(CommandError, match="base_url"):
        call_command("relay_upstream", "set", "x", "--base-url", "file:///etc/passwd", "--models", '{"m": ""}')
    with pytest.raises(CommandError, match="is not set"):
        call_command("relay_upstream", "set", "x", "--api-key-env", "NOPE_NOT_SET")
    with pytest.raises(CommandError, match="at least 1"):
        call_command("relay_upstream", "set", "openai", "--weight", "0")
