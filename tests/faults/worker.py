"""`celery -A portal worker ...` for the fault tests, with time compressed.

Production waits an hour (the broker's visibility timeout) before a message that a killed
worker held goes back to the queue, and two minutes (alert delivery lease) before a delivery
claimed by a dead worker may be claimed again. The tests cannot wait that long, so this
launcher shortens both to seconds, then runs Celery's own command line unchanged:

    python -m tests.faults.worker worker --pool=solo ...
"""

import datetime as dt
import os
import sys

import django

VISIBILITY_SECONDS = float(os.environ.get("FAULTS_VISIBILITY_SECONDS", "4"))
LEASE_SECONDS = float(os.environ.get("FAULTS_LEASE_SECONDS", "4"))


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
    django.setup()
    from alerts.services import deliveries  # noqa: PLC0415 - after setup
    from portal.celery import app  # noqa: PLC0415

    deliveries.LEASE = dt.timedelta(seconds=LEASE_SECONDS)  # read by the claim, in deliveries.py
    app.conf.broker_transport_options = {
        "visibility_timeout": VISIBILITY_SECONDS,
        "unacked_restore_interval": 1,  # look for messages of dead workers every second
        "unacked_restore_throttle": 1,
        "unacked_mutex_expire": 5,
    }
    app.worker_main(["worker", *sys.argv[2:]] if sys.argv[1:2] == ["worker"] else sys.argv[1:])


if __name__ == "__main__":
    main()
