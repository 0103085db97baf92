"""What every use case is given: settings, database, monitoring configuration, and how a queued
job reaches whatever runs jobs. Built once per process by the composition root (`dxa`), or by a
Celery worker process for itself (and its engine renewed after a fork).

`submit` is the one difference between the two deployments. Embedded (`dxa serve`): nothing to
do, the runner threads poll the job table. Scaled: the composition root passes
`workers.tasks.submit`, which sends the job id to Celery at once, from a page, a command or a
worker alike (docs/architecture.md, "How does a job reach a worker?").
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from db.engine import make_engine, session_factory
from monitor.config import MonitoringConfig
from settings import Settings, load_settings
from settings.monitoring import load_monitoring_config

# (job_id, kind) -> hand a committed job to whatever runs jobs.
Submit = Callable[[int, str], None]
# [(job_id, kind), …] -> hand a transaction's jobs over together (Celery: a task per chunk).
SubmitBatch = Callable[[Sequence[tuple[int, str]]], None]


def no_submit(job_id: int, kind: str) -> None:
    """Embedded mode: the job table itself is the queue."""


@dataclass
class Context:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    monitoring: MonitoringConfig
    submit: Submit = no_submit
    submit_batch: SubmitBatch | None = None  # None: each job through `submit`

    def submit_all(self, jobs: Sequence[tuple[int, str]]) -> None:
        """Hand over the jobs one transaction queued: together when the deployment can."""
        if self.submit_batch is not None and len(jobs) > 1:
            self.submit_batch(jobs)
            return
        for job_id, kind in jobs:
            self.submit(job_id, kind)


def build_context(
    settings: Settings | None = None,
    submit: Submit | None = None,
    submit_batch: SubmitBatch | None = None,
    ping_idle_after_s: float | None = None,
) -> Context:
    """`ping_idle_after_s`: see `db.engine.make_engine` (a PostgreSQL connection pinged on checkout
    only after sitting idle that long, not on every checkout)."""
    settings = settings or load_settings()
    engine = make_engine(settings.db_url, ping_idle_after_s=ping_idle_after_s)
    return Context(
        settings=settings,
        engine=engine,
        sessions=session_factory(engine),
        monitoring=load_monitoring_config(settings),
        submit=submit or no_submit,
        submit_batch=submit_batch,
    )
