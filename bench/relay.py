"""Relay benchmark: what the relay adds to a call, direct-to-upstream vs through the relay, in one run.

Loopback only, PostgreSQL and Redis as in production (holds and settlement on):

1. drops and recreates its own database (`--database`, default tokenbill_bench_relay), migrates
   it, creates a tenant (price plan, a large top-up), an API key and an Upstream row pointing at
   a fake upstream that this script starts in its own process (a bare protocol on httptools
   and uvloop); the load generator runs on uvloop too, and reads streams over bare connections:
   both take as little as they can of the two cores the relay is measured on;
2. starts the relay as deployed: gunicorn portal.asgi with uvicorn workers (`--workers`), and
   times 40 calls sent together the moment it answers (what traffic meets after a restart);
3. non-streaming at `--rate` req/s offered (open loop: latency counts from the scheduled send
   time), alternating direct and relayed rounds (`--rounds`), and reports the added p50/p99 and
   the relay processes' CPU per relayed request (from /proc);
4. time to first byte of streams, direct vs relayed, at `--stream-rate` streams/s;
5. `--slow-streams` concurrent slow streams (20 chunks, 100 ms apart: 1.9 s ideal), direct then
   through the relay: p99 stream time, time to first byte, failures, and the relay processes'
   total RSS at the peak.

    DEBUG=0 SECRET_KEY=x DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres \\
        REDIS_URL=redis://127.0.0.1:6379/11 .venv/bin/python bench/relay.py
The machine is shared: compare the paired ratios, not single figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchdb import database_urls, recreate_database  # noqa: E402 - bench/ is on sys.path
from benchserver import free_port  # noqa: E402

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database", default="tokenbill_bench_relay")
    parser.add_argument("--workers", type=int, default=2, help="relay (uvicorn) worker processes")
    parser.add_argument("--rate", type=int, default=200, help="non-streaming requests/s offered")
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per round")
    parser.add_argument("--rounds", type=int, default=2, help="direct/relay pairs, alternating")
    parser.add_argument("--stream-rate", type=int, default=20, help="streams/s for the first-byte phase")
    parser.add_argument("--slow-streams", type=int, default=1000)
    args = parser.parse_args(argv)
    for name in ("workers", "rate", "rounds", "stream_rate", "slow_streams"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.duration <= 0:
        parser.error("--duration must be positive")
    return args


# --- The fake upstream (its own process) ---------------------------------------------------------


def fake_upstream(port: int) -> None:
    """An OpenAI-shaped chat endpoint on a bare protocol (httptools parses, uvloop runs it): a
    real upstream runs on other machines, so the one here should take as little as it can of
    the two cores the relay is measured on (aiohttp's server took 0.3 s of a core per 1,000
    streams). Keep-alive, Content-Length bodies, chunked streams; nothing else."""
    import httptools  # noqa: PLC0415
    import uvloop  # noqa: PLC0415

    reply = {
        "id": "chatcmpl-bench", "object": "chat.completion", "created": 0, "model": "bench",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok " * 20}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 20, "completion_tokens": 20, "total_tokens": 40},
    }  # fmt: skip
    body = json.dumps(reply).encode()
    whole = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
    not_found = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"

    def chunked(data: bytes) -> bytes:
        return b"%x\r\n%s\r\n" % (len(data), data)

    chunk_event = b'data: {"id":"c","object":"chat.completion.chunk","created":0,"model":"bench","choices":[{"index":0,"delta":{"content":"tok "},"finish_reason":null}]}\n\n'  # noqa: E501
    usage_event = b'data: {"id":"c","object":"chat.completion.chunk","created":0,"model":"bench","choices":[],"usage":{"prompt_tokens":20,"completion_tokens":20,"total_tokens":40}}\n\n'  # noqa: E501
    chunk, usage = chunked(chunk_event), chunked(usage_event)
    done = chunked(b"data: [DONE]\n\n") + b"0\r\n\r\n"

    class Upstream(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport: asyncio.Transport = transport  # type: ignore[assignment]
            self.parser = httptools.HttpRequestParser(self)
            self.url = b""
            self.body: list[bytes] = []

        def data_received(self, data: bytes) -> None:
            try:
                self.parser.feed_data(data)
            except httptools.HttpParserError:
                self.transport.close()

        def on_url(self, url: bytes) -> None:
            self.url += url

        def on_body(self, data: bytes) -> None:
            self.body.append(data)

        def on_message_complete(self) -> None:
            url, raw, keep = self.url, b"".join(self.body), self.parser.should_keep_alive()
            self.url, self.body = b"", []
            if url != b"/v1/chat/completions":
                self.transport.write(not_found)
                return
            data = json.loads(raw)
            if not data.get("stream"):
                self.transport.write(whole)
            elif data.get("model") != "bench-slow":
                self.transport.write(head + chunk * 20 + self.tail(data))
            else:  # 20 chunks 100 ms apart, the usage and [DONE] with the last
                self.transport.write(head + chunk)
                asyncio.get_running_loop().call_later(0.1, self.send_next, 19, self.tail(data), keep)
                return
            if not keep:
                self.transport.close()

        @staticmethod
        def tail(data: dict) -> bytes:
            return (usage if (data.get("stream_options") or {}).get("include_usage") else b"") + done

        def send_next(self, left: int, tail: bytes, keep: bool) -> None:
            if self.transport.is_closing():
                return
            left -= 1
            self.transport.write(chunk + (b"" if left else tail))
            if left:
                asyncio.get_running_loop().call_later(0.1, self.send_next, left, tail, keep)
            elif not keep:
                self.transport.close()

    async def serve() -> None:
        server = await asyncio.get_running_loop().create_server(Upstream, "127.0.0.1", port, backlog=4096)
        await server.serve_forever()

    uvloop.run(serve())


# --- Load ---------------------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000 if ordered else float("nan")


async def open_loop(
    url: str, headers: dict[str, str], payload: bytes, rate: int, duration: float
) -> tuple[list[float], int]:
    import aiohttp  # noqa: PLC0415

    latencies: list[float] = []
    failures = 0
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one(scheduled: float) -> None:
            nonlocal failures
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            try:
                async with session.post(url, data=payload, headers=headers) as response:
                    await response.read()
                    if response.status != 200:
                        failures += 1
                        return
            except aiohttp.ClientError:
                failures += 1
                return
            latencies.append(time.perf_counter() - scheduled)

        start = time.perf_counter() + 0.2
        count = int(rate * duration)
        await asyncio.gather(*(one(start + i / rate) for i in range(count)))
    return latencies, failures


class _StreamClient(asyncio.Protocol):
    """One stream over a raw connection: the request written at once, the answer only scanned.

    A client library's request machinery cost this process a core for a third of a second per
    1,000 streams, on the cores the relay and the upstream need (docs/relay.md)."""

    def __init__(self, request: bytes, began: float, done: asyncio.Future[None]) -> None:
        self.request, self.began, self.done = request, began, done
        self.first: float | None = None
        self.head = b""
        self.tail = b""
        self.seen_done = False
        self.finished = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        transport.write(self.request)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        if self.first is None:
            self.first = time.perf_counter() - self.began
        if len(self.head) < 12:
            self.head += data[:12]
        self.seen_done = self.seen_done or b"[DONE]" in self.tail[-8:] + data
        self.tail = (self.tail + data[-16:])[-16:]
        if self.tail.endswith(b"\r\n0\r\n\r\n") and not self.done.done():
            self.finished = time.perf_counter()  # the last chunk of a chunked body: complete
            self.done.set_result(None)
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.finished = time.perf_counter()
            self.done.set_result(None)

    @property
    def ok(self) -> bool:
        return self.head.startswith(b"HTTP/1.1 200") and self.seen_done


async def streams(
    url: str, headers: dict[str, str], payload: bytes, count: int, rate: float | None
) -> tuple[list[float], list[float], int]:
    """(times to first byte, total stream times, failures)."""
    from urllib.parse import urlsplit  # noqa: PLC0415

    parts = urlsplit(url)
    lines = [f"POST {parts.path} HTTP/1.1", f"Host: {parts.netloc}", f"Content-Length: {len(payload)}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    request = ("\r\n".join(lines) + "\r\n\r\n").encode() + payload
    loop = asyncio.get_running_loop()
    first: list[float] = []
    total: list[float] = []
    failures = 0

    async def one(scheduled: float) -> None:
        nonlocal failures
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        began = time.perf_counter()
        done: asyncio.Future[None] = loop.create_future()
        client = _StreamClient(request, began, done)
        try:
            transport, _ = await loop.create_connection(lambda: client, parts.hostname, parts.port)
        except OSError:
            failures += 1
            return
        try:
            await asyncio.wait_for(done, 60)
        except TimeoutError:
            failures += 1
            return
        finally:
            transport.close()
        if not client.ok or client.first is None:
            failures += 1
            return
        first.append(client.first)
        total.append(client.finished - began)

    start = time.perf_counter() + 0.2
    await asyncio.gather(*(one(start + (i / rate if rate else 0)) for i in range(count)))
    return first, total, failures


# --- The relay server ----------------------------------------------------------------------------


def start_relay(args: argparse.Namespace, database_url: str) -> tuple[subprocess.Popen, int, Path]:
    port = free_port()
    log = Path(tempfile.gettempdir()) / f"tokenbill-bench-relay-{port}.log"
    env = dict(os.environ)
    env.update(
        DATABASE_URL=database_url, DEBUG="0", LOG_LEVEL="WARNING", ALLOWED_HOSTS="127.0.0.1,localhost",
        GUNICORN_WORKER_CLASS="portal.asgi_worker.AsgiWorker", BALANCE_BACKEND="redis", LOG_REQUESTS="0",
    )  # fmt: skip
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    env.setdefault("SECRET_KEY", "bench-only-secret")
    command = [
        sys.executable, "-m", "gunicorn", "portal.asgi:application", "-c", str(ROOT / "gunicorn.conf.py"),
        "--bind", f"127.0.0.1:{port}", "--workers", str(args.workers), "--log-level", "warning",
    ]  # fmt: skip
    with log.open("wb") as out:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    import http.client  # noqa: PLC0415

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        try:
            conn.request("GET", "/healthz")
            if conn.getresponse().status == 200:
                return process, port, log
        except OSError:
            time.sleep(0.2)
        finally:
            conn.close()
    process.kill()
    raise SystemExit(f"relay did not start; log:\n{log.read_text()[-3000:]}")


def family(master: int) -> list[int]:
    pids = [master]
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == master:
                pids.append(int(entry))
    return pids


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / CLOCK_TICKS


def rss_bytes(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            continue
    return total


# --- Main ---------------------------------------------------------------------------------------


def setup(database_url: str, upstream_url: str) -> str:
    os.environ["DATABASE_URL"] = database_url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
    import django  # noqa: PLC0415

    django.setup()
    from decimal import Decimal  # noqa: PLC0415

    from django.core.management import call_command  # noqa: PLC0415
    from django.db import connections  # noqa: PLC0415

    from accounts import services as account_services  # noqa: PLC0415
    from billing.services.ledger import ledger_post, wallet_ensure  # noqa: PLC0415
    from billing.services.pricing import plan_get_or_create, price_add  # noqa: PLC0415
    from relay.services.upstreams import upstream_save  # noqa: PLC0415

    call_command("migrate", verbosity=0, interactive=False)
    plan = plan_get_or_create(slug="bench", name="Bench", currency="USD", actor_label="bench")
    price_add(
        plan=plan, model_pattern="bench*", input_per_mtok=Decimal("1"), output_per_mtok=Decimal("2"),
        source="bench", actor_label="bench",
    )  # fmt: skip
    tenant = account_services.tenant_create(
        name="Bench", slug="bench-relay", timezone_name="UTC", price_plan_id=plan.pk, actor_label="bench"
    )
    wallet_ensure(tenant_id=tenant.pk, currency="USD")
    ledger_post(
        tenant_id=tenant.pk, currency="USD", kind="topup", amount=Decimal("1000000"),
        idempotency_key="bench-topup", reference="bench", actor_label="bench",
    )  # fmt: skip
    _, secret = account_services.api_key_create(tenant=tenant, name="bench", actor_label="bench")
    upstream_save(name="bench-fake", base_url=upstream_url, model_map={"bench*": ""}, api_key="sk-bench")
    connections.close_all()
    return secret


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import uvloop  # noqa: PLC0415

    # The load generator on uvloop, like the relay and the fake upstream: the client shares the
    # two cores with both, so the lighter it is, the less it skews what it measures.
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    if not os.environ.get("REDIS_URL"):
        raise SystemExit("REDIS_URL must name a Redis database; try `make bench`.")
    maintenance_url, bench_url = database_urls(args.database)
    recreate_database(maintenance_url, args.database)
    upstream_port = free_port()
    upstream = mp.get_context("spawn").Process(target=fake_upstream, args=(upstream_port,), daemon=True)
    upstream.start()
    upstream_url = f"http://127.0.0.1:{upstream_port}/v1"
    secret = setup(bench_url, upstream_url)
    relay, relay_port, log = start_relay(args, bench_url)
    relay_url = f"http://127.0.0.1:{relay_port}/v1"
    pids = family(relay.pid)
    rows: list[str] = []
    try:
        body = json.dumps(
            {"model": "bench", "messages": [{"role": "user", "content": "hello " * 20}], "max_tokens": 50}
        )
        relay_headers = {"Authorization": f"Bearer {secret}", "Content-Type": "application/json"}
        plain_headers = {"Content-Type": "application/json"}
        # The first calls after a start (40 at once, as traffic arriving at a restarted relay).
        first, failed = asyncio.run(
            open_loop(relay_url + "/chat/completions", relay_headers, body.encode(), 40_000, 0.001)
        )
        rows.append(
            f"first 40 calls after start, together: p50 {pct(first, 0.5):.0f} ms max {pct(first, 1.0):.0f} ms | "
            f"failures {failed}"
        )
        print(rows[-1], flush=True)
        asyncio.run(open_loop(relay_url + "/chat/completions", relay_headers, body.encode(), 50, 2))  # warm-up
        direct: list[float] = []
        relayed: list[float] = []
        failures = 0
        cpu = 0.0
        for _ in range(args.rounds):
            lat, failed = asyncio.run(
                open_loop(upstream_url + "/chat/completions", plain_headers, body.encode(), args.rate, args.duration)
            )
            direct += lat
            failures += failed
            before = cpu_seconds(pids)
            lat, failed = asyncio.run(
                open_loop(relay_url + "/chat/completions", relay_headers, body.encode(), args.rate, args.duration)
            )
            time.sleep(1.0)  # recording finishes after the response
            cpu += cpu_seconds(pids) - before
            relayed += lat
            failures += failed
        rows.append(
            f"non-stream at {args.rate}/s: direct p50 {pct(direct, 0.5):.2f} ms p99 {pct(direct, 0.99):.2f} ms | "
            f"relay p50 {pct(relayed, 0.5):.2f} ms p99 {pct(relayed, 0.99):.2f} ms | added p50 "
            f"{pct(relayed, 0.5) - pct(direct, 0.5):.2f} ms p99 {pct(relayed, 0.99) - pct(direct, 0.99):.2f} ms | "
            f"relay CPU {cpu / max(len(relayed), 1) * 1000:.2f} ms/request | failures {failures}"
        )
        print(rows[-1], flush=True)

        stream_body = json.dumps({"model": "bench", "messages": [{"role": "user", "content": "hi"}], "stream": True})
        count = int(args.stream_rate * args.duration)
        first_direct, _, fd = asyncio.run(
            streams(upstream_url + "/chat/completions", plain_headers, stream_body.encode(), count, args.stream_rate)
        )
        first_relay, _, fr = asyncio.run(
            streams(relay_url + "/chat/completions", relay_headers, stream_body.encode(), count, args.stream_rate)
        )
        rows.append(
            f"stream first byte at {args.stream_rate}/s: direct p50 {pct(first_direct, 0.5):.2f} p99 "
            f"{pct(first_direct, 0.99):.2f} ms | relay p50 {pct(first_relay, 0.5):.2f} p99 {pct(first_relay, 0.99):.2f}"
            f" ms | added p99 {pct(first_relay, 0.99) - pct(first_direct, 0.99):.2f} ms | failures {fd + fr}"
        )
        print(rows[-1], flush=True)

        slow_body = json.dumps({"model": "bench-slow", "messages": [{"role": "user", "content": "hi"}], "stream": True})
        idle_rss = rss_bytes(family(relay.pid))
        peak = [idle_rss]

        async def slow() -> tuple[list[float], list[float], int]:
            async def sample() -> None:
                while True:
                    peak[0] = max(peak[0], rss_bytes(family(relay.pid)))
                    await asyncio.sleep(0.2)

            sampler = asyncio.ensure_future(sample())
            try:
                return await streams(
                    relay_url + "/chat/completions", relay_headers, slow_body.encode(), args.slow_streams, None
                )
            finally:
                sampler.cancel()

        # The same burst straight to the fake upstream: what the client and upstream alone take
        # on this machine (one Python process reading 1,000 streams), the floor under the relay's.
        direct_firsts, direct_totals, direct_failed = asyncio.run(
            streams(upstream_url + "/chat/completions", plain_headers, slow_body.encode(), args.slow_streams, None)
        )
        rows.append(
            f"{args.slow_streams} concurrent slow streams direct: p50 {pct(direct_totals, 0.5) / 1000:.2f} s "
            f"p99 {pct(direct_totals, 0.99) / 1000:.2f} s (first byte p50 {pct(direct_firsts, 0.5) / 1000:.2f} s "
            f"p99 {pct(direct_firsts, 0.99) / 1000:.2f} s) | failures {direct_failed}"
        )
        print(rows[-1], flush=True)
        before = cpu_seconds(pids)
        firsts, totals, failed = asyncio.run(slow())
        time.sleep(1.0)  # recording finishes after the streams
        stream_cpu = (cpu_seconds(pids) - before) / args.slow_streams
        rows.append(
            f"{args.slow_streams} concurrent slow streams (ideal 1.9 s): p50 {pct(totals, 0.5) / 1000:.2f} s "
            f"p99 {pct(totals, 0.99) / 1000:.2f} s (first byte p50 {pct(firsts, 0.5) / 1000:.2f} s "
            f"p99 {pct(firsts, 0.99) / 1000:.2f} s) | relay CPU {stream_cpu * 1000:.2f} ms/stream | failures {failed}"
            f" | relay RSS idle {idle_rss / 2**20:.0f} MiB, "
            f"peak {peak[0] / 2**20:.0f} MiB ({args.workers} workers + master)"
        )
        print(rows[-1], flush=True)
    finally:
        relay.send_signal(signal.SIGTERM)
        try:
            relay.wait(timeout=20)
        except subprocess.TimeoutExpired:
            relay.kill()
        upstream.terminate()
        upstream.join(5)
    print("\n".join(["", "relay benchmark (loopback, shared 2-core machine: see docs/relay.md)", *rows]))
    print(f"relay log: {log}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
