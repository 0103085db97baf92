"""The QA ingest page's reads: quarantined files grouped by reason, stray files apart, duplicates.

A department drops whatever lands in the shared folder: 8 real rejects must not hide among 100
stray PDFs of other kinds. So the page counts the quarantine per reason, lists the real rejects
first with filters and paging, and keeps files that are not DXA results at all (not DICOM or
PDF, or a DICOM/PDF of something else) in their own group. Same-named files are told apart by
their received time and the first characters of their SHA-256.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from sqlalchemy import ColumnElement, func, or_, select
from sqlalchemy.orm import Session

from db.models import SourceFile
from web.i18n import N_

PAGE_SIZE = 50
STRAY_REASONS = ("unrecognised_format", "not_dxa_result")  # not a DXA result at all
REASON_TITLES = {
    "unrecognised_format": N_("Not a DICOM file or PDF"),
    "not_dxa_result": N_("DICOM or PDF, but not a DXA result"),
    "empty_file": N_("Empty file"),
    "unreadable": N_("Unreadable file"),
    "encrypted_pdf": N_("Encrypted PDF"),
    "unsupported_layout": N_("Report layout not supported"),
    "malformed_results": N_("Results could not be read"),
    "missing_field": N_("A required field is missing"),
    "too_large": N_("Too large"),
    "patient_mismatch": N_("Pages name different patients"),
    "parse_error": N_("Parser error"),
    "uid_conflict": N_("DICOM instance UID used by another file"),
    "implausible_values": N_("Values that cannot be true"),
    "worker_crash": N_("The parser crashed"),
    "timeout": N_("Parsing took too long"),
    "memory": N_("Parsing ran out of memory"),
    "not_a_regular_file": N_("Not a regular file (link, pipe, socket)"),
}


@dataclass(frozen=True)
class ReasonCount:
    code: str
    count: int
    stray: bool

    @property
    def title(self) -> str:
        return REASON_TITLES.get(self.code, self.code.replace("_", " "))


@dataclass(frozen=True)
class QuarantinedFile:
    pk: int
    name: str
    sha256: str
    received_at: datetime
    format: str | None
    reason_code: str | None
    reason_text: str | None
    attempts: int
    times_seen: int

    @property
    def sha_prefix(self) -> str:
        return self.sha256[:12]


@dataclass(frozen=True)
class FileFilter:
    reason: str | None  # a reason code, "stray", or None for the real rejects
    name: str
    start: date | None
    end: date | None
    page: int


def reason_counts(session: Session) -> list[ReasonCount]:
    rows = session.execute(
        select(SourceFile.reason_code, func.count())
        .where(SourceFile.status == "quarantined")
        .group_by(SourceFile.reason_code)
    ).all()
    counts = [ReasonCount(code or "unknown", n, (code or "") in STRAY_REASONS) for code, n in rows]
    return sorted(counts, key=lambda c: (c.stray, -c.count, c.code))


def _conditions(f: FileFilter) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = [SourceFile.status == "quarantined"]
    if f.reason == "stray":
        conditions.append(SourceFile.reason_code.in_(STRAY_REASONS))
    elif f.reason:
        conditions.append(SourceFile.reason_code == f.reason)
    else:
        conditions.append(or_(SourceFile.reason_code.is_(None), SourceFile.reason_code.not_in(STRAY_REASONS)))
    if f.name.strip():
        conditions.append(func.lower(SourceFile.original_name).like(f"%{f.name.strip().lower()}%"))
    if f.start is not None:
        conditions.append(SourceFile.received_at >= _day_start(f.start))
    if f.end is not None:
        conditions.append(SourceFile.received_at < _day_start(f.end + timedelta(days=1)))
    return conditions


def _day_start(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=UTC)


def quarantined(session: Session, f: FileFilter, page_size: int = PAGE_SIZE) -> tuple[list[QuarantinedFile], int]:
    """One page of quarantined files matching the filter (newest first), and how many match."""
    conditions = _conditions(f)
    total = session.scalar(select(func.count()).select_from(SourceFile).where(*conditions)) or 0
    rows = session.execute(
        select(
            SourceFile.id,
            SourceFile.original_name,
            SourceFile.sha256,
            SourceFile.received_at,
            SourceFile.format,
            SourceFile.reason_code,
            SourceFile.reason_text,
            SourceFile.attempts,
            SourceFile.times_seen,
        )
        .where(*conditions)
        .order_by(SourceFile.received_at.desc(), SourceFile.id.desc())
        .limit(page_size)
        .offset((max(f.page, 1) - 1) * page_size)
    ).all()
    return [QuarantinedFile(*row) for row in rows], total


@dataclass(frozen=True)
class DuplicateFile:
    pk: int
    name: str
    sha256: str
    status: str
    times_received: int
    first_received: datetime
    last_received: datetime
    note: str | None

    @property
    def sha_prefix(self) -> str:
        return self.sha256[:12]


def duplicates(session: Session, limit: int = 200) -> tuple[list[DuplicateFile], int]:
    """Files received more than once (same bytes), and files kept as duplicates of an exam
    already stored, with how often each arrived; most recent arrival first."""
    condition = or_(SourceFile.times_seen > 1, SourceFile.status == "duplicate")
    total = session.scalar(select(func.count()).select_from(SourceFile).where(condition)) or 0
    rows = session.execute(
        select(
            SourceFile.id,
            SourceFile.original_name,
            SourceFile.sha256,
            SourceFile.status,
            SourceFile.times_seen,
            SourceFile.received_at,
            SourceFile.last_seen_at,
            SourceFile.reason_text,
        )
        .where(condition)
        .order_by(SourceFile.last_seen_at.desc(), SourceFile.id.desc())
        .limit(limit)
    ).all()
    return [DuplicateFile(*row) for row in rows], total
