"""QA's re-processing of a quarantined file, once its cause is fixed (a new PDF layout, a parser
fix): the file goes back to `pending` and its ingest job is queued and sent at once; the job takes
the bytes back out of `quarantine/` when it runs.
"""

from __future__ import annotations

from db.files import reset_for_reprocess
from db.models import SourceFile
from services.audit import Actor, record
from services.context import Context
from services.queue import unit_of_work


def reprocess(ctx: Context, actor: Actor, source_file_id: int) -> bool:
    """Queue a quarantined file for ingestion again; False when there is no quarantined file."""
    with unit_of_work(ctx) as work:
        source = work.session.get(SourceFile, source_file_id)
        if source is None or source.status != "quarantined":
            return False
        reset_for_reprocess(work.session, source)
        work.queue_ingest(source_file_id)
        record(work.session, actor, "file_reprocess_requested", None, source_file=source_file_id)
    return True
