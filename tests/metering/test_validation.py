"""Bad input is refused with 400/413/415, a message naming the field, and nothing stored."""

import datetime as dt
import json

import pytest
from django.test import override_settings
from django.utils import timezone

from billing.models import LedgerEntry
from metering.limits import EVENT_MAX_TOKENS as MAX_TOKENS
from metering.models import UsageEvent
from tests.factories import EventBodyFactory

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _nothing_stored():
    yield
    assert UsageEvent.objects.count() == 0
    assert LedgerEntry.objects.count() == 0


def _future(seconds: int) -> str:
    return (timezone.now() + dt.timedelta(seconds=seconds)).isoformat()


# (field named in the error, body overrides, words the message must contain)
BAD_EVENTS = [
    ("input_tokens", {"input_tokens": -1}, ">= 0"),
    ("output_tokens", {"output_tokens": -5}, ">= 0"),
    ("input_tokens", {"input_tokens": 1.0}, "float"),
    ("output_tokens", {"output_tokens": 1.5}, "float"),
    ("input_tokens", {"input_tokens": MAX_TOKENS + 1}, f"<= {MAX_TOKENS}"),
    ("input_tokens", {"input_tokens": 2**64}, f"<= {MAX_TOKENS}"),
    ("cached_input_tokens", {"cached_input_tokens": -(2**64)}, ">= 0"),
    ("input_tokens", {"input_tokens": True}, "boolean"),
    ("output_tokens", {"output_tokens": False}, "boolean"),
    ("cache_write_tokens", {"cache_write_tokens": True}, "boolean"),
    ("input_tokens", {"input_tokens": "1000"}, "str"),
    ("input_tokens", {"input_tokens": None}, "whole number"),
    ("cached_input_tokens", {"cached_input_tokens": 600, "cache_write_tokens": 401}, "input_tokens"),
    ("cached_input_tokens", {"cached_input_tokens": 1001}, "input_tokens"),
    ("request_id", {"request_id": None}, "required"),
    ("request_id", {"request_id": "x" * 129}, "128"),
    ("request_id", {"request_id": ""}, "1 to 128"),
    ("request_id", {"request_id": "abc\x00def"}, "printable"),
    ("request_id", {"request_id": "line\nbreak"}, "printable"),
    ("request_id", {"request_id": "bell\x07"}, "printable"),
    ("request_id", {"request_id": " padded"}, "spaces"),
    ("request_id", {"request_id": 42}, "string"),
    ("model", {"model": None}, "required"),
    ("model", {"model": "m" * 201}, "200"),
    ("timestamp", {"timestamp": "2026-11-23T10:00:00"}, "zone"),
    ("timestamp", {"timestamp": "2026-11-23"}, "zone"),
    ("timestamp", {"timestamp": "yesterday"}, "ISO 8601"),
    ("timestamp", {"timestamp": "23/11/2026 10:00"}, "ISO 8601"),
    ("timestamp", {"timestamp": 1_795_000_000}, "ISO 8601"),
    ("latency_ms", {"latency_ms": -1}, "latency_ms"),
    ("latency_ms", {"latency_ms": 1.5}, "latency_ms"),
    ("metadata", {"metadata": {"nested": {"a": 1}}}, "flat"),
    ("metadata", {"metadata": {"list": [1, 2]}}, "flat"),
    ("metadata", {"metadata": "team=search"}, "object"),
    ("metadata", {"metadata": {f"k{i}": i for i in range(33)}}, "32"),
    ("metadata", {"metadata": {"note": "x" * 513}}, "512"),
    ("metadata", {"metadata": {"k" * 65: 1}}, "64"),
    ("input_text", {"input_text": "hello"}, "not both"),
    ("output_text", {"output_text": 7}, "string"),
    ("api_key", {"api_key": "tbk_whatever"}, "service token"),
    ("tenant", {"tenant": "globex"}, "Unknown field"),
    ("tenant_id", {"tenant_id": 2}, "Unknown field"),
    ("colour", {"colour": "blue"}, "Unknown field"),
]


def _body(overrides: dict) -> dict:
    """An event with `overrides`; a None request_id or model means the field is left out."""
    body = EventBodyFactory(**overrides)
    return {name: value for name, value in body.items() if value is not None or name not in ("request_id", "model")}


def _ids(case) -> str:
    field, overrides, _ = case
    return f"{field}-{str(next(iter(overrides.values())))[:12]}"


@pytest.mark.parametrize(("field", "overrides", "words"), BAD_EVENTS, ids=[_ids(c) for c in BAD_EVENTS])
def test_single_event_rejects_with_the_field_named(key_a, field, overrides, words):
    response = key_a.post("/api/v1/events", _body(overrides))
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["details"] == {"field": field}
    assert field in error["message"]
    assert words in error["message"]


@pytest.mark.parametrize(("field", "overrides", "words"), BAD_EVENTS, ids=[_ids(c) for c in BAD_EVENTS])
def test_batch_item_rejects_with_the_field_named(key_a, field, overrides, words):
    response = key_a.post("/api/v1/events/batch", {"events": [_body(overrides)]})
    assert response.status_code == 200
    (item,) = response.json()["results"]
    assert item["status"] == "rejected"
    assert item["error"]["field"] == field
    assert words in item["error"]["message"]


def test_missing_token_counts_are_required(key_a):
    response = key_a.post("/api/v1/events", {"request_id": "r", "model": "gpt-4o", "output_tokens": 1})
    assert response.status_code == 400
    assert response.json()["error"]["details"] == {"field": "input_tokens"}


def test_timestamp_more_than_five_minutes_ahead_is_refused(key_a):
    response = key_a.post("/api/v1/events", EventBodyFactory(timestamp=_future(5 * 60 + 30)))
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "timestamp_in_future"
    assert error["details"] == {"field": "timestamp"}


def _raw(cred, path: str, body: bytes | str, content_type: str = "application/json"):
    return cred.client.generic("POST", path, body, content_type=content_type)


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity", "1e400"])
@pytest.mark.parametrize("field", ["input_tokens", "output_tokens"])
def test_nan_and_infinity_in_the_raw_body_name_the_field(key_a, token, field):
    values = {"input_tokens": "10", "output_tokens": "10", field: token}
    text = (
        '{"request_id": "r1", "model": "gpt-4o", "input_tokens": %(input_tokens)s, "output_tokens": %(output_tokens)s}'
    )
    response = _raw(key_a, "/api/v1/events", text % values)
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["code"] == "malformed_json"
    assert error["details"] == {"field": field}
    assert field in error["message"]


def test_nan_inside_a_batch_names_the_item(key_a):
    body = (
        '{"events": [{"request_id": "a", "model": "m", "input_tokens": 1, "output_tokens": 1},'
        ' {"request_id": "b", "model": "m", "input_tokens": NaN, "output_tokens": 1}]}'
    )
    response = _raw(key_a, "/api/v1/events/batch", body)
    assert response.status_code == 400
    assert response.json()["error"]["details"] == {"field": "events[1].input_tokens"}


@pytest.mark.parametrize("body", ["not json", '{"request_id": "r",', "   ", '{"a": 1} trailing', "\ufeff{}"])
def test_non_json_body(key_a, body):
    response = _raw(key_a, "/api/v1/events", body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "malformed_json"
    assert "JSON" in error["message"]


def test_empty_body_is_an_empty_event(key_a):
    response = _raw(key_a, "/api/v1/events", "")
    assert response.status_code == 400
    assert response.json()["error"]["details"] == {"field": "request_id"}
    batch = _raw(key_a, "/api/v1/events/batch", "")
    assert batch.status_code == 400
    assert batch.json()["error"]["details"] == {"field": "events"}


@pytest.mark.parametrize("path", ["/api/v1/events", "/api/v1/events/batch"])
@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"]
)
def test_wrong_content_type_is_415(key_a, path, content_type):
    response = _raw(
        key_a, path, '{"request_id": "r", "model": "m", "input_tokens": 1, "output_tokens": 1}', content_type
    )
    assert response.status_code == 415
    error = response.json()["error"]
    assert error["code"] == "unsupported_media_type"
    assert content_type.split(";")[0] in error["message"]


@pytest.mark.parametrize("path", ["/api/v1/events", "/api/v1/events/batch", "/api/v1/tokenize"])
def test_body_over_the_configured_limit_is_413(key_a, path):
    body = EventBodyFactory(metadata={"note": "x" * 500})
    with override_settings(DATA_UPLOAD_MAX_MEMORY_SIZE=256):
        response = key_a.post(path, body)
    assert response.status_code == 413
    error = response.json()["error"]
    assert error["code"] == "body_too_large"
    assert "256" in error["message"]
    assert error["details"] == {"limit_bytes": 256}


def test_body_just_under_the_limit_is_read(key_a):
    body = EventBodyFactory()
    with override_settings(DATA_UPLOAD_MAX_MEMORY_SIZE=4096):
        response = key_a.post("/api/v1/events", {**body, "colour": "x"})
    assert response.status_code == 400  # parsed, then refused for the unknown field
    assert response.json()["error"]["code"] == "unknown_field"


@pytest.mark.parametrize("body", [[], "text", 3, None])
def test_single_event_must_be_an_object(key_a, body):
    response = _raw(key_a, "/api/v1/events", json.dumps(body))
    assert response.status_code == 400
    assert response.json()["error"]["code"] in {"invalid_request", "malformed_json"}
