"""A web worker's start-up: the WSGI module leaves the long-lived heap out of the collector's way."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import gc, json
import portal.wsgi
from django.test import Client

frozen, tracked = gc.get_freeze_count(), len(gc.get_objects())
response = Client().get("/healthz")  # a first request finds the URLconf and catalogs loaded
print(json.dumps({"frozen": frozen, "tracked": tracked, "status": response.status_code,
                  "after_request": len(gc.get_objects())}))
"""


def test_the_wsgi_module_freezes_the_start_up_heap():
    env = {**os.environ, "DEBUG": "0", "SECRET_KEY": "x", "ALLOWED_HOSTS": "testserver", "LOG_LEVEL": "ERROR"}
    env["PYTHONWARNINGS"] = "ignore"  # a missing staticfiles directory warns at import; not this test's concern
    done = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    probe = json.loads(done.stdout.strip().splitlines()[-1])
    assert probe["status"] == 200
    assert probe["frozen"] > 50_000  # Django, DRF, the URLconf: everything imported at start-up
    assert probe["tracked"] < 1_000  # nothing left for a full collection to walk
    assert probe["after_request"] < 5_000  # the first request loaded nothing big lazily
