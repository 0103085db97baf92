"""The host copies of files whose bytes live in the database (`DXA_FILE_STORE=database`).

With the bytes in PostgreSQL (`db.blobs`), a worker on any host parses a file and commits its
outcome without touching a folder; the file's row then says `stored_path = "database:<sha256>"`.
The watcher, the one process on the host that has the inbox, the archive and the quarantine
folders, writes each such file where people expect it (`archive/YYYY/MM/<sha256>.<ext>`, or
`quarantine/<reason>/<sha256>.<ext>` with its JSON sidecar), durably, then records that path.
The bytes stay in the database (content-addressed, so a re-drop adds nothing): a file re-processed
from quarantine is read from there by whichever worker takes it.

A crash between writing a copy and recording it leaves the row as it was: the next round writes
the same path again (same bytes, same name), so nothing is lost or doubled.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from sqlalchemy import select, update

from db.blobs import get_blob
from db.models import SourceFile, utcnow
from services.bytestore import IN_DATABASE
from services.context import Context
from services.files import archive_path, quarantine_code, safe_extension, write_sidecar
from services.ingestion import sidecar

log = logging.getLogger(__name__)

BATCH = 200
FINISHED = ("ingested", "quarantined", "duplicate")  # a re-encoded duplicate is archived too


def _write_durably(dest: Path, data: bytes) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".partial")
    with tmp.open("wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, dest)
    fd = os.open(dest.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove_quarantine_copies(ctx: Context, sha256: str) -> None:
    """A file ingested after re-processing: its old quarantine copy and reason are void."""
    folder = ctx.settings.quarantine_dir
    if folder.is_dir():
        for old in folder.glob(f"*/{sha256}*"):
            old.unlink(missing_ok=True)


def write_host_copies(ctx: Context, limit: int = BATCH) -> int:
    """Write the host copies of up to `limit` finished files whose bytes are only in the
    database; returns how many were written."""
    with ctx.sessions() as session:
        rows = list(
            session.scalars(
                select(SourceFile)
                .where(SourceFile.stored_path.like(f"{IN_DATABASE}%"), SourceFile.status.in_(FINISHED))
                .order_by(SourceFile.id)
                .limit(limit)
            )
        )
        session.expunge_all()
    written = 0
    for row in rows:
        with ctx.sessions() as session:
            data = get_blob(session, row.sha256)
        if data is None:
            log.error("file %s: its bytes are missing from the database", row.id)
            continue
        ext = safe_extension(row.original_name)
        if row.status != "quarantined":
            dest = archive_path(
                ctx.settings.archive_dir, row.sha256, row.original_name, (row.finished_at or utcnow()).date()
            )
            _remove_quarantine_copies(ctx, row.sha256)
            _write_durably(dest, data)
        else:
            dest = ctx.settings.quarantine_dir / quarantine_code(row.reason_code or "unknown") / f"{row.sha256}{ext}"
            side = sidecar(row, row.reason_code or "", row.reason_text or "")
            dest.parent.mkdir(parents=True, exist_ok=True)
            write_sidecar(dest, side)
            _write_durably(dest, data)
        with ctx.sessions.begin() as session:
            session.execute(
                update(SourceFile)
                .where(
                    SourceFile.id == row.id, SourceFile.stored_path == row.stored_path, SourceFile.status == row.status
                )
                .values(stored_path=str(dest))
                .execution_options(synchronize_session=False)
            )
        written += 1
    return written
