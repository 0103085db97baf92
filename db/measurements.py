"""Measurements of an exam: a file's site results added without ever overwriting one; a second
file's different value kept as a conflict for QA (`monitor.assembly.bmd_agree` says what differs).
Nothing here commits."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from sqlalchemy import Table, insert, select, text
from sqlalchemy.orm import Session

from db.converters import measurement_provenance, measurement_row, measurement_values
from db.models import Exam, Measurement, MeasurementConflict, utcnow
from db.patients import lock_patient
from db.transaction_cache import transaction_cache
from ingest.report import SiteMeasurement
from monitor.assembly import bmd_agree


def as_site(row: Measurement) -> SiteMeasurement:
    at = row.provenance.get("bmd", {}).get("at", "") if isinstance(row.provenance, dict) else ""
    return SiteMeasurement(
        site=row.site,
        side=row.side,
        bmd=row.bmd,
        t_score=row.t_score,
        z_score=row.z_score,
        bmc_g=row.bmc_g,
        area_cm2=row.area_cm2,
        provenance=str(at),
    )


@dataclass(slots=True)
class NewMeasurement:
    """A new measurement row written by an executemany INSERT (`merge_measurements(bulk=True)`),
    as plain values with `Measurement`'s column names: an ORM object per row (built, then read
    back column by column for the INSERT) cost more than the row's share of the statement."""

    exam_id: int
    site: str
    side: str | None
    bmd: float
    bmc_g: float | None
    area_cm2: float | None
    t_score: float | None
    z_score: float | None
    provenance: dict[str, Any]
    source_file_id: int | None
    id: None = None  # not written yet


Row = Measurement | NewMeasurement


@dataclass
class MeasurementMerge:
    """What adding one file's measurements to an exam did."""

    added: list[Row] = field(default_factory=list)
    confirmed: list[Row] = field(default_factory=list)
    conflicts: list[MeasurementConflict] = field(default_factory=list)


def record_conflict(
    session: Session, kept: Measurement, value: SiteMeasurement, source_file_id: int | None
) -> MeasurementConflict:
    if source_file_id is not None:
        already = session.scalars(
            select(MeasurementConflict).where(
                MeasurementConflict.measurement_id == kept.id,
                MeasurementConflict.source_file_id == source_file_id,
            )
        ).one_or_none()
        if already is not None:
            return already
    conflict = MeasurementConflict(
        measurement_id=kept.id,
        exam_id=kept.exam_id,
        source_file_id=source_file_id,
        site=kept.site,
        side=kept.side,
        accepted_bmd=kept.bmd,
        conflicting_bmd=value.bmd,
        conflicting_t_score=value.t_score,
        conflicting_z_score=value.z_score,
        provenance=value.provenance or None,
        state="open",
    )
    session.add(conflict)
    return conflict


def add_measurements(
    session: Session,
    exam: Exam,
    measurements: Iterable[SiteMeasurement],
    *,
    source_file_id: int | None = None,
) -> MeasurementMerge:
    """Add a file's site results to an exam without ever overwriting one.

    A new site and side is added. The same BMD from another file (within `BMD_AGREEMENT_G_CM2`)
    confirms the row and may fill its empty T/Z/BMC/area. A different BMD is recorded as a
    `MeasurementConflict` for QA and the accepted value stays. Running the same file again changes
    nothing.
    """
    result = merge_measurements(session, exam, measurements, source_file_id=source_file_id)
    session.flush()
    return result


def merge_measurements(
    session: Session,
    exam: Exam,
    measurements: Iterable[SiteMeasurement],
    *,
    source_file_id: int | None,
    vendor: Mapping[tuple[str, str | None], dict[str, Any]] | None = None,
    bulk: bool = False,
    defer: bool = False,
) -> MeasurementMerge:
    """`add_measurements` without the final flush; `vendor` (`vendor_provenance`) goes into new
    rows' provenance before they are written (no second UPDATE of each row), and fills what a kept
    row lacks. With `bulk`, the new rows are written at once by one executemany INSERT (issue 13:
    through the unit of work each row cost an INSERT … RETURNING of its own); they are then not
    objects of the session (`added` holds them unsaved) and the exam's rows load again when read.

    With `defer` too, the new rows wait for `flush_measurements`, which writes a batch's in one
    INSERT; until then a file merged into the same exam meets them here (held per exam), and
    nothing else of the transaction may read the exam's rows (the caller flushes first)."""
    lock_patient(session, exam.patient_id)
    result = MeasurementMerge()
    values = list(measurements)
    keys = [(value.site, value.side) for value in values]
    # A file naming a site twice may disagree with itself: that conflict needs the first row's id.
    bulk = bulk and len(set(keys)) == len(keys)
    if defer and not bulk:
        flush_measurements(session)  # the rows of the unit of work must see the held ones
    defer = defer and bulk
    pending = _pending(session)
    held = pending.exams.setdefault(exam.id, (exam, {}))[1] if defer else {}
    current: dict[tuple[str, str | None], Row] = {(m.site, m.side): m for m in exam.measurements}
    current.update(held)
    for key, value in zip(keys, values, strict=True):
        kept = current.get(key)
        if kept is None:
            row: Row = (
                _new_row(value, exam.id, source_file_id)
                if bulk
                else measurement_row(value, exam_id=exam.id, source_file_id=source_file_id)
            )
            extra = (vendor or {}).get(key)
            if extra:
                row.provenance = {**(row.provenance or {}), **extra}
            if isinstance(row, Measurement):
                exam.measurements.append(row)
            elif defer:
                held[key] = row
                pending.rows.append(row)
            current[key] = row
            result.added.append(row)
        elif bmd_agree(kept.bmd, value.bmd):
            _fill_gaps(kept, value, source_file_id)
            missing = {k: v for k, v in (vendor or {}).get(key, {}).items() if k not in (kept.provenance or {})}
            if missing:
                kept.provenance = {**(kept.provenance or {}), **missing}
            result.confirmed.append(kept)
        else:  # another file, or another report of the same file: QA sees both values
            if kept.id is None and held.get(key) is kept:  # held back: written now, read back with ids
                flush_measurements(session)
                current = {(m.site, m.side): m for m in exam.measurements}  # this call's new rows too
                held = pending.exams.setdefault(exam.id, (exam, {}))[1]
                kept = current[key]
            elif kept.id is None:
                session.flush()  # the kept row needs its id
            assert isinstance(kept, Measurement)  # a row of this call is never kept: `bulk` wants keys once
            result.conflicts.append(record_conflict(session, kept, value, source_file_id))
    if bulk and not defer and result.added:
        _insert(session, result.added)
        session.expire(exam, ["measurements"])
    return result


@dataclass
class _Held:
    """The new rows `merge_measurements(defer=True)` held back in this transaction: in the order
    they came (written so: the ids come as the files one by one would give them), and by exam."""

    rows: list[Row] = field(default_factory=list)
    exams: dict[int, tuple[Exam, dict[tuple[str, str | None], Row]]] = field(default_factory=dict)


def _pending(session: Session) -> _Held:
    cache = transaction_cache(session, _PENDING)
    held: _Held | None = cache.get("held")
    if held is None:
        held = cache["held"] = _Held()
    return held


_PENDING = "dxa_pending_measurements"


def flush_measurements(session: Session) -> None:
    """The rows `merge_measurements(defer=True)` held back written, in one executemany INSERT; their
    exams' rows load again when read."""
    held = _pending(session)
    if held.rows:
        session.flush()  # their exams first, when the batch's new exams wait too (`db.exams.deferred_exams`)
        _insert(session, held.rows)
    for exam, _ in held.exams.values():
        session.expire(exam, ["measurements"])
    held.rows.clear()
    held.exams.clear()


def _values(row: Row) -> dict[str, Any]:
    return {name: getattr(row, name) for name in _COLUMNS}


# PostgreSQL: a batch's new rows as one INSERT of arrays, a column each, in the rows' order (their ids
# come in that order, as from an executemany).
_UNNEST = text(
    """
    INSERT INTO measurements
        (exam_id, site, side, bmd, bmc_g, area_cm2, t_score, z_score, provenance, source_file_id, created_at)
    SELECT u.exam_id, u.site, u.side, u.bmd, u.bmc_g, u.area_cm2, u.t_score, u.z_score,
           CAST(u.provenance AS json), u.source_file_id, CAST(:created_at AS timestamptz)
    FROM unnest(
        CAST(:exam_id AS integer[]), CAST(:site AS text[]), CAST(:side AS text[]), CAST(:bmd AS float8[]),
        CAST(:bmc_g AS float8[]), CAST(:area_cm2 AS float8[]), CAST(:t_score AS float8[]),
        CAST(:z_score AS float8[]), CAST(:provenance AS text[]), CAST(:source_file_id AS integer[])
    ) AS u(exam_id, site, side, bmd, bmc_g, area_cm2, t_score, z_score, provenance, source_file_id)
    """
)
_FLOATS = ("bmd", "bmc_g", "area_cm2", "t_score", "z_score")


def _insert(session: Session, rows: Sequence[Row]) -> None:
    """New measurement rows written by one statement. PostgreSQL: one INSERT of a column array each
    (`_UNNEST`): an executemany sent a statement per row (pipelined), each parsed, planned and run by
    the server, and each row's parameters dumped one by one here (a Celery pool process's store,
    bench/pipeline.py --profile). Elsewhere an executemany."""
    if session.get_bind().dialect.name != "postgresql":
        session.execute(insert(_TABLE), [_values(row) for row in rows])
        return
    params: dict[str, Any] = {
        "exam_id": [int(row.exam_id) for row in rows],
        "site": [str(row.site) for row in rows],
        "side": [None if row.side is None else str(row.side) for row in rows],
        "provenance": [json.dumps(row.provenance) for row in rows],
        "source_file_id": [None if row.source_file_id is None else int(row.source_file_id) for row in rows],
        "created_at": utcnow(),
    }
    for name in _FLOATS:
        params[name] = [None if (v := getattr(row, name)) is None else float(v) for row in rows]
    session.execute(_UNNEST, params)


def _new_row(site: SiteMeasurement, exam_id: int, source_file_id: int | None) -> NewMeasurement:
    """`db.converters.measurement_row`'s values, without the ORM object."""
    return NewMeasurement(**measurement_values(site, exam_id=exam_id, source_file_id=source_file_id))


_TABLE = cast(Table, Measurement.__table__)
_COLUMNS = [column.key for column in _TABLE.c if column.key not in ("id", "created_at")]
_UNNESTED = ["exam_id", "site", "side", "bmd", "bmc_g", "area_cm2", "t_score", "z_score", "provenance"]
_UNNESTED.append("source_file_id")
if _UNNESTED != _COLUMNS:
    raise RuntimeError("measurements' columns changed: update `_UNNEST` and `_insert`")


def _fill_gaps(kept: Row, value: SiteMeasurement, source_file_id: int | None) -> None:
    origin = measurement_provenance(value, source_file_id)
    provenance = dict(kept.provenance or {})
    for name in ("t_score", "z_score", "bmc_g", "area_cm2"):
        if getattr(kept, name) is None and getattr(value, name) is not None:
            setattr(kept, name, getattr(value, name))
            provenance[name] = origin[name]
    if provenance != kept.provenance:
        kept.provenance = provenance


def list_conflicts(
    session: Session, *, state: str | None = "open", exam_id: int | None = None
) -> list[MeasurementConflict]:
    stmt = select(MeasurementConflict).order_by(MeasurementConflict.id)
    if state is not None:
        stmt = stmt.where(MeasurementConflict.state == state)
    if exam_id is not None:
        stmt = stmt.where(MeasurementConflict.exam_id == exam_id)
    return list(session.scalars(stmt))
