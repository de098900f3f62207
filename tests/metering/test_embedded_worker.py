"""The embedded default (SQLite, no Redis): a worker with embedded beat on kombu's filesystem
transport runs the rollups on schedule, as `make run` starts it. A separate process tree with
its own settings; nothing here touches the test databases."""

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

SEED = """
from metering.services.ingest import usage_record_batch
from accounts import services
from accounts.models import Tenant
tenant = Tenant.objects.create(name="Embedded", slug="embedded")
key, _ = services.api_key_create(tenant=tenant, name="k", scopes=["ingest"], actor_label="test")
result = usage_record_batch(raw_events=[{"request_id": "r1", "model": "gpt-4o", "input_tokens": 10,
                                         "output_tokens": 5}], api_key=key)
assert result.items[0].status == "accepted", result.items
"""


@pytest.mark.slow
def test_worker_and_beat_on_the_filesystem_queue_roll_up_without_redis(tmp_path):
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in ("CELERY_BROKER_URL", "TOKENBILL_REQUIRE_POSTGRES", "CELERY_TASK_ALWAYS_EAGER")
    }
    env |= {
        "DEBUG": "1",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "REDIS_URL": "",
        "CELERY_FS_DIR": str(tmp_path / "celery"),
        "ROLLUP_REFRESH_SECONDS": "1",
        "LOG_FORMAT": "console",
        "LOG_LEVEL": "WARNING",
    }
    (tmp_path / "celery" / "queue").mkdir(parents=True)
    manage = [sys.executable, str(ROOT / "manage.py")]
    subprocess.run([*manage, "migrate", "--noinput", "-v0", "--skip-checks"], env=env, cwd=ROOT, check=True)
    subprocess.run([*manage, "shell", "-c", SEED], env=env, cwd=ROOT, check=True)

    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "portal", "worker", "--beat", "--pool=solo", "--loglevel=WARNING"],
        env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
    rows = 0
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and worker.poll() is None:
            with sqlite3.connect(tmp_path / "db.sqlite3") as db:
                rows = db.execute("SELECT coalesce(sum(requests), 0) FROM metering_dailyusage").fetchone()[0]
            if rows:
                break
            time.sleep(0.5)
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        _, stderr = worker.communicate(timeout=30)
    assert rows == 1, stderr.decode()[-2000:]
