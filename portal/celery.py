"""The Celery application. Tasks live in each app's tasks.py and stay thin."""

import os
from typing import TypedDict

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")

app = Celery("portal")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


class TaskOptions(TypedDict, total=False):
    """The options a task family declares once and unpacks into each @shared_task."""

    acks_late: bool
    reject_on_worker_lost: bool
    autoretry_for: tuple[type[BaseException], ...]
    retry_backoff: bool | int
    retry_backoff_max: int  # seconds
    retry_jitter: bool
    max_retries: int
    soft_time_limit: int  # seconds
    time_limit: int  # seconds
