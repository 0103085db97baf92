"""What every `dxa` command shares: the operator's error, the settings and context of the
process (`dxa.wiring`), and logging."""

from __future__ import annotations

import logging

from dxa import wiring
from services.context import Context, no_submit
from settings import Settings, load_settings

log = logging.getLogger("dxa")


class UserError(Exception):
    """A mistake the operator can fix (bad file, bad option); printed without a traceback."""


def settings_now() -> Settings:
    return load_settings()


def context(settings: Settings | None = None, *, dispatch: bool = True) -> Context:
    return wiring.context(settings or settings_now(), dispatch=dispatch)


def run_queued_evaluations(ctx: Context) -> int:
    """Embedded mode: run the evaluations a command queued now, so the command returns with its
    patients re-evaluated (in the scaled mode they were sent to the Celery workers)."""
    from services.backload import run_queued_evaluations as run_here

    if ctx.submit is not no_submit:
        return 0
    return run_here(ctx)


def configure_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
