from django.apps import AppConfig


class MeteringConfig(AppConfig):
    """Usage events: ingest, token counting, idempotency, authorization and rollups."""

    name = "metering"
    verbose_name = "Metering"

    def ready(self) -> None:
        from prometheus_client import REGISTRY  # noqa: PLC0415

        from infra.scrape import SCRAPE_COLLECTORS  # noqa: PLC0415
        from metering.metrics import UNPRICED_COLLECTOR  # noqa: PLC0415

        # The unpriced gauge is computed at scrape time, in whichever process answers /metrics.
        if UNPRICED_COLLECTOR not in SCRAPE_COLLECTORS:
            REGISTRY.register(UNPRICED_COLLECTOR)
            SCRAPE_COLLECTORS.append(UNPRICED_COLLECTOR)
