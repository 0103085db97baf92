"""Reading the CSV files of the imports (therapies, precision studies, cross-calibrations) the same
way from the command line and from a page.

Every file is read and checked whole before anything is written: a bad row raises `ImportError_`
naming the file (or the upload's label), the line and the field.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.models import Device
from ingest.vocabulary import canonical_site


class ImportError_(ValueError):
    """A row that cannot be imported; the message names file, line and field."""


# What error messages name: the file's path, or a label for text that came from elsewhere (an upload).
Source = str | Path


@dataclass(frozen=True)
class Row:
    line: int
    values: dict[str, str]


def read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ImportError_(f"{path}: cannot read the file ({exc})") from exc


def parse_rows(text: str, path: Source, required: tuple[str, ...]) -> Iterator[Row]:
    """The non-empty rows of CSV `text`, keys and values stripped, column names lower-cased."""
    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff")))
    header = [(h or "").strip().lower() for h in reader.fieldnames or []]
    missing = [c for c in required if c not in header]
    if missing:
        raise ImportError_(f"{path}: line 1: missing column(s) {', '.join(missing)}")
    for number, raw in enumerate(reader, start=2):
        values = {(k or "").strip().lower(): (v or "").strip() for k, v in raw.items() if k is not None}
        if any(values.values()):
            yield Row(number, values)


def date_field(path: Source, row: Row, field: str, *, required: bool) -> date | None:
    text = row.values.get(field, "")
    if not text:
        if required:
            raise ImportError_(f"{path}: line {row.line}: field {field} is empty")
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise ImportError_(f"{path}: line {row.line}: field {field}: {text!r} is not a date (YYYY-MM-DD)") from None


def bmd_field(path: Source, row: Row, field: str) -> float:
    text = row.values.get(field, "")
    try:
        value = float(text.replace(",", "."))
    except ValueError:
        raise ImportError_(f"{path}: line {row.line}: field {field}: {text!r} is not a number") from None
    if not math.isfinite(value) or value <= 0:
        raise ImportError_(f"{path}: line {row.line}: field {field}: BMD must be a positive number of g/cm²")
    return value


def site_of(text: str) -> str | None:
    """A site as the vocabulary names it ("L1-L4", "total_hip", …), from any spelling it knows."""
    return canonical_site(text.replace("_", " ")) or (text if text in ("femoral_neck", "total_hip") else None)


def site_field(path: Source, row: Row, field: str = "site") -> str:
    text = row.values.get(field, "")
    site = site_of(text)
    if site is None:
        raise ImportError_(f"{path}: line {row.line}: field {field}: {text!r} is not a known site")
    return site


def find_device(session: Session, path: Source, row: Row, field: str) -> Device:
    """A device by serial (and manufacturer/model columns when two makers share a serial)."""
    serial = row.values.get(field, "")
    if not serial:
        raise ImportError_(f"{path}: line {row.line}: field {field} is empty")
    devices = list(session.scalars(select(Device).where(Device.serial == serial)))
    if not devices:
        devices = [d for d in session.scalars(select(Device)) if (d.serial or "").lower() == serial.lower()]
    if len(devices) > 1:
        model = row.values.get("model", "").lower()
        devices = [d for d in devices if model and d.model.lower() == model] or devices
    if not devices:
        raise ImportError_(
            f"{path}: line {row.line}: field {field}: no machine with serial {serial!r} has sent a scan yet"
        )
    if len(devices) > 1:
        raise ImportError_(
            f"{path}: line {row.line}: field {field}: serial {serial!r} is ambiguous; add a model column"
        )
    return devices[0]
