"""gunicorn for the benchmarks, started as deployed: portal.wsgi with gunicorn.conf.py, DEBUG off,
on a free 127.0.0.1 port, its output in a log file the report names."""

import argparse
import http.client
import os
import runpy
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "gunicorn.conf.py"


def add_server_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workers", type=int, default=4, help="gunicorn workers")
    parser.add_argument(
        "--worker-class",
        help="gunicorn worker class, e.g. sync or gthread to compare (default: the one gunicorn.conf.py picks)",
    )
    parser.add_argument("--threads", type=int, default=1, help="gunicorn threads per worker (gthread)")


def resolve_server_arguments(args: argparse.Namespace) -> None:
    """Fill in the worker class production would run, read from gunicorn.conf.py itself (it
    picks by GUNICORN_THREADS, which the server started here inherits)."""
    os.environ["GUNICORN_THREADS"] = str(args.threads)
    if not args.worker_class:
        args.worker_class = runpy.run_path(str(CONFIG))["worker_class"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    process: subprocess.Popen
    port: int
    log_path: Path
    metrics_dir: str | None  # Prometheus multiprocess files, as in production; None: metrics off

    def pids(self) -> list[int]:
        """The master and its workers (for CPU accounting from /proc)."""
        master = self.process.pid
        children = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    stat = Path(f"/proc/{entry}/stat").read_text()
                except OSError:
                    continue
                if int(stat.rsplit(")", 1)[1].split()[1]) == master:
                    children.append(int(entry))
        return [master, *children]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.metrics_dir:
            shutil.rmtree(self.metrics_dir, ignore_errors=True)


def start_server(
    args: argparse.Namespace, *, database_url: str, name: str, env: dict[str, str] | None = None, metrics: bool = True
) -> Server:
    """Start gunicorn and wait (30 s at most) until /healthz answers 200."""
    port = free_port()
    metrics_dir = tempfile.mkdtemp(prefix="tokenbill-bench-prom-") if metrics else None
    log = Path(tempfile.gettempdir()) / f"tokenbill-bench-{name}-{port}.log"
    environment = dict(os.environ)
    environment.update(DATABASE_URL=database_url, DEBUG="0", LOG_LEVEL="WARNING", ALLOWED_HOSTS="127.0.0.1,localhost")
    environment.pop("PROMETHEUS_MULTIPROC_DIR", None)
    if metrics_dir:
        environment["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    environment.update(env or {})
    environment.setdefault("SECRET_KEY", "bench-only-secret")
    command = [
        sys.executable, "-m", "gunicorn", "portal.wsgi:application", "-c", str(CONFIG),
        "--bind", f"127.0.0.1:{port}", "--workers", str(args.workers), "--worker-class", args.worker_class,
        "--threads", str(args.threads), "--log-level", "warning",
    ]  # fmt: skip
    with log.open("wb") as out:
        process = subprocess.Popen(command, cwd=ROOT, env=environment, stdout=out, stderr=subprocess.STDOUT)
    server = Server(process=process, port=port, log_path=log, metrics_dir=metrics_dir)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and process.poll() is None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        try:
            conn.request("GET", "/healthz")
            if conn.getresponse().status == 200:
                return server
        except OSError:
            time.sleep(0.1)
        finally:
            conn.close()
    server.stop()
    raise SystemExit(f"gunicorn ({name}) did not start; log:\n{log.read_text()[-3000:]}")
