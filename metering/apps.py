from django.apps import AppConfig


class MeteringConfig(AppConfig):
    """Usage events: ingest, token counting, idempotency, authorization and rollups."""

    name = "metering"
    verbose_name = "Metering"
