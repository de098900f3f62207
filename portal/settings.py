"""Settings: one file, environment variables only (12-factor).

Every variable is documented in .env.example. A bad value fails loudly with
ImproperlyConfigured at start-up; nothing here connects to a database or Redis.
"""

import datetime as dt
import ipaddress
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import environ
from django.core.exceptions import ImproperlyConfigured

from infra.logconfig import logging_config

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)  # optional local file, never required

DEBUG = env.bool("DEBUG", default=False)

SECRET_KEY = env.str("SECRET_KEY", default="")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("SECRET_KEY must be set when DEBUG is off.")
    SECRET_KEY = "insecure-development-key-do-not-use-in-production"  # noqa: S105 - DEBUG only

# Server-side pepper mixed into API key and service token hashes (HMAC-SHA256). Rotating it
# invalidates every issued key, so it is separate from SECRET_KEY.
API_KEY_PEPPER = env.str("API_KEY_PEPPER", default=SECRET_KEY)

ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost"] if DEBUG else [])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])
PORTAL_BASE_URL = env.str("PORTAL_BASE_URL", default="http://127.0.0.1:8000")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_prometheus",
    "axes",  # login throttling: failed attempts per account and per client address
    "accounts",
    "billing",
    "metering",
    "django_celery_beat",
    "alerts",
    "invoicing",
    "relay",
    "portal.web",
]

MIDDLEWARE = [
    # First: every response, error pages included, carries the request id, and every log line
    # written during the request names it; then one log line per request (LOG_REQUESTS).
    "infra.middleware.RequestIdMiddleware",
    "infra.middleware.RequestLogMiddleware",
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_prometheus.middleware.PrometheusAfterMiddleware",
    # Last, so that its 429 lockout page is what every other middleware (metrics too) sees.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "portal.urls"
WSGI_APPLICATION = "portal.wsgi.application"
ASGI_APPLICATION = "portal.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "django.template.context_processors.i18n",
            ],
        },
    },
]

# --- Data stores --------------------------------------------------------------------------
# Embedded default: SQLite next to manage.py. Production: postgres://user:pass@host:5432/db
DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}")}
DATABASES["default"]["CONN_MAX_AGE"] = env.int("DB_CONN_MAX_AGE", default=60)
# A health check costs a round trip (SELECT 1) at the start of every request. Off by default:
# a connection the server dropped fails one request, which closes it for the next one.
DATABASES["default"]["CONN_HEALTH_CHECKS"] = env.bool("DB_CONN_HEALTH_CHECKS", default=False)
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    DATABASES["default"]["ENGINE"] = "django_prometheus.db.backends.postgresql"
    # Server-side prepared statements for the hand-written hot-path statements (infra/db.py),
    # after this many runs on a connection; empty disables them (a pooler that cannot keep them).
    _prepare_threshold = env.str("DB_PREPARE_THRESHOLD", default="5").strip()
    DATABASES["default"].setdefault("OPTIONS", {})["prepare_threshold"] = (
        int(_prepare_threshold) if _prepare_threshold else None
    )
elif DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # SQLite serialises writers; wait for the lock instead of failing under light concurrency.
    DATABASES["default"].setdefault("OPTIONS", {})["timeout"] = 20
    DATABASES["default"]["CONN_MAX_AGE"] = 0
# Optional: a streaming read replica of DATABASE_URL (same database, user and password on
# another host). Dashboards and reports read from it (infra/db_routing.py says which; writes,
# money and access decisions never do). Empty: every read on the primary.
DATABASE_REPLICA_URL = env.str("DATABASE_REPLICA_URL", default="")
if DATABASE_REPLICA_URL:
    _replica = env.db_url_config(DATABASE_REPLICA_URL)
    if _replica["ENGINE"] != "django.db.backends.postgresql" or "postgresql" not in DATABASES["default"]["ENGINE"]:
        raise ImproperlyConfigured(
            "DATABASE_REPLICA_URL must be a postgres:// URL, and DATABASE_URL PostgreSQL too (SQLite has no replicas)"
        )
    # The primary's engine and options; in tests the alias is the test database itself (no copy).
    DATABASES["replica"] = {
        **DATABASES["default"],
        **{name: _replica[name] for name in ("NAME", "USER", "PASSWORD", "HOST", "PORT")},
        "OPTIONS": dict(DATABASES["default"].get("OPTIONS", {})),
        "TEST": {"MIRROR": "default"},
    }
    DATABASE_ROUTERS = ["infra.db_routing.PrimaryReplicaRouter"]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Optional. Without it the portal runs on the database alone (balances, cache, eager tasks).
REDIS_URL = env.str("REDIS_URL", default="")
if REDIS_URL and not REDIS_URL.startswith(("redis://", "rediss://", "unix://")):
    raise ImproperlyConfigured("REDIS_URL must start with redis://, rediss:// or unix://")

# REDIS_URL names one node of a Redis Cluster (any node; db 0): every Redis client becomes
# redis-py's RedisCluster (infra/redis_client.py). Celery's broker stays a standalone Redis or
# RabbitMQ (CELERY_BROKER_URL). docs/scaling.md, "Redis Cluster and read replicas".
REDIS_CLUSTER = env.bool("REDIS_CLUSTER", default=False)
if REDIS_CLUSTER:
    if not REDIS_URL:
        raise ImproperlyConfigured("REDIS_CLUSTER=1 needs REDIS_URL naming one node of the cluster")
    _cluster_url = urlsplit(REDIS_URL)
    if _cluster_url.scheme not in ("redis", "rediss") or _cluster_url.path.strip("/") not in ("", "0"):
        raise ImproperlyConfigured("REDIS_CLUSTER=1: REDIS_URL must be redis:// or rediss:// on database 0")

if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": (
                "infra.cluster_cache.RedisClusterCache"
                if REDIS_CLUSTER
                else "django.core.cache.backends.redis.RedisCache"
            ),
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": env.str("CACHE_KEY_PREFIX", default="tb"),
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# --- Celery -------------------------------------------------------------------------------
# Production: Redis is the broker. Embedded default (no Redis): kombu's filesystem transport,
# a queue of files under CELERY_FS_DIR served by the worker + beat that `make run` starts, so
# the periodic work happens there too without any server (docs/deploy.md).
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default=REDIS_URL or "filesystem://")
if REDIS_CLUSTER and CELERY_BROKER_URL == REDIS_URL:
    raise ImproperlyConfigured(
        "REDIS_CLUSTER=1: Celery cannot use a Redis Cluster as its broker; "
        "set CELERY_BROKER_URL to a standalone Redis (redis://...) or RabbitMQ (amqp://...)"
    )
CELERY_FS_DIR = Path(env.str("CELERY_FS_DIR", default=str(BASE_DIR / ".celery")))
if CELERY_BROKER_URL.startswith("filesystem://"):
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(CELERY_FS_DIR / "queue"),
        "data_folder_out": str(CELERY_FS_DIR / "queue"),
        "control_folder": str(CELERY_FS_DIR / "control"),  # else "control/" in the working directory
        "store_processed": False,
    }
else:
    # An unacknowledged task (acks_late) goes back to the queue after this many seconds: longer
    # than any task's time limit and any countdown used here, or it would run twice needlessly.
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": env.int("CELERY_VISIBILITY_TIMEOUT", default=3600)}
CELERY_RESULT_BACKEND = None
# Eager (in-process) tasks are for debugging only: the embedded default has a real queue.
CELERY_TASK_ALWAYS_EAGER = env.bool("CELERY_TASK_ALWAYS_EAGER", default=False)
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TIMEZONE = "UTC"
# With acks_late a prefetched task is held unacknowledged; fetch one at a time so a slow task
# does not sit on others that another worker could run.
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
# Periodic work (beat copies it into django-celery-beat's tables at start). Every task here is
# idempotent and safe to run from two schedulers at once.
ROLLUP_REFRESH_SECONDS = env.int("ROLLUP_REFRESH_SECONDS", default=300)
ALERTS_SWEEP_SECONDS = env.int("ALERTS_SWEEP_SECONDS", default=300)
RECONCILE_SECONDS = env.int("RECONCILE_SECONDS", default=600)
UNPRICED_CHECK_SECONDS = env.int("UNPRICED_CHECK_SECONDS", default=900)  # docs/operations.md "Unpriced usage"
_RETENTION_SECONDS = env.int("RETENTION_SECONDS", default=86_400)  # archival and pruning (below)
CELERY_BEAT_SCHEDULE = {
    "rollup-refresh": {"task": "metering.tasks.rollup_refresh", "schedule": ROLLUP_REFRESH_SECONDS},
    "rollup-finalize": {"task": "metering.tasks.rollup_finalize", "schedule": 3600},
    "alerts-sweep": {"task": "alerts.tasks.alerts_sweep", "schedule": ALERTS_SWEEP_SECONDS},
    "holds-release-expired": {"task": "billing.tasks.holds_release_expired", "schedule": 60},
    "balances-reconcile": {"task": "billing.tasks.balances_reconcile", "schedule": RECONCILE_SECONDS},
    # Monthly close: hourly refresh of last month's drafts; finalizes those past their grace.
    "invoices-close-due": {"task": "invoicing.tasks.invoices_close_due", "schedule": 3600},
    # Retention (docs/operations.md "Retention"): partitions ahead, archival of old usage months,
    # pruning of old alert deliveries, closed holds and (if configured) the audit log.
    "usage-partitions-ensure": {"task": "metering.tasks.usage_partitions_ensure", "schedule": 3600},
    "usage-archive-due": {"task": "metering.tasks.usage_archive_due", "schedule": _RETENTION_SECONDS},
    "holds-prune-closed": {"task": "billing.tasks.holds_prune_closed", "schedule": _RETENTION_SECONDS},
    "alert-deliveries-prune": {"task": "alerts.tasks.alert_deliveries_prune", "schedule": _RETENTION_SECONDS},
    "audit-log-prune": {"task": "accounts.tasks.audit_log_prune", "schedule": _RETENTION_SECONDS},
    # Unpriced usage: a WARNING with the counts, staff emailed once a day per model.
    "unpriced-usage-check": {
        "task": "metering.tasks.unpriced_usage_check",
        "schedule": UNPRICED_CHECK_SECONDS,
    },
}
# Unpriced usage (docs/operations.md "Unpriced usage"): the beat task (UNPRICED_CHECK_SECONDS)
# logs the counts and emails staff at most once a day per model; the gauge is computed at most
# once per UNPRICED_GAUGE_SECONDS per process.
UNPRICED_GAUGE_SECONDS = env.int("UNPRICED_GAUGE_SECONDS", default=60)
if UNPRICED_CHECK_SECONDS < 1 or UNPRICED_GAUGE_SECONDS < 0:
    raise ImproperlyConfigured("UNPRICED_CHECK_SECONDS must be positive, UNPRICED_GAUGE_SECONDS 0 or more")

# --- Rollups and alerts -------------------------------------------------------------------
# Events received this long before the last refresh are scanned again: covers commit lag
# and clock skew between web nodes (a re-scan only costs an idempotent rebuild).
ROLLUP_OVERLAP_SECONDS = env.int("ROLLUP_OVERLAP_SECONDS", default=600)
# A burst of ingest batches queues at most one alert evaluation per tenant per this window.
ALERTS_DEBOUNCE_SECONDS = env.int("ALERTS_DEBOUNCE_SECONDS", default=3)
# Webhook deliveries retry inside this many seconds per attempt, then the task retries later.
NOTIFICATIONS_HTTP_TIMEOUT = env.float("NOTIFICATIONS_HTTP_TIMEOUT", default=5.0)
NOTIFICATIONS_RETRY_BUDGET = env.float("NOTIFICATIONS_RETRY_BUDGET", default=15.0)
# DingTalk throttles a custom robot for 10 minutes above 20 messages a minute.
DINGTALK_MAX_PER_MINUTE = env.int("DINGTALK_MAX_PER_MINUTE", default=20)
# WeCom answers 45009 above 20 messages a minute per robot; Feishu takes 100 a minute per bot.
WECOM_MAX_PER_MINUTE = env.int("WECOM_MAX_PER_MINUTE", default=20)
FEISHU_MAX_PER_MINUTE = env.int("FEISHU_MAX_PER_MINUTE", default=100)
for _name in (
    "ROLLUP_REFRESH_SECONDS",
    "ALERTS_SWEEP_SECONDS",
    "ALERTS_DEBOUNCE_SECONDS",
    "DINGTALK_MAX_PER_MINUTE",
    "WECOM_MAX_PER_MINUTE",
    "FEISHU_MAX_PER_MINUTE",
):
    if globals()[_name] < 1:
        raise ImproperlyConfigured(f"{_name} must be a positive number")
# Alert channels (webhook and chat robots) reach public internet addresses only; receivers on
# premises are allowed here: comma-separated CIDR networks and/or exact host names
# (infra/notifications/outbound.py, docs/security.md "Outbound requests"). Empty by default.
OUTBOUND_ALLOWED_NETWORKS = tuple(
    _entry.strip().lower() for _entry in env.list("OUTBOUND_ALLOWED_NETWORKS", default=[]) if _entry.strip()
)
for _entry in OUTBOUND_ALLOWED_NETWORKS:
    try:
        ipaddress.ip_network(_entry)  # strict: 10.0.0.1/8 (host bits set) is refused, not guessed
    except ValueError as _error:
        if "/" in _entry or ":" in _entry or _entry.replace(".", "").isdigit():
            raise ImproperlyConfigured(
                f"OUTBOUND_ALLOWED_NETWORKS: {_entry!r} is not a CIDR network ({_error})"
            ) from None
        _labels = _entry.removesuffix(".").split(".")
        if not all(_label.isascii() and _label.replace("-", "").replace("_", "").isalnum() for _label in _labels):
            raise ImproperlyConfigured(
                f"OUTBOUND_ALLOWED_NETWORKS: {_entry!r} is neither a CIDR network nor a host name"
            ) from None

# --- Auth, i18n, static -------------------------------------------------------------------
PASSWORD_MIN_LENGTH = env.int("PASSWORD_MIN_LENGTH", default=12)
if PASSWORD_MIN_LENGTH < 8:
    raise ImproperlyConfigured("PASSWORD_MIN_LENGTH must be at least 8")
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {
        "NAME": "django.contrib.auth.password_validation.MinimumLengthValidator",
        "OPTIONS": {"min_length": PASSWORD_MIN_LENGTH},
    },
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
# The lockout check runs first and refuses a locked-out account or address before any
# password is compared (docs/security.md, "Login and password protection").
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"  # the session's tenant dashboard (or operations for staff)
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en"
LANGUAGES = [("en", "English"), ("zh-hans", "简体中文")]
LOCALE_PATHS = [BASE_DIR / "locale"]
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATICFILES_FINDERS = [
    "django.contrib.staticfiles.finders.FileSystemFinder",
    "django.contrib.staticfiles.finders.AppDirectoriesFinder",
    "portal.web.staticfiles.PlotlyFinder",  # vendor/plotly.min.js from the plotly package, no CDN
]
STORAGES: dict[str, dict[str, Any]] = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if not DEBUG
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}

EMAIL_BACKEND = env.str("EMAIL_BACKEND", default="django.core.mail.backends.smtp.EmailBackend")
EMAIL_HOST = env.str("EMAIL_HOST", default="127.0.0.1")
EMAIL_PORT = env.int("EMAIL_PORT", default=25)
EMAIL_HOST_USER = env.str("EMAIL_HOST_USER", default="")
EMAIL_HOST_PASSWORD = env.str("EMAIL_HOST_PASSWORD", default="")
EMAIL_USE_TLS = env.bool("EMAIL_USE_TLS", default=False)
EMAIL_TIMEOUT = env.int("EMAIL_TIMEOUT", default=10)
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="billing@localhost")

# --- Login throttling (django-axes; docs/security.md, "Login and password protection") ------
# After LOGIN_FAILURE_LIMIT failed logins for one account, or from one client address, within
# LOGIN_COOLOFF_MINUTES, logins for it answer 429 until that long after the last failure.
LOGIN_FAILURE_LIMIT = env.int("LOGIN_FAILURE_LIMIT", default=5)
LOGIN_COOLOFF_MINUTES = env.int("LOGIN_COOLOFF_MINUTES", default=15)
if LOGIN_FAILURE_LIMIT < 1 or LOGIN_COOLOFF_MINUTES < 1:
    raise ImproperlyConfigured("LOGIN_FAILURE_LIMIT and LOGIN_COOLOFF_MINUTES must be positive numbers")
AXES_FAILURE_LIMIT = LOGIN_FAILURE_LIMIT
AXES_COOLOFF_TIME = dt.timedelta(minutes=LOGIN_COOLOFF_MINUTES)
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]  # either one alone locks out
# A success does not wipe the count: attempts are keyed by address too, and an attacker who
# owns one account could otherwise clear their address's failures by logging into it.
AXES_RESET_ON_SUCCESS = False
AXES_ENABLE_ACCESS_FAILURE_LOG = True  # every failure kept for operators (admin: Axes)
AXES_CLIENT_IP_CALLABLE = "accounts.client_ip.client_ip"  # the one client-address rule
AXES_LOCKOUT_CALLABLE = "portal.web.views.auth.locked_out"  # the translated 429 page
# The password reset form: requests per email address and per client address per window.
PASSWORD_RESET_LIMIT_PER_EMAIL = env.int("PASSWORD_RESET_LIMIT_PER_EMAIL", default=3)
PASSWORD_RESET_LIMIT_PER_ADDRESS = env.int("PASSWORD_RESET_LIMIT_PER_ADDRESS", default=10)
PASSWORD_RESET_WINDOW_MINUTES = env.int("PASSWORD_RESET_WINDOW_MINUTES", default=60)
if min(PASSWORD_RESET_LIMIT_PER_EMAIL, PASSWORD_RESET_LIMIT_PER_ADDRESS, PASSWORD_RESET_WINDOW_MINUTES) < 1:
    raise ImproperlyConfigured("PASSWORD_RESET_LIMIT_* and PASSWORD_RESET_WINDOW_MINUTES must be positive numbers")

# --- Production safety --------------------------------------------------------------------
# Reverse proxies in front of the portal (0: clients connect directly). Only when declared are
# X-Forwarded-For (the client address: accounts.client_ip) and X-Forwarded-Proto (HTTPS)
# believed; the portal's port must then be reachable through the proxy alone.
TRUSTED_PROXY_COUNT = env.int("TRUSTED_PROXY_COUNT", default=0)
if not 0 <= TRUSTED_PROXY_COUNT <= 5:
    raise ImproperlyConfigured("TRUSTED_PROXY_COUNT must be between 0 and 5")
if TRUSTED_PROXY_COUNT:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# Deploy checks silenced on purpose, each with its reason (docs/security.md).
_DEPLOY_CHECKS_SILENCED: list[str] = []
if not DEBUG:
    SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=True)
    CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=True)
    SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=False)
    if not SECURE_SSL_REDIRECT:
        # security.W008: TLS ends at the reverse proxy, which redirects http:// to https://;
        # redirecting here too would answer plain-HTTP health probes and scrapers with 301.
        _DEPLOY_CHECKS_SILENCED.append("security.W008")
    # Browsers refuse plain HTTP to this host for a year after one HTTPS answer.
    SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31_536_000)
    # Subdomains of the portal's own host name (not of its parent domain).
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=True)
    SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=False)
    if not SECURE_HSTS_PRELOAD:
        # security.W021: preloading is a commitment for the whole registered domain, made by
        # submitting it to the browsers' list; the operator opts in, the portal cannot.
        _DEPLOY_CHECKS_SILENCED.append("security.W021")
    SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"

# --- API ----------------------------------------------------------------------------------
# Largest accepted request body; ingest answers 413 above it.
DATA_UPLOAD_MAX_MEMORY_SIZE = env.int("MAX_REQUEST_BODY_BYTES", default=4 * 1024 * 1024)
INGEST_MAX_BATCH = env.int("INGEST_MAX_BATCH", default=1000)
INGEST_MAX_FUTURE_SECONDS = env.int("INGEST_MAX_FUTURE_SECONDS", default=300)
# How old an event's timestamp may be, in days (never before 2000-01-01 whatever this says).
# Older or unrepresentable timestamps answer 400 timestamp_out_of_range (metering/validation.py).
INGEST_MAX_PAST_DAYS = env.int("INGEST_MAX_PAST_DAYS", default=400)
if not 1 <= INGEST_MAX_PAST_DAYS <= 100_000:
    raise ImproperlyConfigured("INGEST_MAX_PAST_DAYS must be between 1 and 100000 (days)")
if not 0 <= INGEST_MAX_FUTURE_SECONDS <= 10 * 366 * 86400:
    raise ImproperlyConfigured("INGEST_MAX_FUTURE_SECONDS must be between 0 and ten years (in seconds)")
# Abuse ceiling: ingest requests per credential per minute (2,000 a second), far above any honest client (one
# request may carry 1,000 events); above it 429 + Retry-After. 0 turns it off. Usage is never
# refused for a tenant's own rate limits (docs/security.md).
INGEST_CEILING_PER_MINUTE = env.int("INGEST_CEILING_PER_MINUTE", default=120_000)
if INGEST_CEILING_PER_MINUTE < 0:
    raise ImproperlyConfigured("INGEST_CEILING_PER_MINUTE must be 0 (off) or a positive number")
if not 1 <= INGEST_MAX_BATCH <= 10_000:
    raise ImproperlyConfigured("INGEST_MAX_BATCH must be between 1 and 10000")

# --- Balances, holds, quotas (docs/scaling.md, "Balances in Redis") --------------------------
# "redis": the authorize hot path runs Lua scripts on REDIS_URL (PostgreSQL stays the truth);
# "db": the same interface on the database alone (row locks). Default: redis when configured.
_IS_POSTGRES = "postgresql" in DATABASES["default"]["ENGINE"]
BALANCE_BACKEND = env.str("BALANCE_BACKEND", default="") or ("redis" if REDIS_URL and _IS_POSTGRES else "db")
if BALANCE_BACKEND not in ("redis", "db"):
    raise ImproperlyConfigured("BALANCE_BACKEND must be 'redis' or 'db'")
if BALANCE_BACKEND == "redis" and not (REDIS_URL and _IS_POSTGRES):
    raise ImproperlyConfigured("BALANCE_BACKEND=redis needs REDIS_URL and a PostgreSQL DATABASE_URL")
BALANCE_REDIS_TIMEOUT = env.float("BALANCE_REDIS_TIMEOUT", default=0.5)  # seconds per Redis call
# An authorization's hold is released this long after it was placed if no usage settles it.
HOLD_TTL_SECONDS = env.int("HOLD_TTL_SECONDS", default=600)
# Off: a hold's COMMIT does not wait for the WAL flush (several times more holds per second
# for one tenant; a PostgreSQL crash may lose the last moments of holds). docs/scaling.md.
HOLD_SYNCHRONOUS_COMMIT = env.bool("HOLD_SYNCHRONOUS_COMMIT", default=True)
# Authorize caches a model's price and a tenant's quota list in-process this long (0: never).
AUTHORIZE_CACHE_SECONDS = env.int("AUTHORIZE_CACHE_SECONDS", default=30)

# The relay, the OpenAI-compatible gateway under /v1/ (docs/relay.md).
# Fernet keys for the upstreams' API keys at rest, newest first (the first encrypts, all decrypt).
RELAY_ENCRYPTION_KEYS = env.list("RELAY_ENCRYPTION_KEYS", default=[])
if not DEBUG and not RELAY_ENCRYPTION_KEYS and env.bool("RELAY_REQUIRE_ENCRYPTION_KEYS", default=False):
    raise ImproperlyConfigured("RELAY_ENCRYPTION_KEYS is required (RELAY_REQUIRE_ENCRYPTION_KEYS=1)")
# The relay's base URL as tenants see it (the portal's Quick start page).
RELAY_BASE_URL = env.str("RELAY_BASE_URL", default="") or f"{PORTAL_BASE_URL.rstrip('/')}/v1"
# Per process: threads (each with its database connection) that prepare calls and hold lone ones;
# held groups have two more threads and the recorder one (relay/gateway.py).
RELAY_DB_THREADS = env.int("RELAY_DB_THREADS", default=8)
RELAY_MAX_BODY_BYTES = env.int("RELAY_MAX_BODY_BYTES", default=8 * 1024 * 1024)
RELAY_DEFAULT_MAX_OUTPUT_TOKENS = env.int("RELAY_DEFAULT_MAX_OUTPUT_TOKENS", default=4096)
RELAY_MAX_OUTPUT_TOKENS = env.int("RELAY_MAX_OUTPUT_TOKENS", default=1_000_000)
RELAY_ROUTES_CACHE_SECONDS = env.float("RELAY_ROUTES_CACHE_SECONDS", default=5.0)
# A key (with its tenant, limits and plan version) found by its secret is reused this long: a
# revoked or changed key takes up to this long to reach the relay (0: one query per call).
RELAY_KEY_CACHE_SECONDS = env.float("RELAY_KEY_CACHE_SECONDS", default=1.0)
if not 0 <= RELAY_KEY_CACHE_SECONDS <= 60:
    raise ImproperlyConfigured("RELAY_KEY_CACHE_SECONDS must be 0..60")
RELAY_BREAKER_FAILURES = env.int("RELAY_BREAKER_FAILURES", default=5)
RELAY_BREAKER_COOLDOWN_SECONDS = env.float("RELAY_BREAKER_COOLDOWN_SECONDS", default=30.0)
# Finished calls are recorded in batches: at most this long after the call, or at once when
# RELAY_RECORD_BATCH are waiting. In memory: a killed process loses up to one interval's calls
# (their holds are released at expiry, uncharged); a graceful stop writes them (docs/relay.md).
# 50 ms rather than 25: batches twice as large cost 8-12 % less relay CPU per call at 200
# calls/s (alternated in one process), for up to twice as many calls lost to a SIGKILL.
RELAY_RECORD_INTERVAL_MS = env.int("RELAY_RECORD_INTERVAL_MS", default=50)
RELAY_RECORD_BATCH = env.int("RELAY_RECORD_BATCH", default=200)
if not 0 <= RELAY_RECORD_INTERVAL_MS <= 5000:
    raise ImproperlyConfigured("RELAY_RECORD_INTERVAL_MS must be 0..5000")
for _name in (
    "RELAY_DB_THREADS", "RELAY_MAX_BODY_BYTES", "RELAY_DEFAULT_MAX_OUTPUT_TOKENS", "RELAY_BREAKER_FAILURES",
    "RELAY_RECORD_BATCH",
):  # fmt: skip
    if globals()[_name] < 1:
        raise ImproperlyConfigured(f"{_name} must be at least 1")
if not 10 <= HOLD_TTL_SECONDS <= 7 * 86_400:
    raise ImproperlyConfigured("HOLD_TTL_SECONDS must be between 10 and 604800")
if not 0 <= AUTHORIZE_CACHE_SECONDS <= 3600 or not 0 < BALANCE_REDIS_TIMEOUT <= 30:
    raise ImproperlyConfigured("AUTHORIZE_CACHE_SECONDS must be 0..3600 and BALANCE_REDIS_TIMEOUT 0..30 seconds")
# In-process caches are bounded (infra/cache.py; least recently used out): model names and
# credentials come from clients. Entries, per worker process.
PRICE_BOOK_CACHE_SIZE = env.int("PRICE_BOOK_CACHE_SIZE", default=10_000)  # one per (plan, tenant, model)
AUTHORIZE_CACHE_SIZE = env.int("AUTHORIZE_CACHE_SIZE", default=10_000)  # one quota list per tenant
for _name in ("PRICE_BOOK_CACHE_SIZE", "AUTHORIZE_CACHE_SIZE"):
    if not 0 <= globals()[_name] <= 10_000_000:
        raise ImproperlyConfigured(f"{_name} must be 0..10000000 entries (0: no cache)")

# --- Retention and archival (docs/operations.md "Retention") --------------------------------
# Usage events: months older than this many whole months are exported to the archive storage,
# verified and dropped (metering/services/archive.py); 0 keeps them online forever. A month is
# archived only once ingest refuses its events (INGEST_MAX_PAST_DAYS). Rollups, invoices,
# credit notes and the ledger are never archived.
USAGE_RETENTION_MONTHS = env.int("USAGE_RETENTION_MONTHS", default=13)
# Monthly partitions of the usage table created ahead of time (PostgreSQL; metering/partitions.py).
USAGE_PARTITIONS_AHEAD = env.int("USAGE_PARTITIONS_AHEAD", default=3)
# gzip level of the JSON Lines archives written on SQLite (PostgreSQL writes Parquet, zstd).
ARCHIVE_GZIP_LEVEL = env.int("ARCHIVE_GZIP_LEVEL", default=1)
# Alert deliveries delivered or failed this many days ago are deleted (0: kept forever).
ALERT_DELIVERY_RETENTION_DAYS = env.int("ALERT_DELIVERY_RETENTION_DAYS", default=180)
# Settled or released holds closed this many days ago are deleted (0: kept forever). The
# ledger keeps their entries.
HOLD_RETENTION_DAYS = env.int("HOLD_RETENTION_DAYS", default=90)
# The audit log: 0 keeps it forever (the default); otherwise at least seven years (2557 days),
# and every prune is itself logged and audited.
AUDIT_LOG_RETENTION_DAYS = env.int("AUDIT_LOG_RETENTION_DAYS", default=0)
RETENTION_SECONDS = _RETENTION_SECONDS  # how often beat runs archival and pruning (RETENTION_SECONDS)
if not 0 <= USAGE_RETENTION_MONTHS <= 1200 or not 1 <= USAGE_PARTITIONS_AHEAD <= 24:
    raise ImproperlyConfigured("USAGE_RETENTION_MONTHS must be 0..1200 and USAGE_PARTITIONS_AHEAD 1..24")
if not 1 <= ARCHIVE_GZIP_LEVEL <= 9:
    raise ImproperlyConfigured("ARCHIVE_GZIP_LEVEL must be between 1 and 9")
if ALERT_DELIVERY_RETENTION_DAYS < 0 or HOLD_RETENTION_DAYS < 0 or RETENTION_SECONDS < 60:
    raise ImproperlyConfigured(
        "ALERT_DELIVERY_RETENTION_DAYS and HOLD_RETENTION_DAYS must be 0 or more, RETENTION_SECONDS 60 or more"
    )
if AUDIT_LOG_RETENTION_DAYS != 0 and AUDIT_LOG_RETENTION_DAYS < 2557:
    raise ImproperlyConfigured("AUDIT_LOG_RETENTION_DAYS must be 0 (forever) or at least 2557 (seven years)")
# Where archive files go: a local directory by default; an S3-compatible bucket when
# ARCHIVE_S3_BUCKET is set (django-storages; credentials from the usual AWS_* variables or the
# instance's role).
ARCHIVE_DIR = Path(env.str("ARCHIVE_DIR", default="") or BASE_DIR / "archive")
ARCHIVE_S3_BUCKET = env.str("ARCHIVE_S3_BUCKET", default="")
if ARCHIVE_S3_BUCKET:
    STORAGES["archive"] = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": ARCHIVE_S3_BUCKET,
            "location": env.str("ARCHIVE_S3_PREFIX", default="tokenbill"),
            "endpoint_url": env.str("ARCHIVE_S3_ENDPOINT_URL", default="") or None,
            "region_name": env.str("ARCHIVE_S3_REGION", default="") or None,
            "default_acl": "private",
            "file_overwrite": True,
        },
    }
else:
    STORAGES["archive"] = {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": ARCHIVE_DIR},
    }

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["accounts.authentication.BearerAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PARSER_CLASSES": ["api.parsers.StrictJSONParser"],
    "DEFAULT_RENDERER_CLASSES": ["api.renderers.FastJSONRenderer"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "api.errors.exception_handler",
    "UNAUTHENTICATED_USER": None,
    "COERCE_DECIMAL_TO_STRING": True,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Token billing portal API",
    "DESCRIPTION": "Usage ingest, balance checks, usage queries and invoices. "
    'Errors are {"error": {"code", "message", "details"}}.',
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

# --- Invoicing ----------------------------------------------------------------------------
# Issuer details printed on every invoice and credit note (frozen on each at finalization).
INVOICE_ISSUER_NAME = env.str("INVOICE_ISSUER_NAME", default="Token Billing Ltd.")
INVOICE_ISSUER_ADDRESS = env.str("INVOICE_ISSUER_ADDRESS", default="")
INVOICE_ISSUER_TAX_ID = env.str("INVOICE_ISSUER_TAX_ID", default="")
INVOICE_ISSUER_EMAIL = env.str("INVOICE_ISSUER_EMAIL", default="")
# Days after a tenant's month ends during which the invoice stays a draft (late events fold in).
INVOICE_GRACE_DAYS = env.int("INVOICE_GRACE_DAYS", default=3)
# Events received up to this many seconds before finalization are on the invoice; the margin
# lets in-flight ingest transactions commit. Later ones go on the next invoice as adjustments.
INVOICE_SETTLE_SECONDS = env.int("INVOICE_SETTLE_SECONDS", default=300)
if not 0 <= INVOICE_GRACE_DAYS <= 60:
    raise ImproperlyConfigured("INVOICE_GRACE_DAYS must be between 0 and 60")
if not 0 <= INVOICE_SETTLE_SECONDS <= 86_400:
    raise ImproperlyConfigured("INVOICE_SETTLE_SECONDS must be between 0 and 86400")

# --- Observability ------------------------------------------------------------------------
LOG_LEVEL = env.str("LOG_LEVEL", default="INFO").upper()
LOG_FORMAT = env.str("LOG_FORMAT", default="json")
if LOG_FORMAT not in ("json", "console"):
    raise ImproperlyConfigured("LOG_FORMAT must be 'json' or 'console'")
LOGGING_CONFIG = None
logging_config(level=LOG_LEVEL, fmt=LOG_FORMAT)
# One INFO line per request (logger portal.requests: method, route, status, duration, caller,
# request id; never a query string, header or body). Off: no such lines.
LOG_REQUESTS = env.bool("LOG_REQUESTS", default=True)

PROMETHEUS_EXPORT_MIGRATIONS = False
# Who may read /metrics and /readyz's per-check details: a caller presenting
# "Authorization: Bearer <METRICS_TOKEN>" or one whose client address is in
# METRICS_ALLOWED_NETWORKS (CIDRs). Neither set: nobody when DEBUG=0, everybody when DEBUG=1.
METRICS_TOKEN = env.str("METRICS_TOKEN", default="")
METRICS_ALLOWED_NETWORKS = env.list("METRICS_ALLOWED_NETWORKS", default=[])
if METRICS_TOKEN and len(METRICS_TOKEN) < 32:
    raise ImproperlyConfigured("METRICS_TOKEN must be at least 32 characters (a random string)")
for _network in METRICS_ALLOWED_NETWORKS:
    try:
        ipaddress.ip_network(_network)  # strict: host bits set is a mistake, refused
    except ValueError:
        raise ImproperlyConfigured(f"METRICS_ALLOWED_NETWORKS: {_network!r} is not a CIDR network") from None

# SQLite (the embedded default) cannot make NULLs equal in a unique constraint; PostgreSQL,
# where money is handled in production, does.
SILENCED_SYSTEM_CHECKS = ["models.W047", *_DEPLOY_CHECKS_SILENCED]
