"""Received files: registration by content hash, SOP Instance UID ownership, status changes.

A file is known by its SHA-256: the same bytes dropped again find the existing row (outcome
`duplicate`, `times_seen` goes up) and change nothing else. A DICOM SOP Instance UID belongs to
the first file that claims it; another file with the same UID but other bytes is quarantined as a
`uid_conflict` pointing at the owner, for QA to decide. Nothing here commits.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, cast

from sqlalchemy import Table, bindparam, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from db.converters import sanitise_name
from db.inserts import insert_unless_exists
from db.models import SourceFile, utcnow
from db.transaction_cache import transaction_cache

UID_CONFLICT = "uid_conflict"
UID_CONFLICT_TEXT = (
    "Another file with different contents already carries this DICOM instance UID. "
    "Check which of the two is the correct result before re-processing."
)


@dataclass(frozen=True)
class Registration:
    file: SourceFile
    outcome: Literal["new", "duplicate"]


def get_source_file(session: Session, sha256: str) -> SourceFile | None:
    return session.scalars(select(SourceFile).where(SourceFile.sha256 == sha256.lower())).one_or_none()


def register_source_file(
    session: Session,
    *,
    sha256: str,
    original_name: str,
    size_bytes: int | None = None,
    stored_path: str | None = None,
    now: datetime | None = None,
) -> Registration:
    """Record a claimed file, or recognise its bytes as already known (`duplicate`)."""
    moment = now or utcnow()
    values = _new_file(sha256, original_name, size_bytes, stored_path, moment)
    digest = values["sha256"]
    del values["updated_at"]
    row = insert_unless_exists(session, SourceFile, values, ["sha256"])
    if row is not None:
        return Registration(file=row, outcome="new")
    existing = session.scalars(
        update(SourceFile)
        .where(SourceFile.sha256 == digest)
        .values(times_seen=SourceFile.times_seen + 1, last_seen_at=moment)
        .returning(SourceFile)
        .execution_options(populate_existing=True)
    ).one()
    return Registration(file=existing, outcome="duplicate")


def register_new_source_files(
    session: Session, files: Sequence[tuple[str, str, int | None, str | None]], *, now: datetime | None = None
) -> dict[str, int]:
    """Record several claimed files (sha256, original name, size, stored path) in one INSERT …
    ON CONFLICT DO NOTHING: sha256 -> id of each file new to the database. Bytes already known are
    left out, for `register_source_file` to recognise one by one (`duplicate`)."""
    moment = now or utcnow()
    rows = [_new_file(*file, moment) for file in files]
    dialect = session.get_bind().dialect.name
    if not rows or dialect not in ("postgresql", "sqlite"):
        return {}
    if session.autoflush:
        session.flush()  # as session.execute would: pending rows first
    return {str(sha): int(pk) for sha, pk in session.connection().execute(_insert_new_files(dialect), rows)}


@functools.cache
def _insert_new_files(dialect: str) -> Any:
    """`register_new_source_files`' statement, built once and executed with the rows (one
    multi-row INSERT from the statement compiled once: `.values(rows)` was compiled per call)."""
    module = postgresql if dialect == "postgresql" else sqlite
    table = cast(Table, SourceFile.__table__)
    stmt = module.insert(table).on_conflict_do_nothing(index_elements=["sha256"])
    return stmt.returning(table.c.sha256, table.c.id)


def _new_file(
    sha256: str, original_name: str, size_bytes: int | None, stored_path: str | None, moment: datetime
) -> dict[str, Any]:
    """The row of a file seen for the first time; its hash checked, its name made safe to show."""
    digest = sha256.strip().lower()
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise ValueError("sha256 must be 64 hex digits")
    return {
        "sha256": digest,
        "original_name": sanitise_name(original_name),
        "size_bytes": size_bytes,
        "stored_path": stored_path,
        "status": "pending",
        "attempts": 0,
        "times_seen": 1,
        "received_at": moment,
        "last_seen_at": moment,
        "updated_at": moment,
    }


def claim_sop_instance_uid(session: Session, file: SourceFile, uid: str | None) -> SourceFile | None:
    """Give `uid` to `file`; returns None when it now owns it (or there is no UID). When another
    file already owns it, `file` is quarantined as a UID conflict and the owner is returned; the
    caller moves the bytes to `quarantine/uid_conflict/`."""
    uid = (uid or "").strip()
    if not uid or file.sop_instance_uid == uid:
        return None

    def owner() -> SourceFile | None:
        return session.scalars(
            select(SourceFile).where(SourceFile.sop_instance_uid == uid, SourceFile.id != file.id)
        ).one_or_none()

    holder = owner()
    if holder is None:
        try:
            with session.begin_nested():
                file.sop_instance_uid = uid
                session.flush()
            return None
        except IntegrityError:
            holder = owner()
            if holder is None:
                raise
    file.sop_instance_uid = None
    file.conflict_with_id = holder.id
    mark_quarantined(session, file, reason_code=UID_CONFLICT, reason_text=UID_CONFLICT_TEXT)
    return holder


def uid_holder(session: Session, file_id: int, uid: str | None) -> int | None:
    """The id of another file that owns `uid` already (None: free, or no UID)."""
    uid = (uid or "").strip()
    if not uid:
        return None
    return session.scalars(
        select(SourceFile.id).where(SourceFile.sop_instance_uid == uid, SourceFile.id != file_id)
    ).first()


def uid_owners(session: Session, uids: Sequence[str | None]) -> dict[str, int]:
    """UID -> the file owning it, for those of `uids` a file owns already (one query for a batch)."""
    wanted = sorted({u.strip() for u in uids if u and u.strip()})
    if not wanted:
        return {}
    rows = session.execute(
        select(SourceFile.sop_instance_uid, SourceFile.id).where(SourceFile.sop_instance_uid.in_(wanted))
    )
    return {str(uid): int(pk) for uid, pk in rows}


def start_processing(session: Session, file_id: int, *, parser_version: str | None = None) -> SourceFile | None:
    """`mark_processing` by id in one UPDATE … RETURNING: the row as it now is, None if it is gone."""
    values: dict[str, object] = {"status": "processing", "attempts": SourceFile.attempts + 1}
    if parser_version:
        values["parser_version"] = parser_version
    return session.scalars(
        update(SourceFile)
        .where(SourceFile.id == file_id)
        .values(**values)
        .returning(SourceFile)
        .execution_options(populate_existing=True)
    ).one_or_none()


def start_processing_many(
    session: Session, file_ids: Sequence[int], *, parser_version: str | None = None
) -> dict[int, SourceFile]:
    """`start_processing` for several files in one UPDATE … RETURNING: id -> the row as it now is
    (a file whose row is gone is missing)."""
    if not file_ids:
        return {}
    values: dict[str, object] = {"status": "processing", "attempts": SourceFile.attempts + 1}
    if parser_version:
        values["parser_version"] = parser_version
    rows = session.scalars(
        update(SourceFile)
        .where(SourceFile.id.in_(list(file_ids)))
        .values(**values)
        .returning(SourceFile)
        .execution_options(populate_existing=True)
    ).all()
    return {row.id: row for row in rows}


def finish_ingested(
    session: Session,
    file_id: int,
    *,
    stored_path: str,
    patient_id: int,
    exam_id: int,
    format: str,
    sop_instance_uid: str | None,
    parser_version: str | None = None,
    now: datetime | None = None,
    defer: bool = False,
) -> None:
    """An ingested file's row in one UPDATE: its place, its patient and exam, and its DICOM
    instance UID (the caller checked with `uid_holder` that no other file owns it; should another
    transaction take it meanwhile, the unique index fails this statement and the caller retries).

    `defer`: the UPDATE waits for `flush_finished`, which writes a batch's files in one executemany
    (a statement per file less); until then no query of this transaction sees the row's new values."""
    values: dict[str, object] = {
        "status": "ingested",
        "reason_code": None,
        "reason_text": None,
        "stored_path": stored_path,
        "patient_id": patient_id,
        "exam_id": exam_id,
        "format": format,
        "finished_at": now or utcnow(),
    }
    uid = (sop_instance_uid or "").strip()
    if uid:
        values["sop_instance_uid"] = uid
    if parser_version:
        values["parser_version"] = parser_version
    if defer:
        pending: dict[tuple[str, ...], list[dict[str, object]]] = transaction_cache(session, _FINISHED)
        pending.setdefault(tuple(values), []).append({"file_id": file_id, **values})
        return
    session.execute(
        update(SourceFile).where(SourceFile.id == file_id).values(**values).execution_options(synchronize_session=False)
    )


_FINISHED = "dxa_finished_files"
_SOURCE_FILES = cast(Table, SourceFile.__table__)
# A finished file's UPDATE by id, built once: the SET clause names the parameters' columns (and
# `updated_at`); through the ORM, each would cost a new statement and its cache key.
_FINISH = _SOURCE_FILES.update().where(_SOURCE_FILES.c.id == bindparam("file_id"))


def flush_finished(session: Session) -> None:
    """The deferred `finish_ingested` UPDATEs written, one executemany per set of columns (the
    rows with a UID, those without)."""
    pending: dict[tuple[str, ...], list[dict[str, object]]] = transaction_cache(session, _FINISHED)
    for rows in pending.values():
        session.connection().execute(_FINISH, rows)
    pending.clear()


def mark_processing(session: Session, file: SourceFile, *, parser_version: str | None = None) -> None:
    """Counts attempts, so a file that keeps killing its worker can be quarantined."""
    file.status = "processing"
    file.attempts += 1
    if parser_version:
        file.parser_version = parser_version
    session.flush()


def _finish(
    session: Session,
    file: SourceFile,
    status: str,
    reason_code: str | None,
    reason_text: str | None,
    stored_path: str | None,
    parser_version: str | None,
    now: datetime | None,
) -> None:
    """A file's final state: where it now lies, which parser decided, and when."""
    file.status = status
    file.reason_code = reason_code
    file.reason_text = reason_text
    if stored_path is not None:
        file.stored_path = stored_path
    if parser_version:
        file.parser_version = parser_version
    file.finished_at = now or utcnow()
    session.flush()


def mark_ingested(
    session: Session,
    file: SourceFile,
    *,
    stored_path: str | None = None,
    parser_version: str | None = None,
    now: datetime | None = None,
) -> None:
    _finish(session, file, "ingested", None, None, stored_path, parser_version, now)


def mark_quarantined(
    session: Session,
    file: SourceFile,
    *,
    reason_code: str,
    reason_text: str,
    stored_path: str | None = None,
    parser_version: str | None = None,
    now: datetime | None = None,
) -> None:
    """`reason_code` names the quarantine folder; `reason_text` is the technologist's sentence
    (no patient data: it is shown on the QA page and written to the sidecar)."""
    _finish(session, file, "quarantined", reason_code, reason_text, stored_path, parser_version, now)


def mark_duplicate(session: Session, file: SourceFile, *, reason_text: str, now: datetime | None = None) -> None:
    """For content recognised as already ingested under other bytes (the caller decides when)."""
    file.status = "duplicate"
    file.reason_code = "duplicate"
    file.reason_text = reason_text
    file.finished_at = now or utcnow()
    session.flush()


def reset_for_reprocess(session: Session, file: SourceFile) -> None:
    """A quarantined file goes back to `pending` after a fix (QA's re-process button)."""
    file.status = "pending"
    file.reason_code = None
    file.reason_text = None
    file.attempts = 0
    file.finished_at = None
    session.flush()


def list_source_files(
    session: Session, *, status: str | None = None, limit: int = 100, offset: int = 0
) -> list[SourceFile]:
    stmt = select(SourceFile).order_by(SourceFile.received_at.desc(), SourceFile.id.desc())
    if status is not None:
        stmt = stmt.where(SourceFile.status == status)
    return list(session.scalars(stmt.limit(limit).offset(offset)))
