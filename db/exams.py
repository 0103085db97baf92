"""Patients, devices, exam assembly and measurements: storing what a parsed file says.

Every function works inside the caller's transaction and never commits, so the ingest use case can
store a file's rows and mark the file in one commit. Concurrency is handled in the database:
unique constraints catch two workers creating the same patient, device or exam (`INSERT … ON
CONFLICT DO NOTHING`, then the loser reads the winner's row), and the patient row is locked
(`SELECT … FOR UPDATE` on PostgreSQL; SQLite serialises writers anyway) while a patient's exams are
assembled, so two files of one exam processed at once cannot both create it. A patient is locked at
most once per transaction: the lock holds until the commit, so locking again would only cost a query.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from db.converters import device_values, measurement_provenance, measurement_row, patient_values
from db.inserts import insert_unless_exists
from db.models import (
    ComparisonRow,
    Device,
    Exam,
    Measurement,
    MeasurementConflict,
    Patient,
    SourceFile,
)
from db.vendor_lsc import record_printed_lscs
from ingest.report import DeviceIdentity, ParsedReport, PatientInfo, SiteMeasurement

# Two files of one exam "agree" on a BMD when they differ by no more than half the last printed
# digit (vendors print g/cm² to 3 decimals); beyond that the second value is a conflict for QA.
BMD_AGREEMENT_G_CM2 = 0.0005
_FLOAT_SLACK = 1e-9
_LOCKED = "dxa_locked_patients"


def _locked_patients(session: Session) -> dict[int, Patient]:
    """The patients this session's current transaction has locked (row locks last until it ends),
    held here too: the session's identity map keeps rows only while something refers to them."""
    transaction = session.get_transaction()
    held = session.info.get(_LOCKED)
    if held is None or held[0] is not transaction:
        held = (transaction, {})
        session.info[_LOCKED] = held
    locked: dict[int, Patient] = held[1]
    return locked


def lock_patient(session: Session, patient_id: int) -> Patient:
    """Serialise work on one patient's exams (a row lock on PostgreSQL; a no-op on SQLite, where
    `BEGIN IMMEDIATE` already serialises writers). Once per transaction: a second call finds the
    lock held and the row in the session."""
    held = _locked_patients(session).get(patient_id)
    if held is not None:
        return held
    patient = session.scalars(select(Patient).where(Patient.id == patient_id).with_for_update()).one()
    _locked_patients(session)[patient_id] = patient
    return patient


# --------------------------------------------------------------------------- patients and devices


class AmbiguousPatient(LookupError):
    """One identifier names patients of several issuers: the caller must say which."""

    def __init__(self, issuers: list[str]) -> None:
        super().__init__("identifier used by several issuers")
        self.issuers = issuers


def find_patient(session: Session, identifier: str, issuer: str | None = None) -> Patient | None:
    """The patient an identifier names, for every caller (pages, API, imports). Without `issuer`,
    any issuer's patient of that identifier, unless several have it (`AmbiguousPatient`: picking
    one would risk the wrong patient); with it, exactly that issuer's."""
    stmt = select(Patient).where(Patient.identifier == identifier.strip())
    if issuer is not None:
        stmt = stmt.where(Patient.issuer == issuer.strip())
    found = list(session.scalars(stmt.limit(10)))
    if len(found) > 1:
        raise AmbiguousPatient(sorted(p.issuer for p in found))
    return found[0] if found else None


def upsert_patient(session: Session, info: PatientInfo) -> Patient:
    """The patient row for (identifier, issuer); demographics fill gaps but never overwrite, since
    an old archive back-loaded later must not replace what newer files said."""
    return _upsert_patient(session, info, lock=False)[0]


def _upsert_patient(session: Session, info: PatientInfo, *, lock: bool) -> tuple[Patient, bool]:
    """(patient, created); with `lock`, the row is locked for this transaction as it is read (one
    query for both). A row this transaction inserted is as good as locked: nobody else sees it."""
    values = patient_values(info)
    if not values["identifier"]:
        raise ValueError("patient identifier is empty")
    stmt = select(Patient).where(Patient.identifier == values["identifier"], Patient.issuer == values["issuer"])
    if lock:
        stmt = stmt.with_for_update()
    patient = session.scalars(stmt).one_or_none()
    created = False
    if patient is None:
        patient = insert_unless_exists(session, Patient, values, ["identifier", "issuer"])
        created = patient is not None
        if patient is None:  # a concurrent transaction created it first (and has committed)
            patient = session.scalars(stmt).one()
    if lock:
        _locked_patients(session)[patient.id] = patient
    for name in ("name", "birth_date", "sex"):
        if getattr(patient, name) is None and values[name] is not None:
            setattr(patient, name, values[name])
    return patient, created


def find_or_create_device(session: Session, identity: DeviceIdentity) -> Device:
    """The device row for a (manufacturer, model, serial), recording its software version."""
    values = device_values(identity)
    stmt = select(Device).where(Device.identity_key == values["identity_key"])
    device = session.scalars(stmt).one_or_none()
    if device is None:
        device = insert_unless_exists(session, Device, {**values, "software_versions": []}, ["identity_key"])
        if device is None:
            device = session.scalars(stmt).one()
    version = (identity.software_version or "").strip()
    if version and version not in device.software_versions:
        session.refresh(device, with_for_update=True)  # the list is read-modify-write
        if version not in device.software_versions:
            device.software_versions = sorted({*device.software_versions, version})
    return device


# --------------------------------------------------------------------------- exam assembly


def _same_day_exams(session: Session, patient_id: int, exam_date: date) -> list[Exam]:
    """The patient's exams on that date, each with its device (joined), oldest first."""
    return list(
        session.scalars(
            select(Exam).where(Exam.patient_id == patient_id, Exam.exam_date == exam_date).order_by(Exam.id)
        )
    )


def _of_model(exams: list[Exam], model_key: str, strength: str) -> list[Exam]:
    return [e for e in exams if e.device.model_key == model_key and e.device.identity_strength == strength]


def find_or_create_exam(
    session: Session,
    patient: Patient,
    exam_date: date,
    device: Device,
    *,
    details: Mapping[str, Any] | None = None,
    patient_is_new: bool = False,
) -> Exam:
    """The one exam of `patient` on `exam_date` on `device`; files of one visit never make two.

    A file without a serial (weak identity) joins the same-day exam of the same manufacturer and
    model that has a serial, when there is exactly one such; otherwise it gets a weak exam of its
    own. A file with a serial adopts a same-day weak exam of its model (upgrading that exam's
    device) and absorbs any further ones, unless another unit of that model also has an exam that
    day, when a weak file cannot be attributed and is left alone.

    `details` (the `merge_exam_details` keywords) go straight into a new exam's row; an existing
    exam is left for the caller to merge them into. `patient_is_new`: the patient was created in
    this transaction, so it has no exam to look for.
    """
    lock_patient(session, patient.id)
    same_day = [] if patient_is_new else _same_day_exams(session, patient.id, exam_date)
    exact = next((e for e in same_day if e.device_id == device.id), None)
    if device.identity_strength == "weak":
        serial_exams = _of_model(same_day, device.model_key, "serial")
        if len(serial_exams) == 1:
            return serial_exams[0]
        return exact if exact is not None else _create_exam(session, patient.id, exam_date, device, details)

    exam = exact
    others = [e for e in _of_model(same_day, device.model_key, "serial") if e.device_id != device.id]
    weak = [] if others else _of_model(same_day, device.model_key, "weak")
    if exam is None and weak:
        exam = weak.pop(0)
        exam.device_id = device.id
        exam.device = device
        session.flush()
    if exam is None:
        exam = _create_exam(session, patient.id, exam_date, device, details)
    for other in weak:
        merge_exams(session, source=other, target=exam)
    return exam


def _exam_columns(details: Mapping[str, Any] | None) -> dict[str, Any]:
    """A new exam's description columns from `merge_exam_details` keywords."""
    given = dict(details or {})
    scan_type = given.pop("scan_type", None)
    columns = {name: value or None for name, value in given.items()}
    columns["scan_types"] = [scan_type] if scan_type else []
    return columns


def _create_exam(
    session: Session, patient_id: int, exam_date: date, device: Device, details: Mapping[str, Any] | None = None
) -> Exam:
    key = {"patient_id": patient_id, "exam_date": exam_date, "device_id": device.id}
    exam = insert_unless_exists(session, Exam, {**key, **_exam_columns(details)}, list(key))
    if exam is None:  # made meanwhile (the patient lock normally rules this out); the caller merges
        return session.scalars(select(Exam).filter_by(**key)).one()
    set_committed_value(exam, "measurements", [])  # a new row: nothing to load
    set_committed_value(exam, "device", device)
    return exam


def merge_exam_details(
    exam: Exam,
    *,
    scan_type: str | None = None,
    vertebral_set: str | None = None,
    scan_mode: str | None = None,
    analysis_protocol: str | None = None,
    reference_database: str | None = None,
    software_version: str | None = None,
) -> None:
    """Add one file's description of the exam: scan types accumulate, other fields fill gaps
    (the first file to say it wins, like measurements)."""
    if scan_type and scan_type not in exam.scan_types:
        exam.scan_types = sorted({*exam.scan_types, scan_type})
    for name, value in (
        ("vertebral_set", vertebral_set),
        ("scan_mode", scan_mode),
        ("analysis_protocol", analysis_protocol),
        ("reference_database", reference_database),
        ("software_version", software_version),
    ):
        if value and getattr(exam, name) is None:
            setattr(exam, name, value)


def merge_exams(session: Session, *, source: Exam, target: Exam) -> None:
    """Fold `source` into `target` (same visit, found to be one exam late): measurements move
    unless `target` has the site already (then they are compared like a new file's), files and
    conflicts follow, comparisons that named `source` are dropped for re-evaluation."""
    if source.id == target.id or source.patient_id != target.patient_id:
        raise ValueError("can only merge two different exams of one patient")
    merge_exam_details(
        target,
        vertebral_set=source.vertebral_set,
        scan_mode=source.scan_mode,
        analysis_protocol=source.analysis_protocol,
        reference_database=source.reference_database,
        software_version=source.software_version,
    )
    for scan_type in source.scan_types:
        merge_exam_details(target, scan_type=scan_type)
    existing = {(m.site, m.side): m for m in target.measurements}
    for moving in list(source.measurements):
        kept = existing.get((moving.site, moving.side))
        if kept is None:
            source.measurements.remove(moving)
            target.measurements.append(moving)
            existing[(moving.site, moving.side)] = moving
            session.execute(
                update(MeasurementConflict)
                .where(MeasurementConflict.measurement_id == moving.id)
                .values(exam_id=target.id)
                .execution_options(synchronize_session=False)
            )
        elif not _agree(kept.bmd, moving.bmd):
            _record_conflict(session, kept, _as_site(moving), moving.source_file_id)
    session.flush()
    session.execute(
        update(SourceFile)
        .where(SourceFile.exam_id == source.id)
        .values(exam_id=target.id)
        .execution_options(synchronize_session=False)
    )
    session.execute(
        delete(ComparisonRow)
        .where((ComparisonRow.from_exam_id == source.id) | (ComparisonRow.to_exam_id == source.id))
        .execution_options(synchronize_session=False)
    )
    session.delete(source)
    session.flush()


def _as_site(row: Measurement) -> SiteMeasurement:
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


# --------------------------------------------------------------------------- measurements


@dataclass
class MeasurementMerge:
    """What adding one file's measurements to an exam did."""

    added: list[Measurement] = field(default_factory=list)
    confirmed: list[Measurement] = field(default_factory=list)
    conflicts: list[MeasurementConflict] = field(default_factory=list)


def _agree(a: float, b: float) -> bool:
    return abs(a - b) <= BMD_AGREEMENT_G_CM2 + _FLOAT_SLACK


def _record_conflict(
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
    result = _merge_measurements(session, exam, measurements, source_file_id=source_file_id)
    session.flush()
    return result


def _merge_measurements(
    session: Session,
    exam: Exam,
    measurements: Iterable[SiteMeasurement],
    *,
    source_file_id: int | None,
    vendor: Mapping[tuple[str, str | None], dict[str, Any]] | None = None,
) -> MeasurementMerge:
    """`add_measurements` without the final flush; `vendor` (`vendor_provenance`) goes into new
    rows' provenance before they are written (no second UPDATE of each row), and fills what a kept
    row lacks."""
    lock_patient(session, exam.patient_id)
    result = MeasurementMerge()
    current = {(m.site, m.side): m for m in exam.measurements}
    for value in measurements:
        key = (value.site, value.side)
        kept = current.get(key)
        if kept is None:
            row = measurement_row(value, exam_id=exam.id, source_file_id=source_file_id)
            extra = (vendor or {}).get(key)
            if extra:
                row.provenance = {**(row.provenance or {}), **extra}
            exam.measurements.append(row)
            current[key] = row
            result.added.append(row)
        elif _agree(kept.bmd, value.bmd):
            _fill_gaps(kept, value, source_file_id)
            missing = {k: v for k, v in (vendor or {}).get(key, {}).items() if k not in (kept.provenance or {})}
            if missing:
                kept.provenance = {**(kept.provenance or {}), **missing}
            result.confirmed.append(kept)
        else:  # another file, or another report of the same file: QA sees both values
            if kept.id is None:
                session.flush()  # the kept row needs its id
            result.conflicts.append(_record_conflict(session, kept, value, source_file_id))
    return result


def _fill_gaps(kept: Measurement, value: SiteMeasurement, source_file_id: int | None) -> None:
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


# --------------------------------------------------------------------------- a whole parsed file


def _vendor_changes(report: ParsedReport) -> dict[tuple[str, str | None], dict[str, Any]]:
    """The change the vendor printed for this exam, by site and side, to keep beside the value so the
    dashboard can show the vendor's own percent change next to ours. With each figure,
    the date of the exam the vendor compared against (its first and its preceding trend row), so
    the dashboard shows it only where both compare the very same two exams."""
    earlier: dict[tuple[str, str | None], list[date]] = {}
    for h in report.extras.history:
        if h.date < report.exam_date:
            earlier.setdefault((h.site, h.side), []).append(h.date)
    changes: dict[tuple[str, str | None], dict[str, Any]] = {}
    for h in report.extras.history:
        if h.date != report.exam_date or (h.change_vs_baseline_pct is None and h.change_vs_previous_pct is None):
            continue
        dates = earlier.get((h.site, h.side), [])
        changes[(h.site, h.side)] = {
            "baseline": h.change_vs_baseline_pct,
            "previous": h.change_vs_previous_pct,
            "baseline_date": min(dates).isoformat() if dates else None,
            "previous_date": max(dates).isoformat() if dates else None,
        }
    return changes


def _vendor_verdicts(report: ParsedReport) -> dict[tuple[str, str | None], dict[str, bool]]:
    """The vendor's "*" on this exam's change, by site, side and reference, where printed."""
    out: dict[tuple[str, str | None], dict[str, bool]] = {}
    for h in report.extras.history:
        if h.date != report.exam_date:
            continue
        marks = {"baseline": h.significant_vs_baseline, "previous": h.significant_vs_previous}
        known = {k: v for k, v in marks.items() if v is not None}
        if known:
            out[(h.site, h.side)] = known
    return out


def _printed_lscs(report: ParsedReport) -> dict[str, float]:
    """The LSC the machine printed, by site of this report (a printed lumbar range covers the
    exam's analysed range only when it is that range)."""
    return {site: lsc for site, lsc in report.extras.printed_lsc_g_cm2 if lsc > 0}


def vendor_provenance(report: ParsedReport, source_file_id: int | None) -> dict[tuple[str, str | None], dict[str, Any]]:
    """What the file says about significance at each site and side, kept in the measurement's
    provenance: the machine's printed LSC (with the file it came from) and the vendor's "*"."""
    lscs = _printed_lscs(report)
    changes = _vendor_changes(report)
    verdicts = _vendor_verdicts(report)
    out: dict[tuple[str, str | None], dict[str, Any]] = {}
    for m in report.measurements:
        key = (m.site, m.side)
        extra: dict[str, Any] = {}
        if key in changes:
            extra["vendor_change_pct"] = changes[key]
        if key in verdicts:
            extra["vendor_significant"] = verdicts[key]
        if m.site in lscs:
            extra["vendor_lsc"] = {"g_cm2": lscs[m.site], "file": source_file_id}
        if extra:
            out[key] = extra
    return out


def same_stored_results(session: Session, holder_file_id: int, report: ParsedReport) -> bool:
    """True when `report` says exactly what the file `holder_file_id` (which owns the same DICOM
    instance UID) put in the database: same patient, exam date and machine, every value equal, and
    no site of the stored file missing. A router that re-encoded the instance (another transfer
    syntax, pixel data OB instead of OW, group lengths, private elements dropped) changes the bytes,
    not the results; anything else is a real conflict for QA."""
    holder = session.get(SourceFile, holder_file_id)
    exam = session.get(Exam, holder.exam_id) if holder is not None and holder.exam_id is not None else None
    if exam is None or exam.exam_date != report.exam_date:
        return False
    patient = session.get(Patient, exam.patient_id)
    wanted = patient_values(report.patient)
    if patient is None or (patient.identifier, patient.issuer) != (wanted["identifier"], wanted["issuer"]):
        return False
    born = report.patient.birth_date
    if born is not None and patient.birth_date is not None and born != patient.birth_date:
        return False
    if exam.device.identity_key != device_values(report.device)["identity_key"]:
        return False
    stored = {(m.site, m.side): m for m in exam.measurements}
    new = {(m.site, m.side): m for m in report.measurements}
    for key, value in new.items():
        kept = stored.get(key)
        if kept is None or not _agree(kept.bmd, value.bmd):
            return False
        for a, b in ((kept.t_score, value.t_score), (kept.z_score, value.z_score)):
            if a is not None and b is not None and abs(a - b) > 0.051:
                return False
    return all(key in new for key, m in stored.items() if m.source_file_id == holder_file_id)


@dataclass
class StoredReport:
    patient: Patient
    device: Device
    exam: Exam
    measurements: MeasurementMerge
    lsc_changed: bool = False  # the machine printed a new LSC: its patients' comparisons may change


def store_report(
    session: Session,
    report: ParsedReport,
    *,
    source_file: SourceFile | None = None,
    source_file_id: int | None = None,
) -> StoredReport:
    """Everything one parsed file contributes, in the caller's transaction: patient, device, the
    exam it belongs to, the exam's description and the measurements; the file row is linked to
    its patient and exam. The caller commits, then archives the file and enqueues evaluation.

    `source_file_id` instead of `source_file`: the measurements name the file, and linking the
    file row is left to the caller (`db.files.finish_ingested`, in the same UPDATE as its status)."""
    file_id = source_file.id if source_file is not None else source_file_id
    patient, created = _upsert_patient(session, report.patient, lock=True)
    device = find_or_create_device(session, report.device)
    details = {
        "scan_type": report.scan_type,
        "vertebral_set": report.vertebral_set,
        "scan_mode": report.scan_mode,
        "analysis_protocol": report.analysis_protocol,
        "reference_database": report.extras.reference_database,
        "software_version": report.device.software_version,
    }
    exam = find_or_create_exam(session, patient, report.exam_date, device, details=details, patient_is_new=created)
    merge_exam_details(exam, **details)  # a new exam has them already: nothing changes
    merged = _merge_measurements(
        session, exam, report.measurements, source_file_id=file_id, vendor=vendor_provenance(report, file_id)
    )
    if source_file is not None:
        source_file.patient_id = patient.id
        source_file.exam_id = exam.id
        source_file.format = report.format
    lsc_changed = record_printed_lscs(session, device, _printed_lscs(report).items(), report.exam_date, file_id)
    session.flush()
    return StoredReport(patient=patient, device=device, exam=exam, measurements=merged, lsc_changed=lsc_changed)
