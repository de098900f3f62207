"""Structured logging: one JSON object per line on stderr, via structlog.

Both structlog loggers and the standard library's (Django, Celery, gunicorn) go through the
same renderer, so every line an operator sees parses as JSON. Fields given with the standard
library's `extra=` become keys of the line (`add_extra_fields`); the request id that
`infra.middleware` binds for a request is on every line logged while it runs.
"""

import datetime as dt
import decimal
import enum
import logging.config
import uuid

import structlog
from structlog.typing import EventDict, WrappedLogger

# Attributes every LogRecord has; anything else on a record came from `extra=`.
_RECORD_ATTRIBUTES = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}
_AS_IS = (str, int, float, bool, type(None), list, tuple, dict)
_AS_TEXT = (decimal.Decimal, uuid.UUID, dt.date, dt.time, dt.timedelta, enum.Enum)


def add_extra_fields(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    """Copy a standard-library record's `extra=` fields into the line.

    A field never replaces a key the line already has (event, level, logger, timestamp,
    request_id): it is kept as `extra_<name>` instead. Plain values go in as they are, decimals,
    ids and dates as text; any other object is left out, since its repr may carry what a log
    must not (Django passes the request itself, whose repr names the query string).
    """
    record = event_dict.get("_record")
    if record is None:
        return event_dict
    for key, value in record.__dict__.items():
        if key in _RECORD_ATTRIBUTES or key.startswith("_"):
            continue
        if not isinstance(value, _AS_IS + _AS_TEXT):
            continue
        event_dict[f"extra_{key}" if key in event_dict else key] = str(value) if isinstance(value, _AS_TEXT) else value
    return event_dict


_SHARED_PROCESSORS: list = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
]


def structured_formatter(fmt: str = "json") -> structlog.stdlib.ProcessorFormatter:
    """The formatter of every log line: JSON (production) or console text (the embedded default)."""
    renderer = structlog.processors.JSONRenderer() if fmt == "json" else structlog.dev.ConsoleRenderer(colors=False)
    return structlog.stdlib.ProcessorFormatter(
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            renderer,
        ],
        foreign_pre_chain=[*_SHARED_PROCESSORS, add_extra_fields],
    )


def logging_config(*, level: str, fmt: str) -> None:
    logging.config.dictConfig(
        {
            "version": 1,
            "disable_existing_loggers": False,
            "formatters": {"structured": {"()": structured_formatter, "fmt": fmt}},
            "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "structured"}},
            "root": {"handlers": ["stderr"], "level": level},
            "loggers": {
                "django.db.backends": {"level": "INFO"},
                "django.server": {"level": "WARNING"},
            },
        }
    )
    structlog.configure(
        processors=[
            *_SHARED_PROCESSORS,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
