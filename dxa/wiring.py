"""The composition root's wiring: the one place that knows both deployments.

A process builds one `services.context.Context` here. In the scaled mode (`DXA_BROKER_URL` set)
its `submit` is `workers.tasks.submit`, so a job queued anywhere (a page, a command, a worker)
is sent to Celery at once; embedded, the runner threads poll the job table. The web app is built
over the same context. Nothing imports this package: it imports everything else.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from db.migrate import is_up_to_date, upgrade
from services.context import Context, Submit, SubmitBatch, build_context
from settings import Settings, load_settings

BrokerDepth = Callable[[], int | None]


def dispatcher(settings: Settings) -> Submit | None:
    """How jobs reach a worker: Celery in the scaled mode, None (the job table) embedded."""
    if settings.embedded:
        return None
    from workers.tasks import submit

    return submit


def batch_dispatcher(settings: Settings) -> SubmitBatch | None:
    """How a transaction's jobs reach the workers together: Celery tasks carrying chunks of ids."""
    if settings.embedded:
        return None
    from workers.tasks import submit_batch

    return submit_batch


def context(settings: Settings | None = None, *, dispatch: bool = True) -> Context:
    """A context on an up-to-date schema (SQLite is created on first use; PostgreSQL deployments
    run `dxa migrate` once, but an out-of-date schema is upgraded here too). `dispatch=False`:
    this process runs its jobs itself (`dxa ingest`), nothing is sent to Celery."""
    settings = settings or load_settings()
    ctx = build_context(
        settings,
        submit=dispatcher(settings) if dispatch else None,
        submit_batch=batch_dispatcher(settings) if dispatch else None,
    )
    if not is_up_to_date(ctx.engine):
        upgrade(ctx.engine)
    return ctx


def broker_depth(settings: Settings) -> BrokerDepth | None:
    """How many messages wait in the broker (scaled mode), for `dxa status` and the operations
    page; None embedded, where the job table is the whole queue."""
    if settings.embedded:
        return None
    from workers.tasks import broker_depth as depth

    return depth


def make_app(ctx: Context) -> Any:
    from web.app import create_app

    return create_app(ctx, broker_depth=broker_depth(ctx.settings))
