# The production image: docker-compose.yml's migrate, web (gunicorn), worker and beat services.
# Python packages come from requirements.lock (every package pinned and hash-checked), Debian
# packages from debian-packages.txt: role "runtime" in the image, "build" in the build stage
# only. tests/portal/test_deploy_files.py checks this file against the repository.

# Debian bookworm: the release whose package names debian-packages.txt lists.
FROM python:3.11-slim-bookworm AS runtime
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:$PATH
COPY debian-packages.txt /tmp/debian-packages.txt
RUN apt-get update \
    && awk '$1 ~ /^[a-z0-9]/ && $2 == "runtime" {print $1}' /tmp/debian-packages.txt \
        | xargs apt-get install -y --no-install-recommends \
    && rm -rf /var/lib/apt/lists/*

# Build stage: the venv from the lock, translations compiled (*.mo files are not committed),
# static files collected (whitenoise's compressed manifest, as DEBUG=0 serves them).
FROM runtime AS build
RUN apt-get update \
    && awk '$1 ~ /^[a-z0-9]/ && $2 == "build" {print $1}' /tmp/debian-packages.txt \
        | xargs apt-get install -y --no-install-recommends \
    && rm -rf /var/lib/apt/lists/*
COPY requirements.lock /tmp/requirements.lock
RUN python -m venv /opt/venv \
    && pip install --require-hashes -r /tmp/requirements.lock
WORKDIR /app
COPY . .
RUN DEBUG=0 SECRET_KEY=image-build-only python manage.py compilemessages -v0 \
    && DEBUG=0 SECRET_KEY=image-build-only python manage.py collectstatic --noinput -v0

# The image: runtime libraries, the venv and the application, run as an unprivileged user.
# The code is root's and read-only to that user; it writes only to /tmp (gunicorn's worker
# heartbeats, PROMETHEUS_MULTIPROC_DIR) and its home (library caches).
FROM runtime
RUN useradd --system --create-home --home-dir /home/tokenbill --shell /usr/sbin/nologin tokenbill
COPY --from=build /opt/venv /opt/venv
COPY --from=build /app /app
WORKDIR /app
USER tokenbill
EXPOSE 8000
CMD ["gunicorn", "portal.wsgi:application", "-c", "gunicorn.conf.py"]
