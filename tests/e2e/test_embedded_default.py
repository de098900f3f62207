"""The embedded default that `make run` serves (SQLite, no Redis), driven over HTTP.

Runs in a separate process with its own settings: migrate, seed_demo, then the API with the
printed demo key. PostgreSQL-only tests would miss backend differences such as SQLite handing
back naive datetimes from raw SQL.
"""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

CLIENT = """
import os, sys, django
django.setup()
from django.conf import settings
settings.ALLOWED_HOSTS = ["testserver"]
from rest_framework.test import APIClient
client = APIClient()
client.credentials(HTTP_AUTHORIZATION="Bearer " + sys.argv[1])
event = {"request_id": "embedded-1", "model": "gpt-4o", "input_tokens": 100, "output_tokens": 10}
first = client.post("/api/v1/events", event, format="json")
again = client.post("/api/v1/events", event, format="json")
assert first.status_code == 201, first.content
assert again.status_code == 200 and again.json()["duplicate"] is True, again.content
hold = client.post("/api/v1/authorize", {"model": "gpt-4o", "estimated_input_tokens": 100,
                   "max_output_tokens": 100, "hold": True, "request_id": "embedded-2"}, format="json")
assert hold.status_code == 200 and hold.json()["hold_id"], hold.content
settle = client.post("/api/v1/events", dict(event, request_id="embedded-2"), format="json")
assert settle.status_code == 201, settle.content
balance = client.get("/api/v1/balance")
assert balance.status_code == 200 and balance.json()["holds_count"] == 0, balance.content
usage = client.get("/api/v1/usage", {"group_by": "model"})
assert usage.status_code == 200 and usage.json()["results"], usage.content
print("ok")
"""


def test_demo_data_and_api_work_on_sqlite_without_redis(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("TOKENBILL_REQUIRE_POSTGRES", "CELERY_BROKER_URL")}
    env |= {
        "DEBUG": "1",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "REDIS_URL": "",
        "CELERY_FS_DIR": str(tmp_path / "celery"),
        "DJANGO_SETTINGS_MODULE": "portal.settings",
        "LOG_LEVEL": "WARNING",
    }

    def manage(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "manage.py", *args],
            check=False,
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    manage("migrate", "--noinput", "-v0")
    seeded = manage("seed_demo", "--days", "1", "--per-day", "5")
    key = next(line.split()[-1] for line in seeded.splitlines() if "Demo API key" in line)
    assert "demo@example.com" in seeded

    done = subprocess.run(
        [sys.executable, "-c", CLIENT, key], check=False, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("ok")
