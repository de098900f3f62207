"""The production web server: gunicorn with gunicorn.conf.py's worker, as a real process."""

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get(url: str) -> int:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status


@pytest.fixture
def server(tmp_path):
    port = _free_port()
    env = {
        **os.environ,
        "DEBUG": "0",
        "SECRET_KEY": "x",
        "ALLOWED_HOSTS": "127.0.0.1",
        "LOG_LEVEL": "WARNING",
        "GUNICORN_BIND": f"127.0.0.1:{port}",
        "GUNICORN_WORKERS": "3",
        "GUNICORN_TIMEOUT": "2",  # a worker that stopped telling the arbiter it lives dies in 2 s
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prometheus"),
        "PYTHONWARNINGS": "ignore",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "portal.wsgi:application", "-c", "gunicorn.conf.py"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            _get(f"{url}/healthz")
            break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                pytest.fail(f"gunicorn did not start:\n{process.communicate()[0][-3000:]}")
            time.sleep(0.1)
    yield process, url
    if process.poll() is None:
        process.kill()
        process.wait()


def test_workers_woken_one_at_a_time_serve_concurrent_clients_and_stop_on_sigterm(server):
    process, url = server
    with ThreadPoolExecutor(max_workers=16) as pool:
        statuses = list(pool.map(lambda _: _get(f"{url}/healthz"), range(400)))
    assert statuses == [200] * 400
    time.sleep(3)  # idle past the timeout: workers waiting in epoll still tell the arbiter they live
    assert _get(f"{url}/healthz") == 200
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=20)
    assert process.returncode == 0, output
    assert "WORKER TIMEOUT" not in output and "Traceback" not in output, output


def test_the_production_config_uses_that_worker_unless_threads_are_asked_for():
    probe = "import runpy; c = runpy.run_path('gunicorn.conf.py'); print(c['worker_class'])"

    def worker_class(threads: str) -> str:
        env = {**os.environ, "GUNICORN_THREADS": threads}
        done = subprocess.run(
            [sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True, check=True
        )
        return done.stdout.strip()

    assert worker_class("1") == "portal.gunicorn_worker.ExclusiveSyncWorker"
    assert worker_class("4") == "gthread"
