"""Errors and request ids: every /api/ error in the API's shape, the portal's static error pages,
one id per request from the caller to the logs, and one structured log line per request.

The database outage is real: gunicorn serves portal.wsgi as deployed (DEBUG off,
bench/benchserver.py's starter) with DATABASE_URL pointing at a loopback port nothing listens
on, and every /api/ route is called with a well-formed credential. The rest runs in-process
with Django's test client; its log lines are read as the JSON the server writes (the
structured formatter itself, attached while the request runs).
"""

import io
import json
import logging
import socket
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from urllib.error import HTTPError
from urllib.request import Request, urlopen

import pytest
from django.contrib.sessions.backends.db import SessionStore
from django.core.signals import got_request_exception
from django.db import connection
from django.db.utils import OperationalError
from django.middleware.common import CommonMiddleware
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver

from accounts import credentials
from infra.logconfig import structured_formatter
from invoicing import selectors as invoicing_selectors

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

from benchserver import start_server  # noqa: E402 - bench/ is not a package

UNREACHABLE_DB_NAME = "tokenbill_unreachable"
# What a connection error names and no answer may show.
LEAKS = ("127.0.0.1", "localhost", "5432", "refused", UNREACHABLE_DB_NAME, "postgres", "OperationalError")


def assert_no_leak(body: str, *more: str) -> None:
    for text in (*LEAKS, *more):
        assert text not in body, f"{text!r} in {body!r}"


def bearer(secret: str) -> dict:
    return {"HTTP_AUTHORIZATION": f"Bearer {secret}"}


@pytest.fixture
def json_lines() -> Iterator[Callable[[], list[dict]]]:
    """The JSON lines the server would write, formatted while each request runs (its request
    id is bound only then), request lines included (LOG_LEVEL is WARNING in the test run)."""
    root = logging.getLogger()
    formatter = structured_formatter("json")  # the production formatter, whatever an earlier test did to root
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    requests_logger = logging.getLogger("portal.requests")
    saved_level = requests_logger.level
    requests_logger.setLevel(logging.INFO)
    root.addHandler(handler)
    try:
        yield lambda: [json.loads(line) for line in stream.getvalue().splitlines() if line.startswith("{")]
    finally:
        root.removeHandler(handler)
        requests_logger.setLevel(saved_level)


def request_lines(lines: list[dict]) -> list[dict]:
    return [line for line in lines if line.get("logger") == "portal.requests"]


# --- Logs ---------------------------------------------------------------------------------------


def test_extra_fields_are_keys_of_the_json_line(json_lines):
    logging.getLogger("billing.services.balances").warning(
        "balance cache above the ledger",
        extra={"tenant_id": 42, "cells": 3, "level": "not the level", "request": object()},
    )
    (line,) = [line for line in json_lines() if line["event"] == "balance cache above the ledger"]
    assert line["tenant_id"] == 42
    assert line["cells"] == 3
    # A standard key is never replaced; the field is kept beside it.
    assert line["level"] == "warning"
    assert line["extra_level"] == "not the level"
    assert line["logger"] == "billing.services.balances"
    # An object whose repr could carry anything (Django passes the request) is left out.
    assert "request" not in line


@pytest.mark.django_db
def test_one_request_line_with_the_route_and_the_key(key_a, tenant_a, json_lines):
    secret_in_query = "tbk_querysecret_doesnotbelonginlogs"
    response = key_a.get(f"/api/v1/invoices/987654?key={secret_in_query}")
    assert response.status_code == 400  # an unknown query parameter
    (line,) = request_lines(json_lines())
    assert line["method"] == "GET"
    assert line["path"] == "/api/v1/invoices/<int:pk>"  # the route, not /api/v1/invoices/987654
    assert line["status"] == 400
    assert isinstance(line["duration_ms"], float) and line["duration_ms"] >= 0
    assert line["tenant"] == "acme"
    assert line["tenant_id"] == tenant_a.pk
    assert line["api_key_id"] == key_a.row.pk
    assert line["request_id"] == response["X-Request-ID"]
    everything = json.dumps(json_lines())
    for secret in (secret_in_query, key_a.secret):
        assert secret not in everything


@pytest.mark.django_db
def test_a_service_token_request_line_names_the_token(service, json_lines):
    response = service.get("/api/v1/balance")
    assert response.status_code == 400  # a service token must name the key it acts for
    (line,) = request_lines(json_lines())
    assert line["service_token_id"] == service.row.pk
    assert line["path"] == "/api/v1/balance"
    assert service.secret not in json.dumps(json_lines())


@pytest.mark.django_db
def test_a_portal_request_line_names_the_user_and_the_pages_tenant(client, owner_a, tenant_a, json_lines):
    client.force_login(owner_a)
    response = client.get(f"/t/{tenant_a.slug}/")
    assert response.status_code == 200
    (line,) = request_lines(json_lines())
    assert line["path"] == "/t/<slug:slug>/"
    assert line["user_id"] == owner_a.pk
    assert line["tenant"] == tenant_a.slug
    assert line["tenant_id"] == tenant_a.pk
    assert line["request_id"] == response["X-Request-ID"]


@pytest.mark.django_db
def test_log_requests_off_writes_no_request_line(key_a, settings, json_lines):
    settings.LOG_REQUESTS = False
    assert key_a.get("/api/v1/balance").status_code == 200
    assert request_lines(json_lines()) == []


# --- Request ids --------------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/healthz", "/api/v1/balance", "/accounts/login/", "/api/v1/no-such-thing"])
def test_a_sane_request_id_round_trips(client, path):
    response = client.get(path, HTTP_X_REQUEST_ID="gateway-7f3a:retry=2")
    assert response["X-Request-ID"] == "gateway-7f3a:retry=2"


@pytest.mark.django_db
@pytest.mark.parametrize("incoming", ["", "x" * 129, "has space", "tab\there", "caf\u00e9"])
def test_an_insane_request_id_is_replaced(client, incoming):
    response = client.get("/healthz", HTTP_X_REQUEST_ID=incoming)
    generated = response["X-Request-ID"]
    assert generated != incoming
    assert len(generated) == 32 and int(generated, 16) >= 0
    assert client.get("/healthz")["X-Request-ID"] != generated  # one per request


# --- Unexpected errors --------------------------------------------------------------------------


@pytest.mark.django_db
def test_an_unexpected_api_error_is_500_json_with_the_request_id_of_its_traceback(key_a, monkeypatch, json_lines):
    def broken(**kwargs):
        raise KeyError("invoice state 'x' at 10.1.2.3")

    monkeypatch.setattr(invoicing_selectors, "invoices_for_tenant", broken)
    client = Client(raise_request_exception=False)
    response = client.get("/api/v1/invoices", HTTP_X_REQUEST_ID="support-case-1", **bearer(key_a.secret))
    assert response.status_code == 500
    assert response["Content-Type"] == "application/json"
    assert response.json() == {
        "error": {
            "code": "internal_error",
            "message": "Something went wrong on our side; quote the request id if you report it.",
            "details": {"request_id": "support-case-1"},
        }
    }
    assert response["X-Request-ID"] == "support-case-1"
    assert_no_leak(response.content.decode(), "10.1.2.3", "KeyError")
    (traceback_line,) = [line for line in json_lines() if "exception" in line]
    assert traceback_line["request_id"] == "support-case-1"
    assert "KeyError" in traceback_line["exception"] and "10.1.2.3" in traceback_line["exception"]
    assert traceback_line["level"] == "error"


@pytest.mark.django_db(transaction=True)
def test_the_portal_500_page_needs_neither_the_database_nor_the_session(client, owner_a, monkeypatch):
    client.force_login(owner_a)

    def broken(self, *args, **kwargs):
        raise RuntimeError("session store broken")

    monkeypatch.setattr(SessionStore, "load", broken)
    client.raise_request_exception = False
    with database_down():
        response = client.get("/", HTTP_X_REQUEST_ID="page-500")
    assert response.status_code == 500
    page = response.content.decode()
    assert "Something went wrong" in page
    assert '<code id="request-id" style="word-break: break-all">page-500</code>' in page
    assert 'href="/static/portal/portal.' in page  # the portal's look
    assert_no_leak(page, "session store broken")


# --- The database unavailable -------------------------------------------------------------------


class database_down:
    """The test's Django connection points at a loopback port nothing listens on."""

    def __enter__(self) -> None:
        self.saved = dict(connection.settings_dict)
        connection.close()
        connection.settings_dict.update(HOST="127.0.0.1", PORT="1")

    def __exit__(self, *exc: object) -> None:
        connection.close()
        connection.settings_dict.clear()
        connection.settings_dict.update(self.saved)


def test_a_database_error_outside_drf_is_503_json_under_api(client, monkeypatch, json_lines):
    """A middleware (not DRF's exception handler) meets the database error: same shape."""

    def unreachable(self, request):
        raise OperationalError('connection to server at "10.9.8.7", port 6432 failed: Connection refused')

    monkeypatch.setattr(CommonMiddleware, "process_request", unreachable)
    client.raise_request_exception = False
    response = client.get("/api/v1/balance")
    assert response.status_code == 503
    assert response["Retry-After"] == "5"
    assert response.json()["error"]["code"] == "database_unavailable"
    assert response.json()["error"]["details"] == {"request_id": response["X-Request-ID"]}
    assert_no_leak(response.content.decode(), "10.9.8.7", "6432")
    # One warning with the cause for the operator, no traceback per request of an outage.
    (warning,) = [line for line in json_lines() if line.get("logger") == "api.errors"]
    assert "10.9.8.7" in warning["event"] and warning["request_id"] == response["X-Request-ID"]
    assert not [line for line in json_lines() if "exception" in line]

    page = client.get("/accounts/login/")
    assert page.status_code == 503
    assert page["Retry-After"] == "5"
    assert "Temporarily unavailable" in page.content.decode()
    assert page["X-Request-ID"] in page.content.decode()
    assert_no_leak(page.content.decode(), "10.9.8.7", "6432")


@pytest.mark.django_db(transaction=True)
def test_drf_answers_a_database_error_itself(key_a):
    """Inside an API view (here: the key lookup of authentication) the API's own handler answers:
    no uncaught exception, so no got_request_exception for error trackers to page on for every
    request of an outage, and an in-process client gets the 503 too."""
    uncaught = []

    def record(**kwargs):
        uncaught.append(kwargs)

    got_request_exception.connect(record)
    try:
        with database_down():
            response = key_a.get("/api/v1/usage")
    finally:
        got_request_exception.disconnect(record)
    assert response.status_code == 503
    assert response["Retry-After"] == "5"
    assert response.json()["error"]["code"] == "database_unavailable"
    assert_no_leak(response.content.decode())
    assert uncaught == []


def api_routes() -> list[tuple[str, str]]:
    """(method, path) for every /api/ URL pattern and each method its view answers, with 1 for
    every path converter."""
    found = []

    def walk(patterns, prefix: str) -> None:
        for pattern in patterns:
            route = prefix + str(pattern.pattern)
            if isinstance(pattern, URLResolver):
                walk(pattern.url_patterns, route)
            elif isinstance(pattern, URLPattern) and route.startswith("api/"):
                path = "/" + route.replace("<int:event_id>", "1").replace("<int:pk>", "1")
                assert "<" not in path, f"give {route} a sample value"
                view = pattern.callback.view_class
                for method in ("get", "post", "put", "patch", "delete"):
                    if hasattr(view, method):
                        found.append((method.upper(), path))

    walk(get_resolver().url_patterns, "")
    return found


@pytest.fixture(scope="module")
def server_without_database() -> Iterator[SimpleNamespace]:
    with socket.socket() as probe:  # a free port, closed again: nothing listens there
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    server = start_server(
        SimpleNamespace(workers=1, worker_class="sync", threads=1),
        database_url=f"postgres://postgres@127.0.0.1:{closed_port}/{UNREACHABLE_DB_NAME}",
        name="no-database",
        env={"LOG_LEVEL": "INFO", "LOG_REQUESTS": "1", "LOG_FORMAT": "json"},
        metrics=False,
    )
    try:
        yield SimpleNamespace(url=f"http://127.0.0.1:{server.port}", port=closed_port, log=server.log_path)
    finally:
        server.stop()
        server.log_path.unlink(missing_ok=True)


def call(url: str, method: str = "GET", headers: dict | None = None, body: bytes | None = None):
    request = Request(url, method=method, headers=headers or {}, data=body)
    try:
        with urlopen(request, timeout=20) as response:
            return response.status, response.headers, response.read().decode()
    except HTTPError as error:
        return error.code, error.headers, error.read().decode()


def server_lines(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]


def test_every_api_route_answers_503_json_while_the_database_is_down(server_without_database):
    server = server_without_database
    routes = api_routes()
    assert ("POST", "/api/v1/events") in routes and ("GET", "/api/v1/invoices/1.pdf") in routes
    key = credentials.issue(credentials.API_KEY_KIND).secret
    token = credentials.issue(credentials.SERVICE_TOKEN_KIND).secret
    for secret in (key, token):
        for method, path in routes:
            headers = {"Authorization": f"Bearer {secret}", "Content-Type": "application/json"}
            body = b"{}" if method != "GET" else None
            status, response_headers, text = call(server.url + path, method, headers, body)
            where = f"{method} {path}: {status} {text[:200]}"
            assert status == 503, where
            assert response_headers["Content-Type"] == "application/json", where
            assert response_headers["Retry-After"] == "5", where
            error = json.loads(text)["error"]
            assert error["code"] == "database_unavailable", where
            assert error["message"] == "The database is unavailable; try again in a few seconds."
            assert error["details"] == {"request_id": response_headers["X-Request-ID"]}
            assert_no_leak(text, str(server.port))


def test_the_outage_in_the_servers_log(server_without_database):
    server = server_without_database
    status, headers, _ = call(
        server.url + "/api/v1/events/1",
        headers={
            "Authorization": f"Bearer {credentials.issue(credentials.API_KEY_KIND).secret}",
            "X-Request-ID": "trace-me-1",
        },
    )
    assert status == 503 and headers["X-Request-ID"] == "trace-me-1"
    lines = [line for line in server_lines(server.log) if line.get("request_id") == "trace-me-1"]
    warning = next(line for line in lines if line["logger"] == "api.errors")
    assert f"port {server.port} failed" in warning["event"]  # the cause, for the operator only
    (request_line,) = [line for line in lines if line["logger"] == "portal.requests"]
    assert request_line["method"] == "GET"
    assert request_line["path"] == "/api/v1/events/<int:event_id>"
    assert request_line["status"] == 503
    assert isinstance(request_line["duration_ms"], float)
    assert not [line for line in lines if "exception" in line]  # no traceback per request of an outage


def test_a_portal_page_answers_the_static_503_page_while_the_database_is_down(server_without_database):
    server = server_without_database
    session = "s" * 32  # well-formed: the session store is asked, which is the database
    status, headers, page = call(server.url + "/", headers={"Cookie": f"sessionid={session}"})
    assert status == 503
    assert headers["Retry-After"] == "5"
    assert headers["Content-Type"].startswith("text/html")
    assert "Temporarily unavailable" in page
    assert f'<code id="request-id" style="word-break: break-all">{headers["X-Request-ID"]}</code>' in page
    assert_no_leak(page, str(server.port))


def test_the_portal_404_page_keeps_the_portals_look(client, db):
    response = client.get("/no-such-page/")
    assert response.status_code == 404
    page = response.content.decode()
    assert "Not found" in page and 'href="/static/portal/portal.' in page and 'class="topbar"' in page
    assert response["X-Request-ID"]
