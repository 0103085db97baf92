"""What every process of the service shares: settings, database, monitoring configuration,
and how a queued job reaches a worker. Built once per process (and again after a fork)."""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from db.engine import dispose_after_fork, make_engine, session_factory
from dxa.settings import Settings, load_settings
from monitor.config import MonitoringConfig, merge

# (job_id, kind) -> hand the job to whatever runs jobs. Embedded: nothing to do (the runner
# polls the job table). Scaled: send the id to Celery.
Submit = Callable[[int, str], None]


def no_submit(job_id: int, kind: str) -> None:
    """Embedded mode: the job table itself is the queue."""


@dataclass
class Context:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    monitoring: MonitoringConfig
    submit: Submit = no_submit


def load_monitoring_config(settings: Settings) -> MonitoringConfig:
    """The shipped defaults (dxa/monitoring.toml), overridden key by key by a site's own file."""
    data = tomllib.loads(resources.files("dxa").joinpath("monitoring.toml").read_text(encoding="utf-8"))
    if settings.monitoring_config is not None:
        override = tomllib.loads(settings.monitoring_config.read_text(encoding="utf-8"))
        data = merge(data, override)
    return MonitoringConfig.from_mapping(data)


def build_context(settings: Settings | None = None, submit: Submit | None = None) -> Context:
    settings = settings or load_settings()
    engine = make_engine(settings.db_url)
    return Context(
        settings=settings,
        engine=engine,
        sessions=session_factory(engine),
        monitoring=load_monitoring_config(settings),
        submit=submit or no_submit,
    )


_current: Context | None = None


def current(submit: Submit | None = None) -> Context:
    """The process-wide context (Celery tasks have no other place to keep it)."""
    global _current
    if _current is None:
        _current = build_context(submit=submit)
    return _current


def reset_after_fork() -> None:
    if _current is not None:
        dispose_after_fork(_current.engine)
