"""A whole parsed file stored: patient, device, the exam it belongs to, the exam's description,
the measurements and what the vendor printed beside them (its own change, its "*", its LSC), in
the caller's transaction. Also the test of a re-encoded DICOM instance: the same results as the
file that owns its UID.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from sqlalchemy.orm import Session

from db.converters import device_values, patient_values
from db.devices import ensure_devices, find_or_create_device, record_software_version
from db.exams import deferred_exams, find_or_create_exam, merge_exam_details, prefetch_same_day_exams
from db.measurements import MeasurementMerge, merge_measurements
from db.models import Device, Exam, Patient, SourceFile
from db.patients import batch_patient_ids, upsert_patient_locked
from db.vendor_lsc import lock_printed_lscs, record_printed_lscs
from ingest.report import ParsedReport
from monitor.assembly import bmd_agree


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


@dataclass
class SharedWrites:
    """What a batch's files write to rows that other batches share (a machine's software versions
    and its printed LSCs), held back to the end of the batch's transaction (`write_shared`: the
    machines' rows in machine order, then their LSC rows in (machine, site) order).

    Why: a batch locks its patients one after the other (in the one patient order); a shared row
    written between two of them would be held while the batch waits for the next patient, and a
    second batch holding that patient and wanting the shared row makes a circle (a deadlock that
    costs a batch's parse again). Written last, in (machine, site) order, the shared rows come
    after every patient lock of both batches: one waits for the other's commit, never in a circle,
    and only for the last moment of the other's transaction. New machines are created first
    (`db.devices.ensure_devices`), before any patient lock, for the same reason."""

    versions: list[tuple[Device, str]] = field(default_factory=list)
    lscs: list[tuple[Device, tuple[tuple[str, float], ...], date, int | None]] = field(default_factory=list)

    def extend(self, other: SharedWrites) -> None:
        self.versions += other.versions
        self.lscs += other.lscs


def prepare_shared_rows(session: Session, reports: Iterable[ParsedReport]) -> None:
    """Before a batch stores its files: the machines new to the database created, in key order."""
    ensure_devices(session, [report.device for report in reports])


def prefetch_exams(session: Session, reports: Iterable[ParsedReport]) -> None:
    """After `db.patients.lock_batch_patients`, in a batch stored without savepoints: the same-day
    exams of every report's patient read in one query (`db.exams.prefetch_same_day_exams`)."""
    patients = batch_patient_ids(session)
    days: list[tuple[int, date]] = []
    for report in reports:
        values = patient_values(report.patient)
        held = patients.get((values["identifier"], values["issuer"]))
        if held is not None:
            days.append((held[0], report.exam_date))
    prefetch_same_day_exams(session, days, [pid for pid, created in patients.values() if created])


def write_shared(session: Session, shared: SharedWrites) -> set[int]:
    """The shared rows of a batch written at its end, locked in (machine id, row) order; the ids of
    the machines whose printed LSC is new or changed (their patients are evaluated again)."""
    changed: set[int] = set()
    by_device: dict[int, Device] = {}
    versions: dict[int, set[str]] = {}
    for device, version in shared.versions:
        by_device[device.id] = device
        versions.setdefault(device.id, set()).add(version)
    for device, _, _, _ in shared.lscs:
        by_device[device.id] = device
    for device_id in sorted(by_device):
        for version in sorted(versions.get(device_id, ())):
            record_software_version(session, by_device[device_id], version)
    # The machines' LSC rows in (machine, site) order, after every machine row; files in exam
    # date order (the latest value wins). Per site, the file of the latest exam (the last of one
    # day): what the files one after the other would leave, in one locked read and write of the row.
    latest: dict[int, dict[str, tuple[date, int, float, int | None]]] = {}
    for d, items, on, file_id in shared.lscs:
        for site, lsc in items:
            if lsc > 0:
                mine = latest.setdefault(d.id, {})
                mine[site] = max(mine.get(site, (on, -1, lsc, file_id)), (on, file_id or 0, lsc, file_id))
    locked = lock_printed_lscs(session, latest)  # one statement for the batch's machines
    for device_id in sorted(latest):
        for site in sorted(latest[device_id]):
            on, _, lsc, file_id = latest[device_id][site]
            if record_printed_lscs(session, by_device[device_id], [(site, lsc)], on, file_id, locked=locked[device_id]):
                changed.add(device_id)
    return changed


_DEADLOCK_STATES = frozenset({"40P01", "40001"})  # deadlock_detected, serialization_failure


def is_lock_conflict(exc: BaseException) -> bool:
    """True when PostgreSQL aborted the transaction for a lock conflict (a deadlock, a
    serialisation failure): the same transaction run again normally succeeds."""
    orig = getattr(exc, "orig", None)
    return getattr(orig, "sqlstate", None) in _DEADLOCK_STATES


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
        if kept is None or not bmd_agree(kept.bmd, value.bmd):
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
    shared: SharedWrites | None = None,
    defer: bool = False,
) -> StoredReport:
    """Everything one parsed file contributes, in the caller's transaction: patient, device, the
    exam it belongs to, the exam's description and the measurements; the file row is linked to
    its patient and exam. The caller commits, then archives the file and enqueues evaluation.

    `source_file_id` instead of `source_file`: the measurements name the file, and linking the
    file row is left to the caller (`db.files.finish_ingested`, in the same UPDATE as its status).

    With `shared`, what the file writes to the machine's rows is added to it instead, for the
    batch to write at its end (`SharedWrites`); `lsc_changed` is then told by `write_shared`.
    `defer`: the new measurement rows wait for `db.measurements.flush_measurements` (a batch's in
    one INSERT), and on SQLite the new exams and the rows changed wait for the session's next flush
    (`db.exams.deferred_exams`)."""
    file_id = source_file.id if source_file is not None else source_file_id
    patient, created = upsert_patient_locked(session, report.patient)
    device = find_or_create_device(session, report.device, record_version=shared is None)
    details = {
        "scan_type": report.scan_type,
        "vertebral_set": report.vertebral_set,
        "scan_mode": report.scan_mode,
        "analysis_protocol": report.analysis_protocol,
        "reference_database": report.extras.reference_database,
        "software_version": report.device.software_version,
    }
    exam = find_or_create_exam(
        session, patient, report.exam_date, device, details=details, patient_is_new=created, defer=defer
    )
    merge_exam_details(exam, **details)  # a new exam has them already: nothing changes
    merged = merge_measurements(
        session,
        exam,
        report.measurements,
        source_file_id=file_id,
        vendor=vendor_provenance(report, file_id),
        bulk=True,
        defer=defer,
    )
    if source_file is not None:
        source_file.patient_id = patient.id
        source_file.exam_id = exam.id
        source_file.format = report.format
    if shared is None:
        lsc_changed = record_printed_lscs(session, device, _printed_lscs(report).items(), report.exam_date, file_id)
    else:
        lsc_changed = False
        if report.device.software_version and report.device.software_version.strip():
            shared.versions.append((device, report.device.software_version))
        printed = tuple(_printed_lscs(report).items())
        if printed:
            shared.lscs.append((device, printed, report.exam_date, file_id))
    if not (defer and deferred_exams(session)):  # else flushed once for the batch (`deferred_exams`)
        session.flush()
    return StoredReport(patient=patient, device=device, exam=exam, measurements=merged, lsc_changed=lsc_changed)
