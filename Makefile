# Two commands matter: `make run` (try the portal) and `make test` (the whole suite).
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
PY := $(BIN)/python

# Embedded default: SQLite next to manage.py, no Redis; Celery on a file queue (.celery/).
RUN_ENV := DEBUG=1 DATABASE_URL=sqlite:///$(CURDIR)/db.sqlite3 REDIS_URL= LOG_FORMAT=console \
	EMAIL_BACKEND=django.core.mail.backends.console.EmailBackend
# Tests: real PostgreSQL and Redis on loopback; pytest-django creates its own test databases.
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/tokenbill
TEST_REDIS_URL ?= redis://127.0.0.1:6379/15
TEST_ENV := DEBUG=0 SECRET_KEY=test-only-secret ALLOWED_HOSTS=testserver,127.0.0.1,localhost \
	DATABASE_URL=$(TEST_DATABASE_URL) REDIS_URL=$(TEST_REDIS_URL) TOKENBILL_REQUIRE_POSTGRES=1 \
	LOG_LEVEL=WARNING
PYTEST_ARGS ?=
# The soak empties its own Redis database (never the suite's); --short for a 25 s run.
SOAK_ARGS ?= --redis-db 5

.PHONY: run test lint typecheck format migrate seed bench clean help messages pdf-deps system-deps lock

help:
	@echo "make run   - install, migrate, seed demo data, serve http://127.0.0.1:8000 (SQLite, no Redis)"
	@echo "make test  - install test tools, lint, run the whole suite on PostgreSQL and Redis"
	@echo "make lint  - ruff, ruff format --check, import-linter, mypy (make typecheck)"
	@echo "make lock  - regenerate requirements.lock and requirements-dev.lock (after editing requirements*.txt)"
	@echo "make bench - the benchmarks in bench/ (print figures; not tests) and a 10-minute soak"

$(PY):
	$(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# Installs come from the lock files only: every package pinned, every file hash-checked.
$(VENV)/.runtime-installed: requirements.lock | $(PY)
	$(PY) -m pip install --quiet --disable-pip-version-check --require-hashes -r requirements.lock
	touch $@

$(VENV)/.dev-installed: requirements.lock requirements-dev.lock | $(PY)
	$(PY) -m pip install --quiet --disable-pip-version-check --require-hashes -r requirements-dev.lock
	touch $@ $(VENV)/.runtime-installed

# Lock files (README, "Upgrading dependencies"): requirements.txt / requirements-dev.txt hold
# the top-level pins; pip-compile (pip-tools) resolves them into requirements.lock and
# requirements-dev.lock (runtime + dev, the runtime versions held to requirements.lock), with
# the hashes of every file PyPI serves for each version (any platform: x86_64 and aarch64
# wheels alike). pip-tools lives in its own venv, outside the locks (it brings pip, setuptools
# and build); it reads PyPI alone, never this machine's pip.conf or local wheel folders.
# Existing pins are kept unless an input needs another version; LOCK_ARGS=--upgrade refreshes
# every transitive pin, LOCK_ARGS="--upgrade-package NAME" one of them.
LOCK_VENV := .venv-lock
LOCK_TOOLS := pip==26.3 pip-tools==7.7.0
LOCK_INDEX := https://pypi.org/simple
LOCK_ENV := env -u PIP_FIND_LINKS -u PIP_INDEX_URL -u PIP_EXTRA_INDEX_URL -u PIP_CONSTRAINT \
	PIP_CONFIG_FILE=/dev/null CUSTOM_COMPILE_COMMAND="make lock"
LOCK_ARGS ?=
PIP_COMPILE = $(LOCK_ENV) $(LOCK_VENV)/bin/pip-compile --quiet --generate-hashes --allow-unsafe \
	--strip-extras --no-emit-index-url --index-url $(LOCK_INDEX) $(LOCK_ARGS)

$(LOCK_VENV)/.tools-installed:
	$(PYTHON) -m venv $(LOCK_VENV) || python3 -m venv $(LOCK_VENV)
	$(LOCK_ENV) $(LOCK_VENV)/bin/python -m pip install --quiet --index-url $(LOCK_INDEX) $(LOCK_TOOLS)
	touch $@

lock: $(LOCK_VENV)/.tools-installed
	$(PIP_COMPILE) --output-file requirements.lock requirements.txt
	$(PIP_COMPILE) --constraint requirements.lock --output-file requirements-dev.lock requirements-dev.txt

# Debian packages: debian-packages.txt lists each with its role (runtime, build, test), for
# this Makefile and the Dockerfile alike. Missing ones are installed (non-interactive) when
# root; otherwise named. `make run` needs runtime + build, `make test` all three.
debian_packages = $(shell awk '$$1 ~ /^[a-z0-9]/ && $$2 ~ /^($(1))$$/ {print $$1}' debian-packages.txt)
define apt_install
@command -v dpkg >/dev/null || exit 0; missing=""; \
	for pkg in $(1); do dpkg -s $$pkg >/dev/null 2>&1 || missing="$$missing $$pkg"; done; \
	[ -z "$$missing" ] && exit 0; \
	if [ "$$(id -u)" = 0 ]; then apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	else echo "Install these Debian packages (debian-packages.txt):$$missing" >&2; exit 1; fi
endef

# Invoice PDFs: WeasyPrint needs pango and harfbuzz, Chinese text a CJK font (role runtime).
pdf-deps:
	$(call apt_install,$(call debian_packages,runtime))

SYSTEM_PACKAGES ?= $(call debian_packages,runtime|build|test)
system-deps:
	$(call apt_install,$(SYSTEM_PACKAGES))

# Translations: compilemessages needs GNU gettext's msgfmt (role build in debian-packages.txt).
messages: $(VENV)/.runtime-installed
	$(call apt_install,$(call debian_packages,build))
	$(RUN_ENV) $(PY) manage.py compilemessages --ignore=.venv --ignore=.venv-lock -v0

# A Celery worker with embedded beat runs beside the web server on kombu's filesystem queue
# (.celery/): rollups and alert sweeps happen on schedule with no Redis (docs/deploy.md).
run: SYSTEM_PACKAGES = $(call debian_packages,runtime|build)
run: $(VENV)/.runtime-installed system-deps messages pdf-deps
	$(RUN_ENV) $(PY) manage.py migrate --noinput -v0
	$(RUN_ENV) $(PY) manage.py seed_demo
	$(RUN_ENV) $(PY) manage.py rollup >/dev/null  # the dashboards read the rollup; beat keeps it fresh
	@mkdir -p .celery/queue
	@echo "Portal: http://127.0.0.1:8000/  API docs: http://127.0.0.1:8000/api/docs/  (Ctrl-C to stop)"
	@echo "Relay (OpenAI-compatible): base URL http://127.0.0.1:8000/v1 with the demo API key (docs/relay.md)"
# The portal and the relay are one ASGI application under uvicorn; a mock provider on 127.0.0.1:8089
# answers for the demo models (the Upstream row seed_demo made), so no provider account is needed.
	$(RUN_ENV) $(BIN)/celery -A portal worker --beat --pool=solo --loglevel=WARNING & worker=$$!; \
		$(RUN_ENV) $(PY) manage.py relay_mock_upstream --port 8089 & mock=$$!; \
		trap 'kill $$worker $$mock 2>/dev/null' EXIT INT TERM; \
		$(RUN_ENV) $(BIN)/uvicorn portal.asgi:application --host 127.0.0.1 --port 8000 --log-level warning --no-proxy-headers

lint: $(VENV)/.dev-installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(MAKE) --no-print-directory typecheck

# mypy with the Django and DRF plugins (config in pyproject.toml): strict for billing,
# metering, invoicing and alerts. The plugin imports the settings, hence TEST_ENV; nothing
# connects to a database.
# About 15 s cold on 2 cores, 2 s with .mypy_cache.
typecheck: $(VENV)/.dev-installed
	$(TEST_ENV) $(BIN)/mypy infra accounts api billing metering invoicing alerts relay portal

format: $(VENV)/.dev-installed
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

test: $(VENV)/.dev-installed lint system-deps messages pdf-deps
	$(TEST_ENV) DATABASE_URL=sqlite://:memory: $(PY) manage.py makemigrations --check --dry-run -v0
# Production settings (DEBUG=0, a long secret, a real host name) pass every deploy check.
	$(TEST_ENV) SECRET_KEY=ci-deploy-check-Zq7mW2xK9pR4tV8nB3cY6hJ1sF5gD0aLuE ALLOWED_HOSTS=billing.example.com \
		$(PY) manage.py check --deploy --fail-level WARNING
	$(TEST_ENV) $(PY) manage.py collectstatic --noinput -v0
	$(TEST_ENV) $(BIN)/pytest --create-db $(PYTEST_ARGS)

bench: $(VENV)/.dev-installed
	$(PY) bench/rating.py
	$(TEST_ENV) $(PY) bench/ingest.py
	$(TEST_ENV) $(PY) bench/authorize.py
	$(TEST_ENV) $(PY) bench/cluster.py
	$(TEST_ENV) $(PY) bench/rollup.py
	$(TEST_ENV) $(PY) bench/dashboard.py
	$(TEST_ENV) $(PY) bench/relay.py
	$(TEST_ENV) $(PY) bench/soak.py $(SOAK_ARGS)

clean:
	rm -rf $(VENV) $(LOCK_VENV) staticfiles db.sqlite3 .celery test-output
