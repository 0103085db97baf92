"""CSV imports for the command line: therapies, precision studies, cross-calibrations.

Every file is read and checked whole before anything is written, and written in one
transaction: a bad row gives an error naming the file, line and field, and nothing is
half-imported.

The cross-calibration import is split into `preview_crosscal` (parse and compute, write
nothing) and `save_crosscal`, so the QA page's calculator shows and saves exactly what
`dxa crosscal import` would: one computation for both. Nothing here knows about the web.
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.calibration import PrecisionRepeat, latest_studies, save_cross_calibration, save_precision_study
from db.converters import machine_from_device
from db.exams import find_patient, upsert_patient
from db.models import Device
from db.therapies import replace_therapies
from ingest.report import PatientInfo
from ingest.vocabulary import canonical_site
from monitor.config import MonitoringConfig
from monitor.crosscal import (
    CrossCalibrationError,
    InVivoResult,
    PhantomResult,
    in_vivo_cross_calibration,
    phantom_cross_calibration,
)
from monitor.drugs import UnknownAgent, therapy_from_agent
from monitor.model import CrossCalibration, Therapy
from monitor.precision import PrecisionResult, facility_study


class ImportError_(ValueError):
    """A row that cannot be imported; the message names file, line and field."""


# What error messages name: the file's path, or a label for text that came from elsewhere (an upload).
Source = str | Path


@dataclass(frozen=True)
class Row:
    line: int
    values: dict[str, str]


def read_rows(path: Path, required: tuple[str, ...]) -> Iterator[Row]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ImportError_(f"{path}: cannot read the file ({exc})") from exc
    return parse_rows(text, path, required)


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


def _date(path: Source, row: Row, field: str, *, required: bool) -> date | None:
    text = row.values.get(field, "")
    if not text:
        if required:
            raise ImportError_(f"{path}: line {row.line}: field {field} is empty")
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise ImportError_(f"{path}: line {row.line}: field {field}: {text!r} is not a date (YYYY-MM-DD)") from None


def _float(path: Source, row: Row, field: str) -> float:
    text = row.values.get(field, "")
    try:
        value = float(text.replace(",", "."))
    except ValueError:
        raise ImportError_(f"{path}: line {row.line}: field {field}: {text!r} is not a number") from None
    if value <= 0:
        raise ImportError_(f"{path}: line {row.line}: field {field}: BMD must be positive")
    return value


def _site(path: Source, row: Row, field: str = "site") -> str:
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
        scans: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
        for r in repeats:
            scans[r.technologist][r.patient_code].append(r.bmd)
        study = facility_study(site, scans, config)
        facility = study.facility
        if facility is None:
            label = machine_from_device(devices[device_id]).label()
            raise ImportError_(f"{path}: study for {label} at {site}: {study.error}")
        per_tech = {t.technologist: t.result for t in study.technologists if t.result is not None}
        warnings = [f"technologist {t.technologist}: {t.check.message}" for t in study.over_limit if t.check]
        warnings += [f"technologist {t.technologist}: {t.error}" for t in study.technologists if t.error]
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

CROSSCAL_COLUMNS = ("kind", "device_a_serial", "device_b_serial", "site", "subject", "bmd_a", "bmd_b")
CrossCalKind = Literal["phantom", "in_vivo"]
CROSSCAL_KINDS: tuple[CrossCalKind, ...] = ("phantom", "in_vivo")


@dataclass(frozen=True)
class CrossCalPreview:
    """One cross-calibration (kind, two machines, one site) computed from the CSV, not saved: every
    figure the QA calculator shows and the CLI prints. `error` says why it cannot be saved (no
    precision study, too few scans, phantom means beyond the tolerance…); the figures that could
    be computed are still there, so QA sees how far off a phantom was."""

    kind: CrossCalKind
    device_a: Device  # phantom: first unit; in vivo: the old machine
    device_b: Device  # phantom: second unit; in vivo: the new machine
    site: str
    bmd_a: tuple[float, ...]
    bmd_b: tuple[float, ...]
    rms_sd_a: float | None  # from the unit's latest precision study at the site
    rms_sd_b: float | None
    tolerance_percent: float
    recommended_patients: int
    phantom: PhantomResult | None
    in_vivo: InVivoResult | None
    error: str | None

    @property
    def count(self) -> int:
        """Phantom scans per unit, or patients scanned on both machines."""
        return len(self.bmd_a)

    @property
    def mean_a(self) -> float:
        return sum(self.bmd_a) / len(self.bmd_a)

    @property
    def mean_b(self) -> float:
        return sum(self.bmd_b) / len(self.bmd_b)

    @property
    def record(self) -> CrossCalibration | None:
        if self.error is not None:
            return None
        if self.phantom is not None:
            return self.phantom.record
        return self.in_vivo.record if self.in_vivo is not None else None

    @property
    def saveable(self) -> bool:
        return self.record is not None

    @property
    def lsc_g_cm2(self) -> float | None:
        """Phantom: the two units' pooled LSC; in vivo: the generalized LSC (new machine's units)."""
        if self.phantom is not None:
            return self.phantom.pooled_lsc_g_cm2
        return self.in_vivo.glsc_g_cm2 if self.in_vivo is not None else None

    @property
    def lsc_percent(self) -> float | None:
        """The LSC as a percentage of the mean BMD on device b (the new machine for in vivo)."""
        return None if self.lsc_g_cm2 is None else 100.0 * self.lsc_g_cm2 / self.mean_b

    @property
    def slope(self) -> float:
        return self.in_vivo.slope if self.in_vivo is not None else 1.0

    @property
    def intercept(self) -> float:
        return self.in_vivo.intercept if self.in_vivo is not None else 0.0

    @property
    def note(self) -> str | None:
        """What is stored with the record: the phantom verdict, or the in-vivo sample-size warning."""
        if self.phantom is not None:
            return self.phantom.message or None
        return self.in_vivo.note if self.in_vivo is not None else None

    def where(self, path: Source) -> str:
        return f"{path}: {self.kind} cross-calibration at {self.site}"


def _rms_sd(session: Session, device: Device, site: str) -> float | None:
    for study in latest_studies(session, device_ids=[device.id]):
        if study.site == site and study.rms_sd_g_cm2 is not None:
            return study.rms_sd_g_cm2
    return None


def _crosscal_kind(path: Source, row: Row, chosen: CrossCalKind | None) -> CrossCalKind:
    text = row.values.get("kind", "").lower().replace("-", "_").replace(" ", "_")
    if not text and chosen is not None:
        return chosen
    for kind in CROSSCAL_KINDS:
        if text == kind:
            if chosen is not None and kind != chosen:
                raise ImportError_(f"{path}: line {row.line}: field kind: {kind!r}, but {chosen!r} was chosen")
            return kind
    raise ImportError_(f"{path}: line {row.line}: field kind: {text!r} is not phantom or in_vivo")


def preview_crosscal(
    session: Session,
    text: str,
    path: Source,
    config: MonitoringConfig | None,
    *,
    kind: CrossCalKind | None = None,
    performed_on: date | None = None,
) -> list[CrossCalPreview]:
    """Parse a cross-calibration CSV and compute each (kind, device a, device b, site) group;
    writes nothing. A bad row (unknown serial, site, number) raises `ImportError_`; a group that
    cannot be used comes back with its `error` set. `kind`, when given, fills an empty or missing
    kind column (and must agree with a filled one)."""
    limits = config if config is not None else MonitoringConfig(rules={})
    required = CROSSCAL_COLUMNS if kind is None else CROSSCAL_COLUMNS[1:]
    rows = list(parse_rows(text, path, required))
    if not rows:
        raise ImportError_(f"{path}: the file has no rows")
    groups: dict[tuple[CrossCalKind, int, int, str], list[tuple[float, float]]] = defaultdict(list)
    devices: dict[int, Device] = {}
    for row in rows:
        row_kind = _crosscal_kind(path, row, kind)
        a = find_device(session, path, row, "device_a_serial")
        b = find_device(session, path, row, "device_b_serial")
        devices[a.id], devices[b.id] = a, b
        site = _site(path, row)
        groups[(row_kind, a.id, b.id, site)].append((_float(path, row, "bmd_a"), _float(path, row, "bmd_b")))
    out: list[CrossCalPreview] = []
    for (group_kind, a_id, b_id, site), pairs in groups.items():
        a, b = devices[a_id], devices[b_id]
        bmd_a, bmd_b = tuple(p[0] for p in pairs), tuple(p[1] for p in pairs)
        rms_a, rms_b = _rms_sd(session, a, site), _rms_sd(session, b, site)
        phantom: PhantomResult | None = None
        vivo: InVivoResult | None = None
        error: str | None = None
        try:
            if rms_a is None or rms_b is None:
                missing = [machine_from_device(d).label() for d, rms in ((a, rms_a), (b, rms_b)) if rms is None]
                error = (
                    f"no precision study at {site} for {' or '.join(missing)}: "
                    "both machines need one before a cross-calibration"
                )
            elif group_kind == "phantom":
                phantom = phantom_cross_calibration(
                    machine_from_device(a),
                    machine_from_device(b),
                    [site],
                    bmd_a,
                    bmd_b,
                    rms_sd_a=rms_a,
                    rms_sd_b=rms_b,
                    tolerance_percent=limits.phantom_tolerance_percent,
                    min_scans=limits.phantom_min_scans,
                    performed_on=performed_on,
                )
                if phantom.record is None:
                    error = f"not accepted: {phantom.message}"
            else:
                vivo = in_vivo_cross_calibration(
                    machine_from_device(a),
                    machine_from_device(b),
                    site,
                    bmd_a,
                    bmd_b,
                    rms_sd_old=rms_a,
                    rms_sd_new=rms_b,
                    min_patients=limits.in_vivo_min_patients,
                    recommended_patients=limits.in_vivo_recommended_patients,
                    performed_on=performed_on,
                )
        except CrossCalibrationError as exc:
            error = str(exc)
        out.append(
            CrossCalPreview(
                kind=group_kind,
                device_a=a,
                device_b=b,
                site=site,
                bmd_a=bmd_a,
                bmd_b=bmd_b,
                rms_sd_a=rms_a,
                rms_sd_b=rms_b,
                tolerance_percent=limits.phantom_tolerance_percent,
                recommended_patients=limits.in_vivo_recommended_patients,
                phantom=phantom,
                in_vivo=vivo,
                error=error,
            )
        )
    return out


def save_crosscal(session: Session, previews: list[CrossCalPreview], path: Source) -> None:
    """Store every previewed cross-calibration, or none: the first one that cannot be saved raises."""
    for preview in previews:
        if preview.error is not None:
            raise ImportError_(f"{preview.where(path)}: {preview.error}")
    for preview in previews:
        record = preview.record
        assert record is not None  # no error, so computed
        save_cross_calibration(
            session,
            preview.device_a,
            preview.device_b,
            kind=record.kind,
            sites=record.sites,
            lsc_g_cm2=dict(record.lsc_g_cm2),
            slope=record.slope,
            intercept=record.intercept,
            performed_on=record.performed_on,
            notes=preview.note,
        )


def import_crosscal(session: Session, path: Path, config: MonitoringConfig) -> list[CrossCalPreview]:
    """`kind, device_a_serial, device_b_serial, site, subject, bmd_a, bmd_b`.

    `phantom` (same model): each row one phantom scan on each unit (`subject` = scan number).
    `in_vivo` (different models): each row one patient scanned on both (`subject` = study code);
    device a is the old machine. Both devices need a precision study at the site (the LSC
    through a calibration is built from both units' precision)."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ImportError_(f"{path}: cannot read the file ({exc})") from exc
    previews = preview_crosscal(session, text, path, config)
    save_crosscal(session, previews, path)
    return previews
