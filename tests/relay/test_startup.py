"""Lifespan startup warms the relay process: the token encodings are loaded before the first
call, and a failure there does not stop the relay from starting."""

import logging

from metering import tokens
from relay import gateway
from tests.relay.conftest import run_async


def test_the_encodings_are_loaded_before_the_first_call():
    tokens._encoding.cache_clear()
    run_async(gateway.process_warm)
    loaded = tokens._encoding.cache_info()
    assert loaded.currsize == 2  # o200k_base and cl100k_base
    tokens.count_tokens(model="gpt-4o", text="hello")
    tokens.count_tokens(model="some-unknown-model", text="hello")
    assert tokens._encoding.cache_info().misses == loaded.misses  # the first calls loaded nothing


def test_a_failure_to_warm_is_logged_not_raised(monkeypatch, caplog):
    def missing() -> None:  # what loading does when the encoding files are absent
        raise FileNotFoundError("o200k_base.tiktoken")

    monkeypatch.setattr(gateway, "encodings_load", missing)
    with caplog.at_level(logging.WARNING, logger="relay"):
        run_async(gateway.process_warm)
    assert "relay_warm_failed" in caplog.text
