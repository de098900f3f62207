"""gunicorn settings for production (docker-compose `web`). Environment overrides apply."""

import os
import select
import shutil

bind = os.environ.get("GUNICORN_BIND", "0.0.0.0:8000")
workers = int(os.environ.get("GUNICORN_WORKERS", "4"))
threads = int(os.environ.get("GUNICORN_THREADS", "1"))
# Sync workers that the kernel wakes one at a time (portal/gunicorn_worker.py; Linux only, plain
# sync workers elsewhere); with GUNICORN_THREADS > 1 gunicorn's threaded worker instead.
if threads > 1:
    worker_class = "gthread"
elif hasattr(select, "EPOLLEXCLUSIVE"):
    worker_class = "portal.gunicorn_worker.ExclusiveSyncWorker"
else:
    worker_class = "sync"
# The relay (docker-compose `relay`): portal.asgi under uvicorn's worker, portal.asgi_worker.AsgiWorker.
worker_class = os.environ.get("GUNICORN_WORKER_CLASS") or worker_class
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "30"))
accesslog = None  # the app logs structured JSON itself; no second, unstructured access log
max_requests = int(os.environ.get("GUNICORN_MAX_REQUESTS", "0"))


def on_starting(server) -> None:
    # Prometheus multiprocess mode: each worker writes its own files; /metrics sums them.
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        shutil.rmtree(directory, ignore_errors=True)
        os.makedirs(directory, exist_ok=True)


def child_exit(server, worker) -> None:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess  # noqa: PLC0415 - only in multiprocess mode

        multiprocess.mark_process_dead(worker.pid)


def post_worker_init(worker) -> None:
    """Move what start-up made (Django, the apps, their modules) out of the cyclic collector's
    sight and let it run less often. A burst of relayed calls allocates fast, and each full
    collection walked the whole start-up heap again: a pause every call in flight waited for
    (1,000 concurrent streams: 1.57 -> 1.26 ms of CPU per stream, docs/relay.md)."""
    import gc  # noqa: PLC0415 - only in the worker

    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)
