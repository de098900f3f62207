"""bench/soak.py --short as the suite runs it: about 25 s of mixed load against gunicorn with
rollups and alert sweeps beside it, then every invariant must hold.

The soak works in a database of its own (tokenbill_soak_test plus this run's suffix, so two
checkouts on one PostgreSQL server do not meet) and empties a Redis database of its own
(SOAK_REDIS_DB, default 5), never the suite's.
"""

import os
import subprocess
import sys
import urllib.parse
from pathlib import Path

import pytest
from django.conf import settings

ROOT = Path(__file__).resolve().parents[2]
INVARIANTS = (
    "stored == unique accepted",
    "exact duplicates answered as duplicates",
    "wallet == top-ups - charges",
    "no hold left open",
    "charges == stored costs",
    "rollups == events",
    "Redis == PostgreSQL",
    "alerts claimed once",
    "no periodic job failed for a tenant",
    "no 5xx or transport error",
)

pytestmark = pytest.mark.slow


def test_the_short_soak_keeps_every_invariant():
    suite_database = urllib.parse.urlsplit(os.environ["DATABASE_URL"]).path.strip("/")
    suffix = suite_database.removeprefix("tokenbill")
    redis_db = int(os.environ.get("SOAK_REDIS_DB", "5"))
    suite_redis = urllib.parse.urlsplit(settings.REDIS_URL).path.strip("/") or "0"
    assert str(redis_db) != suite_redis, "the soak empties its Redis database: give it another (SOAK_REDIS_DB)"
    command = [sys.executable, "bench/soak.py", "--short", "--database", f"tokenbill_soak_test{suffix}"]
    done = subprocess.run(
        [*command, "--redis-db", str(redis_db)],
        check=False,
        cwd=ROOT,
        env={**os.environ, "LOG_LEVEL": "WARNING"},
        capture_output=True,
        text=True,
        timeout=240,
    )
    output = done.stdout
    assert done.returncode == 0, f"{output[-4000:]}\n{done.stderr[-4000:]}"
    for name in INVARIANTS:
        assert f"[ok] {name}" in output, output[-4000:]
    assert "[FAIL]" not in output
    assert " events/s" in output
