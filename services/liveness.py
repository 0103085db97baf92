"""A running job's heartbeat: while a worker runs a job, a thread refreshes the job's `updated_at`
every `db.operations.HEARTBEAT_S`. A job whose heartbeat stopped for `STALE_AFTER` is taken over
by the sweeper, whichever host its worker was on (a worker killed with its host, cut off by the
network, or whose message was lost with Redis); without a heartbeat only a dead process of the
sweeper's own host could be recognised, and other hosts' jobs waited for a time limit of minutes.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from sqlalchemy.orm import Session, sessionmaker

from db.jobs import touch_running
from db.operations import HEARTBEAT_S

log = logging.getLogger(__name__)


@contextmanager
def heartbeat(
    sessions: sessionmaker[Session], job_id: int | Sequence[int], worker: str, every_s: float = HEARTBEAT_S
) -> Iterator[None]:
    """Beat for one job, or for every job of a batch (one statement per beat)."""
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(every_s):
            try:
                with sessions.begin() as session:
                    if not touch_running(session, job_id, worker):
                        return  # finished, or taken over: nothing more to say
            except Exception as exc:  # the database restarting: try again next beat
                log.warning("heartbeat of job %s not recorded: %s", job_id, type(exc).__name__)

    first = job_id if isinstance(job_id, int) else (job_id[0] if job_id else 0)
    thread = threading.Thread(target=beat, name=f"heartbeat-{first}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)
