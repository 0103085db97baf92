"""A patient's history for the monitor, and the monitor's verdict stored back atomically.

`load_patient_history` gives everything `evaluate_patient` needs in monitor types (exam ids
are the string of the database id). `save_evaluation` replaces the patient's comparisons and
next scan in the caller's transaction, keeps alerts open while they are raised, and writes an
audit event for each refused comparison the first time it is refused, so re-running an
evaluation leaves the same rows.

Both work on a batch of patients too (`load_histories`, `save_evaluations`: the runners' batches,
the daily refresh's chunks), in a fixed number of statements for the batch; one patient is a
batch of one, so both paths save the same rows.
"""

from __future__ import annotations

import functools
import itertools
import json
import weakref
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, cast

from sqlalchemy import Connection, Dialect, Table, Text, bindparam, delete, exists, insert, select, update
from sqlalchemy import cast as sql_cast
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, selectinload

from db.calibration import PrecisionCalculator, load_cross_calibrations, load_site_lscs
from db.converters import (
    COMPARISON_COLUMNS,
    alerts_to_json,
    comparison_columns,
    comparison_to_domain,
    exam_id_str,
    exam_to_domain,
    measurement_from_columns,
    notes_to_json,
    provenance_printed,
)
from db.models import AlertRow, AuditEvent, ComparisonRow, Device, NextScanRow, Patient, utcnow
from db.models import Exam as ExamRow
from db.models import Measurement as MeasurementRow
from db.patients import lock_patients
from db.therapies import load_therapies_of
from db.vendor_lsc import load_vendor_lscs
from monitor.model import (
    Alert,
    Comparison,
    CrossCalibration,
    Exam,
    Machine,
    PatientEvaluation,
    Phrase,
    SiteLsc,
    Therapy,
    VendorLsc,
)
from monitor.phrases import to_data

REFUSED_COMPARISON = "comparison_refused"
_REJECTED = ("rejected_cross_machine", "rejected_unknown_machine")


@dataclass(frozen=True)
class PatientHistory:
    patient_id: int
    identifier: str
    birth_date: date | None
    sex: str | None
    exams: tuple[Exam, ...]
    therapies: tuple[Therapy, ...]
    lscs: tuple[SiteLsc, ...]
    cross_calibrations: tuple[CrossCalibration, ...]
    vendor_lscs: tuple[VendorLsc, ...] = ()


def exam_rows(session: Session, patient_id: int) -> list[ExamRow]:
    return list(
        session.scalars(
            select(ExamRow)
            .where(ExamRow.patient_id == patient_id)
            .options(selectinload(ExamRow.measurements))
            .order_by(ExamRow.exam_date, ExamRow.id)
        )
    )


def load_exams(session: Session, patient_id: int) -> tuple[Exam, ...]:
    return tuple(exam_to_domain(r) for r in exam_rows(session, patient_id))


MachineData = tuple[tuple[SiteLsc, ...], tuple[CrossCalibration, ...], tuple[VendorLsc, ...]]


def load_patient_history(
    session: Session, patient_id: int, *, precision_calculator: PrecisionCalculator | None = None
) -> PatientHistory:
    """Exams (oldest first), therapies, and the LSCs and cross-calibrations of the patient's
    machines: `load_histories` for one patient. LookupError when there is no such patient."""
    history = load_histories(session, [patient_id], precision_calculator=precision_calculator).get(patient_id)
    if history is None:
        raise LookupError("no such patient")
    return history


def load_histories(
    session: Session,
    patient_ids: Sequence[int],
    *,
    precision_calculator: PrecisionCalculator | None = None,
    patients: Sequence[Patient] | None = None,
) -> dict[int, PatientHistory]:
    """The history of each patient found (a batch of evaluations), in a handful of queries for
    the whole batch: the patients, their exams with their measurements (one query), their
    therapies, and the calibration data of all their machines, read once and given to each
    patient for its own machines only (what reading them per patient would give). Read as plain
    rows: building ORM objects cost more than the evaluation itself; and a measurement's
    provenance (JSON) is decoded only when it holds what the monitor reads from it (what the
    machine printed), which few do. `patients`: the patients' rows, read already (locked by
    the caller: `lock_patients`), so they are not read again."""
    ids = list(dict.fromkeys(patient_ids))
    if not ids:
        return {}
    people: list[Any]
    if patients is not None:
        wanted = set(ids)
        people = [p for p in patients if p.id in wanted]
        missing = wanted - {p.id for p in people}
        if missing:
            people += _patient_rows(session, sorted(missing))
    else:
        people = _patient_rows(session, ids)
    found = [p.id for p in people]
    rows = session.execute(_history_query(), {"ids": found}).all() if found else []
    machines: dict[int, Machine] = {}
    by_patient: dict[int, list[Exam]] = {i: [] for i in found}
    for exam_id, group in itertools.groupby(rows, key=lambda row: row[0]):
        own = list(group)
        first = own[0]
        machine = machines.get(first.device_id)
        if machine is None:
            machine = machines[first.device_id] = Machine(
                manufacturer=first.manufacturer, model=first.model, serial=first.serial
            )
        if first.site is None:  # an exam without measurements (the outer join's one row)
            own = []
        own.sort(key=lambda m: (m.site, m.side or ""))  # as `sorted_measurements`
        by_patient[first.patient_id].append(
            Exam(
                exam_id=exam_id_str(exam_id),
                date=first.exam_date,
                machine=machine,
                measurements=tuple(
                    measurement_from_columns(
                        m.site, m.side, m.bmd, m.t_score, m.z_score, m.area_cm2, provenance_printed(m.provenance)
                    )
                    for m in own
                ),
                scan_mode=first.scan_mode,
                analysis_protocol=first.analysis_protocol,
            )
        )
    therapies = load_therapies_of(session, found)
    calibration = _calibration_of(session, list(machines), precision_calculator)
    out: dict[int, PatientHistory] = {}
    for patient in people:
        history = tuple(by_patient[patient.id])
        lscs, cross_calibrations, vendor_lscs = calibration({e.machine for e in history})
        out[patient.id] = PatientHistory(
            patient_id=patient.id,
            identifier=patient.identifier,
            birth_date=patient.birth_date,
            sex=patient.sex,
            exams=history,
            therapies=therapies[patient.id],
            lscs=lscs,
            cross_calibrations=cross_calibrations,
            vendor_lscs=vendor_lscs,
        )
    return out


def _patient_rows(session: Session, ids: Sequence[int]) -> list[Any]:
    return list(
        session.execute(
            select(Patient.id, Patient.identifier, Patient.birth_date, Patient.sex).where(Patient.id.in_(ids))
        ).all()
    )


@functools.cache
def _history_query() -> Any:
    """The exams of a batch's patients with their machines and measurements, one row per
    measurement (one row with no site for an exam without any), an exam's rows together, oldest
    exam first; the provenance as its JSON text (`provenance_printed` decodes the few that
    matter). Built once, the patients' ids bound at execution."""
    return (
        select(
            ExamRow.id,
            ExamRow.patient_id,
            ExamRow.exam_date,
            ExamRow.scan_mode,
            ExamRow.analysis_protocol,
            ExamRow.device_id,
            Device.manufacturer,
            Device.model,
            Device.serial,
            MeasurementRow.site,
            MeasurementRow.side,
            MeasurementRow.bmd,
            MeasurementRow.t_score,
            MeasurementRow.z_score,
            MeasurementRow.area_cm2,
            sql_cast(MeasurementRow.provenance, Text).label("provenance"),
        )
        .join(Device, Device.id == ExamRow.device_id)
        .outerjoin(MeasurementRow, MeasurementRow.exam_id == ExamRow.id)
        .where(ExamRow.patient_id.in_(bindparam("ids", expanding=True)))
        .order_by(ExamRow.patient_id, ExamRow.exam_date, ExamRow.id, MeasurementRow.id)
    )


def _calibration_of(
    session: Session, device_ids: list[int], calculator: PrecisionCalculator | None
) -> Callable[[set[Machine]], MachineData]:
    """The LSCs, cross-calibrations and vendor LSCs of a batch's machines, read once; for a set of
    those machines, what reading them for that set alone gives (the same order: each loader's
    order is by device or by row id, which a filter keeps). A machine names one device: devices
    are unique on their identity, which their (manufacturer, model, serial) determine."""
    ids = sorted(device_ids)
    lscs = load_site_lscs(session, calculator=calculator, device_ids=ids) if ids else ()
    cross_calibrations = load_cross_calibrations(session, device_ids=ids) if ids else ()
    vendor_lscs = load_vendor_lscs(session, ids)
    given: dict[frozenset[Machine], MachineData] = {}

    def of(machines: set[Machine]) -> MachineData:
        key = frozenset(machines)
        known = given.get(key)
        if known is None:
            known = given[key] = (
                tuple(lsc for lsc in lscs if lsc.machine in key),
                tuple(cc for cc in cross_calibrations if cc.machine_a in key or cc.machine_b in key),
                tuple(v for v in vendor_lscs if v.machine in key),
            )
        return known

    return of


def comparison_rows(session: Session, patient_id: int) -> list[ComparisonRow]:
    return list(
        session.scalars(
            select(ComparisonRow).where(ComparisonRow.patient_id == patient_id).order_by(ComparisonRow.position)
        )
    )


def load_comparisons(session: Session, patient_id: int) -> tuple[Comparison, ...]:
    return tuple(comparison_to_domain(r) for r in comparison_rows(session, patient_id))


def _refusal_key(c: Comparison) -> tuple[Any, ...]:
    return (c.site, c.side, c.from_exam, c.to_exam, c.reference, c.status)


def _stored_refusal_key(row: dict[str, Any]) -> tuple[Any, ...]:
    """`_refusal_key` of a stored comparison (its columns by name)."""
    return (
        row["site"],
        row["side"],
        exam_id_str(row["from_exam_id"]),
        exam_id_str(row["to_exam_id"]),
        row["reference"],
        row["status"],
    )


def _all_alerts(evaluation: PatientEvaluation) -> list[Alert]:
    seen: dict[str, Alert] = {}
    for alert in (*evaluation.alerts, *evaluation.next_scan.alerts):
        seen.setdefault(alert.code, alert)
    return list(seen.values())


def save_evaluation(
    session: Session,
    patient_id: int,
    evaluation: PatientEvaluation,
    *,
    actor: str = "system",
    now: datetime | None = None,
    own_exams: Collection[str] | None = None,
) -> None:
    """Replace the patient's comparisons and next scan with `evaluation`, in the caller's
    transaction (readers see the old set or the new one, never a mix, once it commits).
    `own_exams`: the patient's exam ids as the evaluation named them, when the caller read them
    under the same lock (`load_patient_history` after `lock_patient`); else they are read here."""
    save_evaluations(session, [Verdict(patient_id, evaluation, own_exams)], actor=actor, now=now)


@dataclass(frozen=True)
class Verdict:
    """One patient's evaluation to save; `own_exams` as `save_evaluation` takes it."""

    patient_id: int
    evaluation: PatientEvaluation
    own_exams: Collection[str] | None = None


def save_evaluations(
    session: Session, verdicts: Sequence[Verdict], *, actor: str = "system", now: datetime | None = None
) -> int:
    """`save_evaluation` for a batch of patients, with the same rows as saving them one by one,
    in a fixed number of statements for the whole batch: the stored comparisons and next scans
    read once, one DELETE of the comparisons that changed, one insert of many for their new ones,
    one upsert of many for the next scans that changed, the live alerts read once (their changes
    flushed together, the new ones inserted by one statement). One verdict per patient.

    A patient whose comparisons come out as stored (every column but the row's id and time) keeps
    its rows, and a next scan that comes out as stored is not written again: re-evaluating most
    patients changes nothing (the daily refresh, a second file of an exam already stored), and
    writing them anew was most of an evaluation's cost, and of the database's. Their `computed_at`
    then says since when the verdict has been the same. A refusal is audited the first time only,
    as before. Returns how many patients' comparisons were written."""
    if not verdicts:
        return 0
    moment = now or utcnow()
    ids = [v.patient_id for v in verdicts]
    if len(set(ids)) != len(ids):
        raise ValueError("one verdict per patient")
    if len(lock_patients(session, ids)) != len(ids):
        raise LookupError("no such patient")
    unknown = [v.patient_id for v in verdicts if v.own_exams is None]
    read: dict[int, set[str]] = {i: set() for i in unknown}
    if unknown:
        for pid, exam_id in session.execute(
            select(ExamRow.patient_id, ExamRow.id).where(ExamRow.patient_id.in_(unknown))
        ):
            read[pid].add(exam_id_str(exam_id))
    for v in verdicts:
        own = read[v.patient_id] if v.own_exams is None else v.own_exams
        for c in v.evaluation.comparisons:
            if c.from_exam not in own or c.to_exam not in own:
                raise ValueError("comparison names an exam that is not this patient's")

    stored: dict[int, list[tuple[Any, ...]]] = {i: [] for i in ids}
    for row in session.execute(_stored_comparisons(), {"ids": ids}):
        stored[row[0]].append(tuple(row[1:]))
    scans_before = {row[0]: tuple(row[1:]) for row in session.execute(_stored_next_scans(), {"ids": ids})}
    refused_before = {
        (pid, _stored_refusal_key(dict(zip(_COMPARISON_COLUMNS, row, strict=True))))
        for pid, rows in stored.items()
        for row in rows
        if row[_STATUS] in _REJECTED
    }
    changed: list[int] = []
    comparisons: list[tuple[Any, ...]] = []  # rows of `_COMPARISON_ROW`
    refusals: list[dict[str, Any]] = []  # audit events, one INSERT for all
    next_scans: list[dict[str, Any]] = []
    alerts: dict[int, list[Alert]] = {}
    for v in verdicts:
        pid, evaluation = v.patient_id, v.evaluation
        rows = [_compared(c, n) for n, c in enumerate(evaluation.comparisons)]
        if rows != stored[pid]:
            changed.append(pid)
            comparisons += ((pid, *row, moment) for row in rows)
        for c in evaluation.comparisons:
            if c.status in _REJECTED and (pid, _refusal_key(c)) not in refused_before:
                refusals.append(_refusal_event(pid, c, actor, moment))
        alerts[pid] = _all_alerts(evaluation)
        scan = {
            "patient_id": pid,
            "due": evaluation.next_scan.due,
            "rule_id": evaluation.next_scan.rule_id,
            "reason": evaluation.next_scan.reason,
            "alerts": alerts_to_json(alerts[pid]),
            "who_category": evaluation.who_category,
            "z_below_expected": evaluation.z_below_expected,
            "computed_at": moment,
        }
        if scans_before.get(pid) != _compared_scan(scan):
            next_scans.append(scan)
    session.flush()  # what the ORM wrote so far goes first: the next statements bypass it
    connection = session.connection()
    dialect = connection.dialect.name
    if changed:
        connection.execute(delete(ComparisonRow).where(ComparisonRow.patient_id.in_(changed)))
    if comparisons:
        insert_many(connection, cast(Table, ComparisonRow.__table__), _COMPARISON_ROW, comparisons, as_text=("notes",))
    if refusals:
        connection.execute(_insert_audit_events(), refusals)
    if next_scans:
        connection.execute(_upsert_next_scans(dialect), next_scans)
    for scan in next_scans:  # a next scan the session holds is stale now
        held = session.identity_map.get(session.identity_key(NextScanRow, (scan["patient_id"],)))
        if held is not None:
            session.expire(held)

    live: dict[int, list[Any]] = {i: [] for i in ids}
    for alert_row in session.execute(_live_alerts(), {"ids": ids}):
        live[alert_row.patient_id].append(alert_row)
    changes = _AlertChanges()
    for pid in ids:
        _sync_alerts(pid, alerts[pid], live[pid], moment, changes)
    changes.write(session, connection)
    if changes or next_scans:  # the flag follows the alert rows (a new next scan row starts unflagged)
        flag_open_alerts(session, ids)
    return len(changed)


# The columns of a stored comparison that an evaluation decides (all but its id, patient and time),
# in the order `_stored_comparisons` reads them; the phrases (`notes`) as their JSON text.
_COMPARISON_COLUMNS = (*COMPARISON_COLUMNS, "notes")
_STATUS = _COMPARISON_COLUMNS.index("status")
_NEXT_SCAN_COLUMNS = ("due", "rule_id", "reason", "alerts", "who_category", "z_below_expected")


def _as_stored_json(value: Any) -> str:
    """A JSON column's value as the JSON type writes it (`json.dumps`, None as JSON's null: the
    columns keep `none_as_null` off), to compare with the stored text."""
    return json.dumps(value)


def _compared(comparison: Comparison, position: int) -> tuple[Any, ...]:
    """A comparison's values (`comparison_values`, but the patient) as `_stored_comparisons` reads a
    stored row."""
    return (*comparison_columns(comparison, position), _notes_text(comparison.notes))


@functools.lru_cache(maxsize=4096)
def _notes_text(notes: tuple[Phrase, ...]) -> str:
    """A comparison's phrases as the `notes` column's JSON text. Cached: a refusal names the same
    two machines for every patient who moved between them, and a comparison without phrases is
    the commonest; building and encoding the phrases was a good part of saving a verdict. (The
    phrases' numbers are floats, whose equal ints would share their text: none is given an int.)"""
    return _as_stored_json(notes_to_json(notes))


def _compared_scan(values: dict[str, Any]) -> tuple[Any, ...]:
    """A next scan's values as `_stored_next_scans` reads the stored row."""
    return tuple(_as_stored_json(values[name]) if name == "alerts" else values[name] for name in _NEXT_SCAN_COLUMNS)


@functools.cache
def _stored_comparisons() -> Any:
    """The batch's stored comparisons, each patient's in position order, JSON read as its text:
    compared whole with what the evaluation gives (a text that differs only by its spelling
    counts as a change: the rows are written again, as they always were before)."""
    columns = [getattr(ComparisonRow, name) for name in _COMPARISON_COLUMNS[:-1]]
    return (
        select(ComparisonRow.patient_id, *columns, sql_cast(ComparisonRow.notes, Text))
        .where(ComparisonRow.patient_id.in_(bindparam("ids", expanding=True)))
        .order_by(ComparisonRow.patient_id, ComparisonRow.position, ComparisonRow.id)
    )


@functools.cache
def _stored_next_scans() -> Any:
    columns = [
        sql_cast(NextScanRow.alerts, Text) if name == "alerts" else getattr(NextScanRow, name)
        for name in _NEXT_SCAN_COLUMNS
    ]
    return select(NextScanRow.patient_id, *columns).where(NextScanRow.patient_id.in_(bindparam("ids", expanding=True)))


def _refusal_event(patient_id: int, c: Comparison, actor: str, moment: datetime) -> dict[str, Any]:
    """The audit event's row (the ORM inserted each event in a statement of its own)."""
    return dict(
        occurred_at=moment,
        actor=actor,
        user_id=None,
        action=REFUSED_COMPARISON,
        patient_id=patient_id,
        detail={
            "site": c.site,
            "side": c.side,
            "from_exam": c.from_exam,
            "to_exam": c.to_exam,
            "reference": c.reference,
            "status": c.status,
            "reason": c.reason,
        },
    )


@functools.cache
def _insert_audit_events() -> Any:
    return insert(cast(Table, AuditEvent.__table__))


_COMPARISON_ROW = ("patient_id", *_COMPARISON_COLUMNS, "computed_at")  # a new row's columns, in this order


def insert_many(
    connection: Connection,
    table: Table,
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    as_text: Collection[str] = (),
) -> None:
    """INSERT rows (values of `columns`, in that order) by one executemany of the driver, each
    value bound as SQLAlchemy binds it (the columns' types' bind processors); `as_text`: JSON
    columns given as their JSON text already (as the type writes it: `_as_stored_json`). A Core
    insert of many spent more in building each row's parameters than the driver and the database
    in writing them (bench/evaluation.py)."""
    sql, processors = _driver_insert(connection.dialect, table, tuple(columns), frozenset(as_text))
    if processors:
        values: list[Sequence[Any]] = []
        last: dict[int, tuple[Any, Any]] = {}  # by column: the value given last, and as bound
        for row in rows:
            one = list(row)
            for n, process in processors:
                given = one[n]
                seen = last.get(n)
                if seen is not None and seen[0] is given:  # the same object (a batch's time): bound once
                    one[n] = seen[1]
                else:
                    one[n] = process(given)
                    last[n] = (given, one[n])
            values.append(one)
        rows = values
    connection.exec_driver_sql(sql, [tuple(row) for row in rows])


_driver_inserts: weakref.WeakKeyDictionary[Dialect, dict[Any, Any]] = weakref.WeakKeyDictionary()


def _driver_insert(
    dialect: Dialect, table: Table, columns: tuple[str, ...], as_text: frozenset[str]
) -> tuple[str, list[tuple[int, Callable[[Any], Any]]]]:
    """The INSERT's text in the driver's parameter style and the bind processors to apply, by
    column position; built once per dialect (its processors are its own)."""
    built = _driver_inserts.setdefault(dialect, {})
    key = (table.name, columns, as_text)
    found = built.get(key)
    if found is None:
        quote = dialect.identifier_preparer.quote
        mark = "?" if dialect.paramstyle == "qmark" else "%s"
        sql = (
            f"INSERT INTO {quote(table.name)} ({', '.join(quote(c) for c in columns)}) "
            f"VALUES ({', '.join(mark for _ in columns)})"
        )
        processors = []
        for n, name in enumerate(columns):
            process = None if name in as_text else table.c[name].type._cached_bind_processor(dialect)
            if process is not None:
                processors.append((n, process))
        found = built[key] = (sql, processors)
    return cast(tuple[str, list[tuple[int, Callable[[Any], Any]]]], found)


@functools.cache
def _upsert_next_scans(dialect: str) -> Any:
    """One statement inserts or replaces each patient's next scan (PostgreSQL and SQLite alike)."""
    module = postgresql if dialect == "postgresql" else sqlite
    stmt = module.insert(cast(Table, NextScanRow.__table__))
    columns = ("due", "rule_id", "reason", "alerts", "who_category", "z_below_expected", "computed_at")
    return stmt.on_conflict_do_update(
        index_elements=["patient_id"], set_={name: stmt.excluded[name] for name in columns}
    )


@dataclass
class _AlertChanges:
    """What `_sync_alerts` decided for a batch's alerts, written by a few executemany statements
    (as plain rows, not ORM objects: loading and flushing those cost more than the rest of saving
    an unchanged verdict): the rows resolved, the live rows whose wording changed (by the set of
    columns that changed, as the ORM wrote only those), the rows raised anew."""

    resolved: list[dict[str, Any]] = field(default_factory=list)
    edited: dict[tuple[str, ...], list[dict[str, Any]]] = field(default_factory=dict)
    raised: list[dict[str, Any]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.resolved or self.edited or self.raised)

    def write(self, session: Session, connection: Connection) -> None:
        table = cast(Table, AlertRow.__table__)
        touched = [row["alert_id"] for row in self.resolved]
        if self.resolved:  # first, then the rows raised anew in their place
            connection.execute(
                update(table)
                .where(table.c.id == bindparam("alert_id"))
                .values(state="resolved", resolved_at=bindparam("at")),
                self.resolved,
            )
        for columns, rows in self.edited.items():
            connection.execute(
                update(table)
                .where(table.c.id == bindparam("alert_id"))
                .values({name: bindparam(f"new_{name}") for name in columns}),
                rows,
            )
            touched += [row["alert_id"] for row in rows]
        for alert_id in touched:  # an alert the session holds is stale now
            held = session.identity_map.get(session.identity_key(AlertRow, (alert_id,)))
            if held is not None:
                session.expire(held)
        if self.raised:
            connection.execute(_insert_alerts(), self.raised)


@functools.cache
def _live_alerts() -> Any:
    return (
        select(AlertRow.id, AlertRow.patient_id, AlertRow.code, AlertRow.state, AlertRow.message)
        .add_columns(AlertRow.basis, AlertRow.phrase)
        .where(AlertRow.patient_id.in_(bindparam("ids", expanding=True)), AlertRow.state.in_(("open", "acknowledged")))
        .order_by(AlertRow.id)
    )


def flag_open_alerts(session: Session, patient_ids: list[int]) -> None:
    """Set `next_scans.open_alert` of these patients from their alert rows (flushed): the patients
    list counts and filters "open alerts" by that flag (issue 13). Only rows whose flag changes
    are written."""
    session.connection().execute(_FLAG_OPEN_ALERTS, {"patient_ids": patient_ids})


_HAS_OPEN_ALERT = exists().where(AlertRow.patient_id == NextScanRow.patient_id, AlertRow.state == "open")
_FLAG_OPEN_ALERTS = (
    update(NextScanRow)
    .where(
        NextScanRow.patient_id.in_(bindparam("patient_ids", expanding=True)),
        NextScanRow.open_alert.is_distinct_from(_HAS_OPEN_ALERT),
    )
    .values(open_alert=_HAS_OPEN_ALERT)
    .execution_options(synchronize_session=False)
)


def _sync_alerts(
    patient_id: int, alerts: list[Alert], rows: list[Any], moment: datetime, changes: _AlertChanges
) -> None:
    """Keep one live (open or acknowledged) row per raised alert code; `rows`: the live rows (by
    id, plain rows of `_live_alerts`); what to write goes to `changes`.

    A code no longer raised is resolved. An acknowledged row stays acknowledged while the alert
    is raised on the same basis (re-evaluating changes nothing); raised on another basis,
    something new happened: the acknowledged row is resolved and a new open one raised."""
    live = {r.code: r for r in rows}
    raised = {a.code: a for a in alerts}
    for code, row in live.items():
        alert = raised.get(code)
        if alert is None or (row.state == "acknowledged" and row.basis != alert.basis):
            changes.resolved.append({"alert_id": row.id, "at": moment})
            if alert is not None:
                changes.raised.append(_new_alert(patient_id, alert, moment))
            continue
        wanted = {
            "message": alert.message,
            "basis": alert.basis,
            "phrase": to_data(alert.phrase) if alert.phrase else None,
        }
        edits = {name: value for name, value in wanted.items() if getattr(row, name) != value}
        if edits:
            changes.edited.setdefault(tuple(edits), []).append(
                {"alert_id": row.id, **{f"new_{name}": value for name, value in edits.items()}}
            )
    for code, alert in raised.items():
        if code not in live:
            changes.raised.append(_new_alert(patient_id, alert, moment))


def _new_alert(patient_id: int, alert: Alert, moment: datetime) -> dict[str, Any]:
    return dict(
        patient_id=patient_id,
        code=alert.code,
        message=alert.message,
        basis=alert.basis,
        phrase=to_data(alert.phrase) if alert.phrase else None,
        state="open",
        raised_at=moment,
    )


@functools.cache
def _insert_alerts() -> Any:
    return insert(cast(Table, AlertRow.__table__))


def acknowledge_alert(
    session: Session, patient_id: int, alert_id: int, *, actor: str, user_id: int | None, comment: str
) -> AlertRow:
    """A clinician acknowledges an open alert with a comment; recorded in the audit trail.
    LookupError when the patient has no such open alert; ValueError for an empty comment."""
    text = comment.strip()
    if not text:
        raise ValueError("say why in a comment to acknowledge an alert")
    # the patient's next scan row (its `open_alert` flag changes below) is locked before the alert,
    # in the order an evaluation takes them: the two never wait for each other in a circle
    session.execute(select(NextScanRow.patient_id).where(NextScanRow.patient_id == patient_id).with_for_update())
    row = session.get(AlertRow, alert_id)
    if row is None or row.patient_id != patient_id or row.state != "open":
        raise LookupError("no such open alert")
    moment = utcnow()
    row.state = "acknowledged"
    row.acknowledged_at = moment
    row.acknowledged_by = actor
    row.ack_comment = text[:2000]
    session.add(
        AuditEvent(
            occurred_at=moment,
            actor=actor,
            user_id=user_id,
            action="alert_acknowledged",
            patient_id=patient_id,
            detail={"alert": row.id, "code": row.code, "comment": row.ack_comment},
        )
    )
    session.flush()
    flag_open_alerts(session, [patient_id])
    return row


def open_alerts(session: Session, patient_id: int | None = None) -> list[AlertRow]:
    stmt = select(AlertRow).where(AlertRow.state == "open").order_by(AlertRow.raised_at, AlertRow.id)
    if patient_id is not None:
        stmt = stmt.where(AlertRow.patient_id == patient_id)
    return list(session.scalars(stmt))
