"""The relay's ASGI application: /v1/ in front of operator-configured upstreams.

It is plain ASGI on purpose (portal/asgi.py sends /v1/ here, past Django's middleware): one
body read, one thread-pool hop to prepare (key, limits, tiktoken estimate) and hold a lone
call, or under load one to prepare and one to hold, each together with the other calls
arriving meanwhile (relay/admitter.py), one pooled aiohttp call per upstream tried, the
stream passed through event by event, then the finished call handed to the process's recorder
(relay/recorder.py), which records calls in batches through metering's ingest service.
"""

import asyncio
import concurrent.futures
import contextlib
import functools
import gc
import itertools
import logging
import os
import secrets
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import aiohttp
import orjson
from django.conf import settings
from django.db import close_old_connections, connections

from metering.tokens import encodings_load
from relay import metrics
from relay.admitter import admitter, preparer
from relay.errors import RelayError, error_body
from relay.recorder import recorder
from relay.services import calls, routing
from relay.services.calls import CHAT, EMBEDDINGS, RESPONSES, Admitted, Finished, Usage
from relay.services.counting import tokens

logger = logging.getLogger("relay")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
T = TypeVar("T")

ENDPOINTS = {"/v1/chat/completions": CHAT, "/v1/embeddings": EMBEDDINGS, "/v1/responses": RESPONSES}
_UPSTREAM_PATHS = {CHAT: "/chat/completions", EMBEDDINGS: "/embeddings", RESPONSES: "/responses"}
_JSON = b"application/json"
_SSE = b"text/event-stream; charset=utf-8"


# --- The thread pool for the synchronous services (database, Redis) ------------------------------

_pool: dict[str, concurrent.futures.ThreadPoolExecutor] = {}


def _executor_get(name: str = "db") -> concurrent.futures.ThreadPoolExecutor:
    """ "db": RELAY_DB_THREADS threads to prepare calls (a lone call's hold too) and release holds;
    "admit": two threads for held groups, which must not queue behind a burst's prepares (the
    first group of a 1,000-call burst waited for every prepare submitted before it: 5-7 % more
    CPU per stream, alternated in one process); "record": the recorder's own thread, so its
    writes (which settle holds and free balance) never queue behind either."""
    executor = _pool.get(name)
    if executor is None:
        size = {"db": settings.RELAY_DB_THREADS, "admit": 2}.get(name, 1)
        executor = _pool[name] = concurrent.futures.ThreadPoolExecutor(size, thread_name_prefix=f"relay-{name}")
    return executor


def _in_thread(fn: Callable[..., T], kwargs: dict[str, Any]) -> T:
    close_old_connections()  # what Django's request_started does for a view
    try:
        return fn(**kwargs)
    finally:
        close_old_connections()


async def run_sync(fn: Callable[..., T], *, pool: str = "db", **kwargs: Any) -> T:
    """Run a synchronous service off the event loop (never a blocking call on the loop)."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_executor_get(pool), functools.partial(_in_thread, fn, kwargs))


async def process_warm() -> None:
    """Before the first call (lifespan startup): load the token encodings and hide them from the
    cyclic collector. Otherwise the calls arriving first after a start each loaded them, and
    waited: 40 calls sent together at a restarted relay, p50 287-298 ms before, 102-193 after.

    Starting every pool thread with its connection here was tried too: the first calls gained
    a little more, but steady traffic cost 4-13 % more CPU per call (calls spread over all eight
    threads and connections), so the pool still grows on demand."""
    loop = asyncio.get_running_loop()
    try:
        await loop.run_in_executor(None, encodings_load)
    except Exception:  # counting will fail and say so per call; the relay still starts
        logger.warning("relay_warm_failed", exc_info=True)
    gc.freeze()  # loaded for the life of the process: the collector need not walk them (gunicorn.conf.py)


def executor_shutdown() -> None:
    """Close every pool thread's database connection, then stop the pools."""
    for name in list(_pool):
        executor = _pool.pop(name)
        size = executor._max_workers
        barrier = threading.Barrier(size, timeout=10)

        def close(barrier: threading.Barrier = barrier) -> None:
            connections.close_all()
            barrier.wait()

        for future in [executor.submit(close) for _ in range(size)]:
            future.result()
        executor.shutdown()


# --- The pooled HTTP client --------------------------------------------------------------------

_sessions: dict[int, aiohttp.ClientSession] = {}


def _session() -> aiohttp.ClientSession:
    """One aiohttp session per event loop (a worker has one), with a shared connection pool."""
    loop = asyncio.get_running_loop()
    session = _sessions.get(id(loop))
    if session is None or session.closed:
        connector = aiohttp.TCPConnector(limit=0, limit_per_host=0, keepalive_timeout=30, ttl_dns_cache=300)
        # No cookie jar: a cookie one upstream answer sets must never ride along on another
        # tenant's call (and the jar's bookkeeping cost CPU on every request and response).
        session = aiohttp.ClientSession(
            connector=connector, json_serialize=lambda v: orjson.dumps(v).decode(), auto_decompress=True,
            cookie_jar=aiohttp.DummyCookieJar(),
        )  # fmt: skip
        _sessions[id(loop)] = session
    return session


async def sessions_close() -> None:
    loop = asyncio.get_running_loop()
    session = _sessions.pop(id(loop), None)
    if session is not None:
        await session.close()


# --- Responses ---------------------------------------------------------------------------------


def _headers(request_id: str, content_type: bytes, extra: dict[str, str] | None = None) -> list[tuple[bytes, bytes]]:
    headers = [(b"content-type", content_type), (b"x-request-id", request_id.encode())]
    if extra:
        headers.extend((name.lower().encode(), value.encode()) for name, value in extra.items())
    return headers


async def _send_whole(
    send: Send, status: int, body: bytes, request_id: str, extra: dict[str, str] | None = None, *, ctype: bytes = _JSON
) -> None:
    await send({"type": "http.response.start", "status": status, "headers": _headers(request_id, ctype, extra)})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def _send_error(send: Send, error: RelayError, request_id: str, endpoint: str) -> None:
    metrics.REQUESTS.labels(endpoint=endpoint, status=str(error.status)).inc()
    await _send_whole(send, error.status, error.body(), request_id, error.headers)


async def _read_body(receive: Receive, limit: int) -> bytes | None:
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise RelayError(413, f"The request body is larger than {limit} bytes.", code="request_too_large")
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


def _header(scope: Scope, name: bytes) -> str:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return ""


# --- The application ---------------------------------------------------------------------------


class _RequestIds:
    """`relay-` and 32 hex digits, unique without a system call per request: a random 64-bit
    prefix per process (drawn again in a forked child) and a counter. uuid4 read the OS's random
    source each time, letting go of the interpreter lock, which the event loop then waited to get
    back behind busy threads (profiled under a burst of 1,000 calls)."""

    def __init__(self) -> None:
        self._reseed()
        os.register_at_fork(after_in_child=self._reseed)

    def _reseed(self) -> None:
        self._prefix = f"relay-{secrets.randbits(64):016x}"
        self._counter = itertools.count()

    def new(self) -> str:
        return f"{self._prefix}{next(self._counter) & 0xFFFFFFFFFFFFFFFF:016x}"


_request_ids = _RequestIds()


async def application(scope: Scope, receive: Receive, send: Send) -> None:
    """ASGI entry for paths under /v1/ (portal/asgi.py)."""
    request_id = _request_ids.new()
    path = scope["path"].rstrip("/")
    endpoint = ENDPOINTS.get(path, "models" if path == "/v1/models" else "unknown")
    try:
        if endpoint == "models":
            if scope["method"] != "GET":
                raise RelayError(405, "Use GET for /v1/models.", code="method_not_allowed")
            await _models(scope, send, request_id)
            return
        if endpoint == "unknown":
            raise RelayError(404, f"Unknown request URL: {scope['method']} {scope['path']}.", code="unknown_url")
        if scope["method"] != "POST":
            raise RelayError(405, f"Use POST for {path}.", code="method_not_allowed")
        raw = await _read_body(receive, settings.RELAY_MAX_BODY_BYTES)
        if raw is None:
            return
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise RelayError(400, "The body must be a JSON object.") from None
        if not isinstance(body, dict):
            raise RelayError(400, "The body must be a JSON object.")
        stream = body.get("stream", False)
        if stream not in (True, False, None) or (stream and endpoint == EMBEDDINGS):
            raise RelayError(400, "stream must be true or false (and is not supported for embeddings).", param="stream")
        started = time.perf_counter()
        call_facts: dict[str, Any] = {
            "authorization": _header(scope, b"authorization"),
            "client": (_client_host(scope), _header(scope, b"x-forwarded-for")),
            "endpoint": endpoint,
            "body": body,
            "request_id": request_id,
        }
        holds = admitter(_admit_write, _admit_release)
        # A lone call of a tenant with nothing being held goes in one hop (prepare and hold
        # together): 4-7 % less CPU per call and up to 0.4 ms less at the median, 200 calls/s.
        tenant_id = calls.cached_tenant_id(call_facts["authorization"])
        if tenant_id is not None and holds.idle(tenant_id):
            admitted = await holds.admit_alone(tenant_id, functools.partial(run_sync, calls.relay_admit, **call_facts))
        else:
            admitted = await holds.admit(await preparer(_prepare_many).prepare(call_facts))
        metrics.ADMIT_SECONDS.observe(time.perf_counter() - started)
    except RelayError as error:
        await _send_error(send, error, request_id, endpoint)
        return
    call = _Call(admitted, body, bool(stream), started, receive, send)
    await call.run()


def _client_host(scope: Scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else ""


async def _models(scope: Scope, send: Send, request_id: str) -> None:
    def listing(authorization: str, client: tuple[str, str]) -> list[str]:
        key = calls.relay_authenticate(authorization=authorization, client=client)
        return calls.relay_models(api_key=key)

    names = await run_sync(
        listing,
        authorization=_header(scope, b"authorization"),
        client=(_client_host(scope), _header(scope, b"x-forwarded-for")),
    )
    data = [{"id": name, "object": "model", "created": 0, "owned_by": "tokenbill"} for name in names]
    await _send_whole(send, 200, orjson.dumps({"object": "list", "data": data}), request_id)
    metrics.REQUESTS.labels(endpoint="models", status="200").inc()


# --- One relayed call ---------------------------------------------------------------------------


class _Retry(Exception):
    """This upstream failed before any byte reached the client: try the next one."""

    def __init__(self, error: RelayError) -> None:
        super().__init__(error.message)
        self.error = error


def _error(route: routing.Route, status: int, what: str, code: str) -> RelayError:
    return RelayError(status, f"Upstream {route.name} {what}", type="server_error", code=code)


def _failed(route: routing.Route, outcome: str, status: int, what: str, code: str) -> _Retry:
    """Count the upstream's failure by outcome and give up on it: the next one is tried."""
    metrics.UPSTREAM_CALLS.labels(upstream=route.name, outcome=outcome).inc()
    return _Retry(_error(route, status, what, code))


@dataclass
class _Call:
    admitted: Admitted
    body: dict[str, Any]
    stream: bool
    started: float
    receive: Receive
    send: Send
    upstream: str = ""
    ttft: float | None = None
    response_started: bool = False
    disconnected: bool = False
    delivered: list[bytes] = field(default_factory=list)  # SSE events sent (for the counted fallback)
    usage: dict[str, Any] | None = None

    @property
    def request_id(self) -> str:
        return self.admitted.request_id

    def _upstream_body(self, target: str) -> bytes:
        body = {**self.body, "model": target}
        if self.stream and self.admitted.endpoint == CHAT:
            options = self.body.get("stream_options")
            body["stream_options"] = {**(options if isinstance(options, dict) else {}), "include_usage": True}
        return orjson.dumps(body)

    async def run(self) -> None:
        last = RelayError(503, "No upstream is available for this model.", type="server_error", code="no_upstream")
        for route, target in self.admitted.candidates:
            breaker = routing.breakers.get(route.name)
            now = time.monotonic()
            if not breaker.allows(now) and route is not self.admitted.candidates[-1][0]:
                last = _error(route, 503, "is unavailable.", "no_upstream")
                continue
            breaker.begin(now)
            try:
                await self._try(route, target)
            except _Retry as retry:
                was_open = breaker.opened_at is not None
                breaker.failure(time.monotonic())
                if breaker.opened_at is not None and not was_open:
                    metrics.BREAKER_OPENED.labels(upstream=route.name).inc()
                last = retry.error
                continue
            except BaseException:
                await self._finish_after_error()
                raise
            breaker.success()
            return
        await run_sync(calls.relay_release, admitted=self.admitted)
        metrics.USAGE.labels(source="released").inc()
        await _send_error(self.send, last, self.request_id, self.admitted.endpoint)

    async def _finish_after_error(self) -> None:
        """Cancelled or crashed mid-call: charge what was delivered, else release the hold."""
        try:
            await asyncio.shield(self._settle())
        except Exception:
            logger.exception("relay_settle_failed", extra={"request_id": self.request_id})

    async def _try(self, route: routing.Route, target: str) -> None:
        url = route.base_url + _UPSTREAM_PATHS[self.admitted.endpoint]
        timeout = aiohttp.ClientTimeout(
            total=route.total_timeout, sock_connect=route.connect_timeout, sock_read=route.first_byte_timeout
        )
        headers = {
            "Content-Type": "application/json",
            "Accept": "text/event-stream" if self.stream else "application/json",
        }
        if route.api_key:
            headers["Authorization"] = f"Bearer {route.api_key}"
        try:
            response = await _session().post(url, data=self._upstream_body(target), headers=headers, timeout=timeout)
        except TimeoutError:
            raise _failed(route, "timeout", 504, "timed out.", "upstream_timeout") from None
        except aiohttp.ClientError as exc:
            reached = f"could not be reached ({type(exc).__name__})."
            raise _failed(route, "connect_error", 502, reached, "upstream_unreachable") from None
        async with response:
            status = response.status
            if status == 429 or status >= 500 or status in (401, 403):
                await self._refused(route, response)
            self.upstream = route.name
            if status >= 400:  # the request itself is wrong: pass the upstream's answer on, no charge
                metrics.UPSTREAM_CALLS.labels(upstream=route.name, outcome="http_4xx").inc()
                body = await response.read()
                await run_sync(calls.relay_release, admitted=self.admitted)
                metrics.REQUESTS.labels(endpoint=self.admitted.endpoint, status=str(status)).inc()
                ctype = response.headers.get("Content-Type", "application/json").encode()
                await _send_whole(self.send, status, body, self.request_id, None, ctype=ctype)
                return
            if self.stream:
                await self._stream(route, response)
            else:
                await self._whole(route, response)

    async def _refused(self, route: routing.Route, response: aiohttp.ClientResponse) -> None:
        status = response.status
        outcome = "http_429" if status == 429 else "http_5xx" if status >= 500 else "http_auth"
        metrics.UPSTREAM_CALLS.labels(upstream=route.name, outcome=outcome).inc()
        with contextlib.suppress(TimeoutError, aiohttp.ClientError):
            await asyncio.wait_for(response.read(), 2)
        if status == 429:
            retry_after = response.headers.get("retry-after", "")
            extra = {"retry-after": retry_after} if retry_after.isdigit() else {}
            raise _Retry(
                RelayError(429, f"Upstream {route.name} is rate limited; retry later.", type="requests",
                           code="upstream_rate_limited", headers=extra)
            )  # fmt: skip
        raise _Retry(_error(route, 502, f"answered {status}.", "upstream_error"))

    def _first_byte(self, route: routing.Route) -> None:
        self.ttft = time.perf_counter()
        metrics.UPSTREAM_CALLS.labels(upstream=route.name, outcome="ok").inc()
        metrics.TTFT_SECONDS.labels(upstream=route.name).observe(self.ttft - self.started)

    # --- non-streaming --------------------------------------------------------------------------

    async def _whole(self, route: routing.Route, response: aiohttp.ClientResponse) -> None:
        try:
            body = await response.read()
        except TimeoutError:
            raise _failed(route, "timeout", 504, "timed out.", "upstream_timeout") from None
        except aiohttp.ClientError:
            raise _failed(route, "connect_error", 502, "broke off.", "upstream_error") from None
        self._first_byte(route)
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            data = None
        if not isinstance(data, dict):
            raise _Retry(_error(route, 502, "sent no JSON.", "upstream_error"))
        self.usage = data.get("usage") if isinstance(data.get("usage"), dict) else None
        extra = self.admitted.headers
        self.response_started = True
        metrics.REQUESTS.labels(endpoint=self.admitted.endpoint, status="200").inc()
        await _send_whole(self.send, 200, body, self.request_id, extra)
        await self._settle(whole=data)

    # --- streaming ------------------------------------------------------------------------------

    async def _watch_disconnect(self, response: aiohttp.ClientResponse) -> None:
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                self.disconnected = True
                response.close()
                return

    async def _stream(self, route: routing.Route, response: aiohttp.ClientResponse) -> None:  # noqa: C901 - one loop, its exits
        wants_usage = self._client_wants_usage()
        chunks = response.content.iter_any()
        try:
            first = await chunks.__anext__()
        except StopAsyncIteration:
            raise _failed(route, "http_5xx", 502, "sent an empty stream.", "upstream_error") from None
        except TimeoutError:
            raise _failed(route, "timeout", 504, "sent no first byte in time.", "upstream_timeout") from None
        except aiohttp.ClientError:
            raise _failed(route, "connect_error", 502, "broke off.", "upstream_error") from None
        self._first_byte(route)
        await self.send({
            "type": "http.response.start", "status": 200,
            "headers": _headers(self.request_id, _SSE, {**self.admitted.headers, "cache-control": "no-cache"}),
        })  # fmt: skip
        self.response_started = True
        metrics.REQUESTS.labels(endpoint=self.admitted.endpoint, status="200").inc()
        watcher = asyncio.ensure_future(self._watch_disconnect(response))
        pending = b""
        chunk: bytes | None = first
        try:
            while chunk is not None:
                pending += chunk
                out = []
                while (end := pending.find(b"\n\n")) >= 0:
                    event, pending = pending[: end + 2], pending[end + 2 :]
                    if self._keep(event, wants_usage):
                        out.append(event)
                if out and not self.disconnected:
                    data = b"".join(out)
                    await self.send({"type": "http.response.body", "body": data, "more_body": True})
                    self.delivered.extend(out)
                if self.disconnected:
                    break
                try:
                    chunk = await chunks.__anext__()
                except StopAsyncIteration:
                    chunk = None
        except (TimeoutError, aiohttp.ClientError):
            # The stream broke (or the client left and we closed it): charge what was delivered.
            if not self.disconnected:
                metrics.UPSTREAM_CALLS.labels(upstream=route.name, outcome="broken_stream").inc()
        finally:
            watcher.cancel()
        if not self.disconnected:
            await self.send({"type": "http.response.body", "body": b"", "more_body": False})
        await self._settle()

    def _client_wants_usage(self) -> bool:
        if self.admitted.endpoint != CHAT:
            return True
        options = self.body.get("stream_options")
        return isinstance(options, dict) and options.get("include_usage") is True

    def _keep(self, event: bytes, wants_usage: bool) -> bool:
        """Note the usage an event carries; False for the usage chunk the client did not ask for."""
        if b'"usage"' not in event:
            return True
        for line in event.split(b"\n"):
            if not line.startswith(b"data:"):
                continue
            try:
                data = orjson.loads(line[5:])
            except orjson.JSONDecodeError:
                continue
            if not isinstance(data, dict):
                continue
            if self.admitted.endpoint == RESPONSES:
                response = data.get("response")
                if (
                    data.get("type") == "response.completed"
                    and isinstance(response, dict)
                    and isinstance(response.get("usage"), dict)
                ):
                    self.usage = response["usage"]
                continue
            if isinstance(data.get("usage"), dict):
                self.usage = data["usage"]
                if not wants_usage and not data.get("choices"):
                    return False
        return True

    # --- settlement -----------------------------------------------------------------------------

    async def _settle(self, whole: dict[str, Any] | None = None) -> None:
        usage = _usage_from(self.admitted.endpoint, self.usage) if self.usage is not None else None
        texts: list[str] = []
        if usage is None or self.admitted.store_content:
            texts = [text for text in _delivered_text(self.admitted.endpoint, whole, self.delivered) if text]
        if usage is None:
            if whole is None and not texts:
                # Nothing reached the client: not charged, the hold goes back.
                await run_sync(calls.relay_release, admitted=self.admitted)
                metrics.USAGE.labels(source="released").inc()
                return
            encoding = calls.counting.encoding_for(self.admitted.model)
            output = (
                sum(tokens(self.admitted.model, text) for text in texts) if self.admitted.endpoint != EMBEDDINGS else 0
            )
            usage = Usage(self.admitted.input_tokens, output, encoding=encoding)
        now = time.perf_counter()
        ttft_ms = round((self.ttft - self.started) * 1000) if self.ttft is not None else None
        metadata: dict[str, Any] = {"stream": self.stream}
        if isinstance(self.body.get("service_tier"), str):
            metadata["service_tier"] = self.body["service_tier"][:100]
        if self.disconnected:
            metadata["client_disconnected"] = True
        finished = Finished(
            admitted=self.admitted,
            usage=usage,
            upstream=self.upstream,
            latency_ms=round((now - self.started) * 1000),
            ttft_ms=ttft_ms,
            metadata=metadata,
            request_body=self.body if self.admitted.store_content else None,
            response_text="\n\n".join(texts),
        )
        recorder(_record_write).add(finished)  # written within RELAY_RECORD_INTERVAL_MS, batched
        metrics.USAGE.labels(source="counted" if usage.encoding else "reported").inc()


async def _prepare_many(facts: list[dict[str, Any]]) -> list[calls.Prepared | Exception]:
    return await run_sync(calls.relay_prepare_many, facts=facts)


async def _admit_write(group: list[calls.Prepared]) -> list[Admitted | RelayError]:
    return await run_sync(calls.relay_admit_many, pool="admit", prepared=group)


async def _admit_release(admitted: Admitted) -> None:
    await run_sync(calls.relay_release, admitted=admitted)


async def _record_write(batch: list[Finished]) -> list[bool]:
    return await run_sync(calls.relay_record_batch, pool="record", finished=batch)


def _int(value: Any) -> int:
    return value if type(value) is int and value >= 0 else 0


def _usage_from(endpoint: str, usage: dict[str, Any]) -> Usage | None:
    """Our token kinds from the upstream's usage (chat/embeddings or Responses naming)."""
    if endpoint == RESPONSES:
        details = usage.get("input_tokens_details") or {}
        out_details = usage.get("output_tokens_details") or {}
        return Usage(
            _int(usage.get("input_tokens")),
            _int(usage.get("output_tokens")),
            cached_input_tokens=_int(details.get("cached_tokens")) if isinstance(details, dict) else 0,
            reasoning_tokens=_int(out_details.get("reasoning_tokens")) if isinstance(out_details, dict) else 0,
        )
    if "prompt_tokens" not in usage:
        return None
    details = usage.get("prompt_tokens_details") or {}
    out_details = usage.get("completion_tokens_details") or {}
    return Usage(
        _int(usage.get("prompt_tokens")),
        _int(usage.get("completion_tokens")),
        cached_input_tokens=_int(details.get("cached_tokens")) if isinstance(details, dict) else 0,
        reasoning_tokens=_int(out_details.get("reasoning_tokens")) if isinstance(out_details, dict) else 0,
    )


def _chat_choice_text(part: dict[str, Any]) -> list[str]:
    texts = []
    for key in ("content", "refusal", "reasoning_content"):
        if isinstance(part.get(key), str):
            texts.append(part[key])
    for call in part.get("tool_calls") or []:
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict):
            texts.extend(value for value in (function.get("name"), function.get("arguments")) if isinstance(value, str))
    return texts


def _delivered_text(  # noqa: C901 - two answer shapes, each walked once
    endpoint: str, whole: dict[str, Any] | None, events: list[bytes]
) -> list[str]:
    """The texts that reached the client, one per choice (n > 1) or output item."""
    texts: dict[int, list[str]] = {}
    if whole is not None:
        if endpoint == CHAT:
            for position, choice in enumerate(whole.get("choices") or []):
                if isinstance(choice, dict) and isinstance(choice.get("message"), dict):
                    texts.setdefault(position, []).extend(_chat_choice_text(choice["message"]))
        elif endpoint == RESPONSES:
            for position, item in enumerate(whole.get("output") or []):
                texts.setdefault(position, []).extend(_response_item_text(item))
        return ["".join(parts) for parts in texts.values()]
    for event in events:
        for line in event.split(b"\n"):
            if not line.startswith(b"data:") or line[5:].strip() == b"[DONE]":
                continue
            try:
                data = orjson.loads(line[5:])
            except orjson.JSONDecodeError:
                continue
            if not isinstance(data, dict):
                continue
            if endpoint == CHAT:
                for choice in data.get("choices") or []:
                    if isinstance(choice, dict) and isinstance(choice.get("delta"), dict):
                        index = choice["index"] if type(choice.get("index")) is int else 0
                        texts.setdefault(index, []).extend(_chat_choice_text(choice["delta"]))
            elif data.get("type") in (
                "response.output_text.delta",
                "response.function_call_arguments.delta",
            ) and isinstance(data.get("delta"), str):
                index = data["output_index"] if type(data.get("output_index")) is int else 0
                texts.setdefault(index, []).append(data["delta"])
    return ["".join(parts) for parts in texts.values()]


def _response_item_text(item: Any) -> list[str]:
    if not isinstance(item, dict):
        return []
    if item.get("type") == "function_call":
        return [value for value in (item.get("name"), item.get("arguments")) if isinstance(value, str)]
    return [
        part["text"]
        for part in item.get("content") or []
        if isinstance(part, dict) and isinstance(part.get("text"), str)
    ]


__all__ = ["application", "error_body", "executor_shutdown", "process_warm", "run_sync", "sessions_close"]
