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
from monitor.model import Phrase
from monitor.phrases import english


class ImportError_(ValueError):
    """A row that cannot be imported; the message names file, line and field. Raised with a
    `Phrase` (monitor.phrases), the page words it in the reader's language; the message is its
    English, as the command line prints it."""

    def __init__(self, message: str | Phrase) -> None:
        self.phrase = message if isinstance(message, Phrase) else None
        super().__init__(english(message) if isinstance(message, Phrase) else message)


def refusal(code: str, path: Source, row: Row | None = None, **args: str | int) -> ImportError_:
    where: dict[str, str | int] = {"file": str(path)}
    if row is not None:
        where["line"] = row.line
    return ImportError_(Phrase.of(code, **where, **args))


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
        raise refusal("csv_unreadable", path, error=str(exc)) from exc


def parse_rows(text: str, path: Source, required: tuple[str, ...]) -> Iterator[Row]:
    """The non-empty rows of CSV `text`, keys and values stripped, column names lower-cased."""
    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff")))
    header = [(h or "").strip().lower() for h in reader.fieldnames or []]
    missing = [c for c in required if c not in header]
    if missing:
        raise refusal("csv_missing_columns", path, columns=", ".join(missing))
    for number, raw in enumerate(reader, start=2):
        values = {(k or "").strip().lower(): (v or "").strip() for k, v in raw.items() if k is not None}
        if any(values.values()):
            yield Row(number, values)


def date_field(path: Source, row: Row, field: str, *, required: bool) -> date | None:
    text = row.values.get(field, "")
    if not text:
        if required:
            raise refusal("csv_field_empty", path, row, field=field)
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise refusal("csv_not_a_date", path, row, field=field, text=text) from None


def bmd_field(path: Source, row: Row, field: str) -> float:
    text = row.values.get(field, "")
    try:
        value = float(text.replace(",", "."))
    except ValueError:
        raise refusal("csv_not_a_number", path, row, field=field, text=text) from None
    if not math.isfinite(value) or value <= 0:
        raise refusal("csv_bmd_not_positive", path, row, field=field)
    return value


def site_of(text: str) -> str | None:
    """A site as the vocabulary names it ("L1-L4", "total_hip", …), from any spelling it knows."""
    return canonical_site(text.replace("_", " ")) or (text if text in ("femoral_neck", "total_hip") else None)


def site_field(path: Source, row: Row, field: str = "site") -> str:
    text = row.values.get(field, "")
    site = site_of(text)
    if site is None:
        raise refusal("csv_unknown_site", path, row, field=field, text=text)
    return site


def find_device(session: Session, path: Source, row: Row, field: str) -> Device:
    """A device by serial (and manufacturer/model columns when two makers share a serial)."""
    serial = row.values.get(field, "")
    if not serial:
        raise refusal("csv_field_empty", path, row, field=field)
    devices = list(session.scalars(select(Device).where(Device.serial == serial)))
    if not devices:
        devices = [d for d in session.scalars(select(Device)) if (d.serial or "").lower() == serial.lower()]
    if len(devices) > 1:
        model = row.values.get("model", "").lower()
        devices = [d for d in devices if model and d.model.lower() == model] or devices
    if not devices:
        raise refusal("csv_unknown_serial", path, row, field=field, text=serial)
    if len(devices) > 1:
        raise refusal("csv_ambiguous_serial", path, row, field=field, text=serial)
    return devices[0]
