"""Start-up of a web worker: load what Django loads lazily, then freeze the heap.

A worker holds about 125,000 long-lived objects after start-up (Django, DRF, Celery's client,
tiktoken's tables, the URLconf). CPython's full collection walks every one of them: 45-190 ms
measured on the 2-core reference machine, a few times a minute per worker under load, and each
request queued on that worker waits it out. That was the whole p99 tail of ingest and authorize
(docs/scaling.md). `gc.freeze()` moves the objects alive at that moment into a permanent
generation that collections skip; everything created later is collected as before.
"""

import gc

from django.conf import settings
from django.urls import get_resolver
from django.utils import translation


def warm_up_and_freeze() -> int:
    """Import the URLconf and the translation catalogs, collect once, freeze. Returns the count frozen."""
    get_resolver().resolve("/healthz")  # imports every urls/views/serializers module once
    for code, _name in settings.LANGUAGES:
        with translation.override(code):
            translation.gettext("")  # loads the catalog, as LocaleMiddleware would on a first request
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
