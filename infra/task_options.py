"""The options a Celery task family declares once (acks, retries, time limits), as a type.

Here, below every app, so that each app's tasks.py can name it without importing the
project package (portal) that sits above them all.
"""

from typing import TypedDict


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
