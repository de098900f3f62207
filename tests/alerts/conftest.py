"""Local SMTP, DingTalk and webhook servers for these tests, and tasks run in this process."""

import pytest

from portal.celery import app as celery_app
from tests.notify_servers import *  # noqa: F403


@pytest.fixture
def eager():
    """Tasks queued by tasks run in this process (as a worker would run them)."""
    celery_app.conf.task_always_eager = True
    yield
    celery_app.conf.task_always_eager = False
