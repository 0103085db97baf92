"""CSV imports for the command line: therapies, precision studies, cross-calibrations.

Every file is read and checked whole before anything is written, and written in one
transaction: a bad row gives an error naming the file, line and field, and nothing is
half-imported.
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.calibration import PrecisionRepeat, save_cross_calibration, save_precision_study
from db.converters import machine_from_device
from db.exams import find_patient, upsert_patient
from db.models import Device
from db.therapies import replace_therapies
from ingest.report import PatientInfo
from ingest.vocabulary import canonical_site
from monitor.config import MonitoringConfig
from monitor.crosscal import CrossCalibrationError, in_vivo_cross_calibration, phantom_cross_calibration
from monitor.drugs import UnknownAgent, therapy_from_agent
from monitor.model import Therapy
from monitor.precision import (
    PrecisionResult,
    PrecisionStudyError,
    check_technologist,
    pool_precision,
    precision_study,
)


class ImportError_(ValueError):
    """A row that cannot be imported; the message names file, line and field."""


@dataclass(frozen=True)
class Row:
    line: int
    values: dict[str, str]


def read_rows(path: Path, required: tuple[str, ...]) -> Iterator[Row]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ImportError_(f"{path}: cannot read the file ({exc})") from exc
    reader = csv.DictReader(io.StringIO(text))
    header = [(h or "").strip().lower() for h in reader.fieldnames or []]
    missing = [c for c in required if c not in header]
    if missing:
        raise ImportError_(f"{path}: line 1: missing column(s) {', '.join(missing)}")
    for number, raw in enumerate(reader, start=2):
        values = {(k or "").strip().lower(): (v or "").strip() for k, v in raw.items() if k is not None}
        if any(values.values()):
            yield Row(number, values)


def _date(path: Path, row: Row, field: str, *, required: bool) -> date | None:
    text = row.values.get(field, "")
    if not text:
        if required:
            raise ImportError_(f"{path}: line {row.line}: field {field} is empty")
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise ImportError_(f"{path}: line {row.line}: field {field}: {text!r} is not a date (YYYY-MM-DD)") from None


def _float(path: Path, row: Row, field: str) -> float:
    text = row.values.get(field, "")
    try:
        value = float(text.replace(",", "."))
    except ValueError:
        raise ImportError_(f"{path}: line {row.line}: field {field}: {text!r} is not a number") from None
    if value <= 0:
        raise ImportError_(f"{path}: line {row.line}: field {field}: BMD must be positive")
    return value


def _site(path: Path, row: Row, field: str = "site") -> str:
    text = row.values.get(field, "")
    site = canonical_site(text.replace("_", " ")) or (text if text in ("femoral_neck", "total_hip") else None)
    if site is None:
        raise ImportError_(f"{path}: line {row.line}: field {field}: {text!r} is not a known site")
    return site


# --------------------------------------------------------------------------- therapies


def import_therapies(session: Session, path: Path) -> list[int]:
    """`patient_id, agent, start_date, stop_date`; the file is authoritative for each patient it
    names (their drug history is replaced, so importing twice changes nothing). Returns the
    database ids of the patients touched, for re-evaluation."""
    by_patient: dict[str, list[Therapy]] = defaultdict(list)
    for row in read_rows(path, ("patient_id", "agent", "start_date", "stop_date")):
        patient = row.values["patient_id"]
        if not patient:
            raise ImportError_(f"{path}: line {row.line}: field patient_id is empty")
        start = _date(path, row, "start_date", required=True)
        stop = _date(path, row, "stop_date", required=False)
        assert start is not None
        if stop is not None and stop < start:
            raise ImportError_(f"{path}: line {row.line}: field stop_date is before start_date")
        try:
            therapy = therapy_from_agent(row.values["agent"], start, stop)
        except UnknownAgent as exc:
            raise ImportError_(f"{path}: line {row.line}: field agent: {exc}") from None
        by_patient[patient].append(therapy)
    touched: list[int] = []
    for identifier, therapies in by_patient.items():
        patient_row = find_patient(session, identifier) or upsert_patient(session, PatientInfo(identifier))
        replace_therapies(session, patient_row.id, therapies, source=f"import:{path.name}")
        touched.append(patient_row.id)
    return touched


# --------------------------------------------------------------------------- devices


def find_device(session: Session, path: Path, row: Row, field: str) -> Device:
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


# --------------------------------------------------------------------------- precision


@dataclass(frozen=True)
class PrecisionImport:
    device: Device
    site: str
    facility: PrecisionResult
    technologists: dict[str, PrecisionResult]
    warnings: list[str]


def import_precision(session: Session, path: Path, config: MonitoringConfig) -> list[PrecisionImport]:
    """`device_serial, site, technologist, patient` plus either `bmd` (one row per scan) or
    `bmd_1, bmd_2, …` (one row per patient). One study per device and site; per-technologist
    precision is pooled into the facility value (ISCD)."""
    rows = list(read_rows(path, ("device_serial", "site", "technologist", "patient")))
    if not rows:
        raise ImportError_(f"{path}: the file has no rows")
    groups: dict[tuple[int, str], list[PrecisionRepeat]] = defaultdict(list)
    devices: dict[int, Device] = {}
    counters: dict[tuple[int, str, str, str], int] = defaultdict(int)
    for row in rows:
        device = find_device(session, path, row, "device_serial")
        devices[device.id] = device
        site = _site(path, row)
        tech, patient = row.values["technologist"], row.values["patient"]
        if not tech or not patient:
            raise ImportError_(f"{path}: line {row.line}: fields technologist and patient are required")
        fields = (
            ["bmd"]
            if row.values.get("bmd")
            else sorted(
                (k for k in row.values if k.startswith("bmd_") and row.values[k]),
                key=lambda k: int(k[4:] or 0),
            )
        )
        if not fields:
            raise ImportError_(f"{path}: line {row.line}: field bmd is empty")
        for field in fields:
            key = (device.id, site, tech, patient)
            counters[key] += 1
            groups[(device.id, site)].append(PrecisionRepeat(tech, patient, counters[key], _float(path, row, field)))
    results: list[PrecisionImport] = []
    for (device_id, site), repeats in groups.items():
        by_tech: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
        for r in repeats:
            by_tech[r.technologist][r.patient_code].append(r.bmd)
        per_tech: dict[str, PrecisionResult] = {}
        warnings: list[str] = []
        try:
            for tech, scans in by_tech.items():
                per_tech[tech] = precision_study(site, dict(scans), min_degrees_of_freedom=1)
            facility = pool_precision(list(per_tech.values()), lsc_multiplier=config.lsc_multiplier)
            if facility.degrees_of_freedom < config.min_degrees_of_freedom:
                raise PrecisionStudyError(
                    f"{facility.degrees_of_freedom} degrees of freedom; ISCD needs at least "
                    f"{config.min_degrees_of_freedom} (15 patients x 3 scans or 30 x 2)"
                )
        except PrecisionStudyError as exc:
            label = machine_from_device(devices[device_id]).label()
            raise ImportError_(f"{path}: study for {label} at {site}: {exc}") from None
        for tech, result in per_tech.items():
            check = check_technologist(result, config)
            if check.acceptable is False:
                warnings.append(f"technologist {tech}: {check.message}")
        save_precision_study(
            session,
            devices[device_id],
            site,
            repeats,
            rms_sd_g_cm2=facility.rms_sd_g_cm2,
            lsc_g_cm2=facility.lsc_g_cm2,
            notes=facility.note,
        )
        results.append(PrecisionImport(devices[device_id], site, facility, per_tech, warnings))
    return results


# --------------------------------------------------------------------------- cross-calibration


@dataclass(frozen=True)
class CrossCalImport:
    kind: str
    device_a: Device
    device_b: Device
    site: str
    lsc_g_cm2: float
    slope: float
    intercept: float
    note: str | None


def _rms_sd(session: Session, device: Device, site: str) -> float | None:
    from db.calibration import latest_studies

    for study in latest_studies(session, device_ids=[device.id]):
        if study.site == site and study.rms_sd_g_cm2 is not None:
            return study.rms_sd_g_cm2
    return None


def import_crosscal(session: Session, path: Path, config: MonitoringConfig) -> list[CrossCalImport]:
    """`kind, device_a_serial, device_b_serial, site, subject, bmd_a, bmd_b`.

    `phantom` (same model): each row one phantom scan on each unit (`subject` = scan number).
    `in_vivo` (different models): each row one patient scanned on both (`subject` = study code);
    device a is the old machine. Both devices need a precision study at the site (the LSC
    through a calibration is built from both units' precision)."""
    rows = list(read_rows(path, ("kind", "device_a_serial", "device_b_serial", "site", "subject", "bmd_a", "bmd_b")))
    groups: dict[tuple[str, int, int, str], list[tuple[float, float]]] = defaultdict(list)
    devices: dict[int, Device] = {}
    for row in rows:
        kind = row.values["kind"].lower().replace("-", "_")
        if kind not in ("phantom", "in_vivo"):
            raise ImportError_(f"{path}: line {row.line}: field kind: {kind!r} is not phantom or in_vivo")
        a = find_device(session, path, row, "device_a_serial")
        b = find_device(session, path, row, "device_b_serial")
        devices[a.id], devices[b.id] = a, b
        site = _site(path, row)
        groups[(kind, a.id, b.id, site)].append((_float(path, row, "bmd_a"), _float(path, row, "bmd_b")))
    out: list[CrossCalImport] = []
    for (kind, a_id, b_id, site), pairs in groups.items():
        note: str | None
        a, b = devices[a_id], devices[b_id]
        rms_a, rms_b = _rms_sd(session, a, site), _rms_sd(session, b, site)
        where = f"{path}: {kind} cross-calibration at {site}"
        if rms_a is None or rms_b is None:
            raise ImportError_(f"{where}: import a precision study for both machines at {site} first")
        try:
            if kind == "phantom":
                phantom = phantom_cross_calibration(
                    machine_from_device(a),
                    machine_from_device(b),
                    [site],
                    [p[0] for p in pairs],
                    [p[1] for p in pairs],
                    rms_sd_a=rms_a,
                    rms_sd_b=rms_b,
                    tolerance_percent=config.phantom_tolerance_percent,
                    min_scans=config.phantom_min_scans,
                )
                if phantom.record is None:
                    raise ImportError_(f"{where}: not accepted: {phantom.message}")
                record, note = phantom.record, (phantom.message or None)
            else:
                vivo = in_vivo_cross_calibration(
                    machine_from_device(a),
                    machine_from_device(b),
                    site,
                    [p[0] for p in pairs],
                    [p[1] for p in pairs],
                    rms_sd_old=rms_a,
                    rms_sd_new=rms_b,
                    min_patients=config.in_vivo_min_patients,
                    recommended_patients=config.in_vivo_recommended_patients,
                )
                record, note = vivo.record, vivo.note or None
        except CrossCalibrationError as exc:
            raise ImportError_(f"{where}: {exc}") from None
        lscs = dict(record.lsc_g_cm2)
        save_cross_calibration(
            session,
            a,
            b,
            kind=record.kind,
            sites=record.sites,
            lsc_g_cm2=lscs,
            slope=record.slope,
            intercept=record.intercept,
            performed_on=record.performed_on,
            notes=note,
        )
        out.append(CrossCalImport(kind, a, b, site, lscs.get(site, 0.0), record.slope, record.intercept, note))
    return out
