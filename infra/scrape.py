"""Collectors computed when /metrics is scraped.

Apps add theirs in AppConfig.ready (in single-process mode they are also on
prometheus_client's default registry); portal.health's /metrics registers them beside the
workers' multiprocess files. Kept here, below every app, so the apps never import the portal.
"""

SCRAPE_COLLECTORS: list = []
