"""Reads for the verification queue page (`web.routes.qa_scans`): pending scans and one scan's
values with their marks."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.models import ScanCrop, ScanRow, SourceFile

_LABELS = {
    "patient_id": "Patient ID",
    "exam_date": "Exam date",
    "birth_date": "Birth date",
    "device_model": "Machine model",
    "device_serial": "Machine serial",
}
_COLUMNS = {"bmd": "BMD g/cm²", "t": "T-score", "z": "Z-score", "bmc": "BMC g", "area": "Area cm²"}


@dataclass(frozen=True)
class ScanSummary:
    pk: int
    file_name: str
    received_at: datetime
    format: str | None
    values: int
    doubtful: int
    problems: tuple[str, ...]


@dataclass(frozen=True)
class ValueView:
    key: str
    label: str
    text: str
    confidence: float
    doubtful: bool
    failed: tuple[str, ...]
    normalised: bool
    has_crop: bool


@dataclass(frozen=True)
class ScanDetail:
    pk: int
    status: str
    file_name: str
    format: str | None
    values: tuple[ValueView, ...]
    problems: tuple[str, ...]
    pages: tuple[str, ...]  # crop keys of the page images
    reason: str | None


def label_of(key: str) -> str:
    if key in _LABELS:
        return _LABELS[key]
    site, side, column = ([*key.split("/"), "", "", ""])[:3]
    where = site if side in ("-", "") else f"{site} ({side})"
    return f"{where}: {_COLUMNS.get(column, column)}"


def pending_scans(session: Session, limit: int = 200) -> list[ScanSummary]:
    rows = session.execute(
        select(ScanRow, SourceFile.original_name, SourceFile.received_at)
        .join(SourceFile, SourceFile.id == ScanRow.source_file_id)
        .where(ScanRow.status == "pending")
        .order_by(ScanRow.id)
        .limit(limit)
    ).all()
    out = []
    for scan, name, received in rows:
        values: list[dict[str, Any]] = scan.reading.get("values", [])
        out.append(
            ScanSummary(
                scan.id,
                name,
                received,
                scan.reading.get("format"),
                len(values),
                sum(1 for v in values if v.get("doubtful")),
                tuple(scan.problems or ()),
            )
        )
    return out


def scan_detail(session: Session, scan_pk: int) -> ScanDetail | None:
    scan = session.get(ScanRow, scan_pk)
    if scan is None:
        return None
    file = session.get(SourceFile, scan.source_file_id)
    keys = set(session.scalars(select(ScanCrop.key).where(ScanCrop.scan_id == scan.id)))
    values = tuple(
        ValueView(
            v["key"],
            label_of(v["key"]),
            v.get("text") or "",
            float(v.get("confidence") or 0.0),
            bool(v.get("doubtful")),
            tuple(v.get("failed") or ()),
            bool(v.get("normalised")),
            v["key"] in keys,
        )
        for v in scan.reading.get("values", [])
    )
    pages = tuple(sorted((k for k in keys if k.startswith("page")), key=lambda k: int(k[4:])))
    return ScanDetail(
        scan.id,
        scan.status,
        file.original_name if file else "",
        scan.reading.get("format"),
        values,
        tuple(scan.problems or ()),
        pages,
        scan.reason,
    )


def crop_png(session: Session, scan_pk: int, key: str) -> bytes | None:
    return session.scalar(select(ScanCrop.png).where(ScanCrop.scan_id == scan_pk, ScanCrop.key == key))
