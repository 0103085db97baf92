"""The monitoring configuration every process uses: the shipped `settings/monitoring.toml`,
overridden key by key by a site's own file (`DXA_MONITORING_CONFIG`).

One loader for the web app, the workers and the command line, so a page, a Celery task and
`dxa evaluate` judge a change against the same LSC and schedule the same next scan. A file that
cannot be read or is not a valid configuration stops the process: silently falling back to the
defaults would give patients another rule set than the one the site chose.
"""

from __future__ import annotations

import tomllib
from importlib import resources

from monitor.config import MonitoringConfig, merge
from settings import Settings


def load_monitoring_config(settings: Settings) -> MonitoringConfig:
    data = tomllib.loads(resources.files("settings").joinpath("monitoring.toml").read_text(encoding="utf-8"))
    if settings.monitoring_config is not None:
        override = tomllib.loads(settings.monitoring_config.read_text(encoding="utf-8"))
        data = merge(data, override)
    return MonitoringConfig.from_mapping(data)
