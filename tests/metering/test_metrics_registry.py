"""Metrics registered at start-up: a worker boots with its database reachable, and /metrics
declares every metric once (prometheus_client gives a counter named `x_total` the family `x`
too, so no other metric may be called `x`)."""

import os
import subprocess
import sys
import urllib.parse
from pathlib import Path

import pytest
from django.db import connection
from django.test import override_settings
from rest_framework.test import APIClient

from tests.assertions import METRICS_TOKEN

ROOT = Path(__file__).resolve().parents[2]


def _database_url() -> str:
    db = connection.settings_dict
    user = urllib.parse.quote(db["USER"] or "")
    password = ":" + urllib.parse.quote(db["PASSWORD"]) if db["PASSWORD"] else ""
    return f"postgres://{user}{password}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


@pytest.mark.parametrize("multiprocess", [False, True], ids=["single-process", "multiprocess"])
def test_the_app_boots_with_its_database_reachable(db, tmp_path, multiprocess):
    """Registering the unpriced gauges once clashed with the unpriced counter as soon as the
    registry could query the database: every gunicorn worker then failed to boot."""
    env = dict(os.environ, DATABASE_URL=_database_url(), DJANGO_SETTINGS_MODULE="portal.settings")
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    if multiprocess:
        env["PROMETHEUS_MULTIPROC_DIR"] = str(tmp_path)
    done = subprocess.run(
        [sys.executable, "-c", "import django; django.setup(); print('booted')"],
        check=False,
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "booted"


def test_metrics_declares_each_metric_once(db):
    with override_settings(METRICS_TOKEN=METRICS_TOKEN):
        response = APIClient().get("/metrics", HTTP_AUTHORIZATION=f"Bearer {METRICS_TOKEN}")
    assert response.status_code == 200
    types = [line.split()[2] for line in response.content.decode().splitlines() if line.startswith("# TYPE ")]
    assert len(types) == len(set(types)), sorted({name for name in types if types.count(name) > 1})
    assert {"tokenbill_unpriced_events_total", "tokenbill_unpriced_events_pending", "tokenbill_unpriced_models"} <= set(
        types
    )
