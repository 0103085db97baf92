"""The Celery app of the scaled deployment (`DXA_BROKER_URL` set).

Celery only transports job ids: the job table is the truth. Hence late acks and prefetch 1
(a killed worker's job is redelivered, and claiming it in the database makes a second run a
no-op), time limits kept below Redis's visibility timeout (so a slow task is never handed to
a second worker while the first still runs), and results ignored. A periodic sweep re-sends
queued jobs whose message was lost (Redis restarted without persistence, say).
"""

from __future__ import annotations

from typing import Any

from celery import Celery
from celery.beat import PersistentScheduler
from celery.signals import worker_init, worker_process_init

from settings import Settings, load_settings
from workers.broker_transport import transport_for

VISIBILITY_TIMEOUT_S = 3600


def make_celery(settings: Settings) -> Celery:
    app = Celery("dxa", broker=settings.broker_url or "memory://", include=["workers.tasks"])
    hard_limit = int(settings.parse_timeout_s * 3 + 120)
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        task_time_limit=hard_limit,
        task_soft_time_limit=hard_limit - 30,
        broker_transport=transport_for(settings.broker_url),  # survives a Redis restart (workers.broker_transport)
        broker_transport_options={"visibility_timeout": VISIBILITY_TIMEOUT_S},
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        timezone="UTC",
        beat_schedule={
            "refresh-schedules-daily": {"task": "dxa.refresh_schedules", "schedule": 24 * 3600.0},
            "sweep-jobs": {"task": "dxa.sweep_jobs", "schedule": 30.0},
        },
    )
    assert hard_limit < VISIBILITY_TIMEOUT_S
    return app


app = make_celery(load_settings())


@worker_init.connect
def _warm_parsers_before_fork(**_: Any) -> None:
    """Load what the parsers load lazily once, in the worker's main process before it forks its
    pool: each pool process starts with it in shared memory, and the first chunk of a burst, which
    already meets the watcher's intake of the rest, does not pay for the imports as well (a few
    tenths of a second per pool process under load, bench/pipeline.py)."""
    from services.parsing import warm_parsers

    warm_parsers()


@worker_process_init.connect
def _fresh_engine_after_fork(**_: Any) -> None:
    """A forked pool process must not reuse the parent's database connections; its parser thread
    gets the interpreter lock back promptly (`services.stages.favour_parser_thread`)."""
    from services.stages import favour_parser_thread
    from workers.tasks import reset_after_fork

    reset_after_fork()
    favour_parser_thread()


class HeartbeatScheduler(PersistentScheduler):  # type: ignore[misc]
    """Beat's scheduler, touching a heartbeat file on every tick for `dxa health beat` (a beat
    that hangs or lost its broker stops ticking)."""

    def tick(self, *args: Any, **kwargs: Any) -> float:
        from workers.heartbeat import touch_heartbeat

        touch_heartbeat(load_settings(), "beat")
        interval: float = super().tick(*args, **kwargs)
        return min(interval, 30.0)
