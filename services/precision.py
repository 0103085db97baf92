"""Precision studies: one CSV layout, computed and saved the same way from `dxa precision import`
and from the QA page's calculator (preview first, save what was previewed).

CSV: `device_serial, site, technologist, patient` and either `bmd` (one row per scan) or `bmd_1,
bmd_2, …` (one row per patient). On the page the machine and site are chosen on the form, so
those two columns may be left out there (a filled one must agree with the choice). One study per
machine and site; every technologist's scans are pooled into the facility's RMS-SD and LSC
(`monitor.precision.facility_study`). Saving a study queues the re-evaluation of every patient
scanned on that machine: a new LSC can turn a stable change into a significant one.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.calibration import PrecisionRepeat, save_precision_study
from db.converters import machine_from_device
from db.models import Device, Exam
from monitor.config import MonitoringConfig
from monitor.precision import FacilityStudy, PrecisionResult, facility_study
from services.audit import CLI, Actor, record
from services.context import Context
from services.csv_rows import (
    ImportError_,
    Row,
    Source,
    bmd_field,
    find_device,
    parse_rows,
    read_text,
    refusal,
    site_field,
)
from services.queue import unit_of_work

COLUMNS = ("device_serial", "site", "technologist", "patient")
MAX_ROWS = 10_000


@dataclass(frozen=True)
class PrecisionPreview:
    """One machine's study at one site, computed and not saved."""

    device: Device
    site: str
    repeats: tuple[PrecisionRepeat, ...]
    study: FacilityStudy

    @property
    def facility(self) -> PrecisionResult | None:
        return self.study.facility

    @property
    def technologists(self) -> dict[str, PrecisionResult]:
        return {t.technologist: t.result for t in self.study.technologists if t.result is not None}

    @property
    def warnings(self) -> list[str]:
        over = [f"technologist {t.technologist}: {t.check.message}" for t in self.study.over_limit if t.check]
        return over + [f"technologist {t.technologist}: {t.error}" for t in self.study.technologists if t.error]


def study_of(site: str, repeats: Iterable[PrecisionRepeat], config: MonitoringConfig) -> FacilityStudy:
    """The facility study of some repeat scans (stored ones too, for the QA page's checks)."""
    scans: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in sorted(repeats, key=lambda r: (r.technologist, r.patient_code, r.scan_index)):
        scans[r.technologist][r.patient_code].append(r.bmd)
    return facility_study(site, scans, config)


def _bmd_fields(path: Source, row: Row) -> list[str]:
    if row.values.get("bmd"):
        return ["bmd"]
    numbered = [k for k in row.values if k.startswith("bmd_") and k[4:].isdigit() and row.values[k]]
    if not numbered:
        raise refusal("csv_field_empty", path, row, field="bmd")
    return sorted(numbered, key=lambda k: int(k[4:]))


def _chosen(path: Source, row: Row, field: str, chosen: str | None, found: str) -> None:
    if chosen is not None and row.values.get(field) and found != chosen:
        raise ImportError_(f"{path}: line {row.line}: field {field}: not the {field.split('_')[0]} chosen on the form")


def preview_precision(
    session: Session,
    text: str,
    path: Source,
    config: MonitoringConfig,
    *,
    device: Device | None = None,
    site: str | None = None,
) -> list[PrecisionPreview]:
    """Parse a precision CSV and compute each (machine, site) study; writes nothing. A bad row
    raises `ImportError_`; a study that cannot give an LSC comes back with `facility` None and its
    `study.error` set. `device` and `site`, when given, fill missing or empty columns."""
    required = tuple(c for c in COLUMNS if not (c == "device_serial" and device) and not (c == "site" and site))
    rows = list(parse_rows(text, path, required))
    if not rows:
        raise refusal("csv_no_rows", path)
    if len(rows) > MAX_ROWS:
        raise refusal("csv_too_many_rows", path, limit=MAX_ROWS)
    groups: dict[tuple[int, str], list[PrecisionRepeat]] = defaultdict(list)
    devices: dict[int, Device] = {}
    counters: dict[tuple[int, str, str, str], int] = defaultdict(int)
    for row in rows:
        row_device = device if device is not None and not row.values.get("device_serial") else None
        row_device = row_device or find_device(session, path, row, "device_serial")
        _chosen(path, row, "device_serial", str(device.id) if device else None, str(row_device.id))
        row_site = site if site is not None and not row.values.get("site") else site_field(path, row)
        _chosen(path, row, "site", site, row_site)
        devices[row_device.id] = row_device
        tech, patient = row.values.get("technologist", ""), row.values.get("patient", "")
        if not tech or not patient:
            raise refusal("csv_technologist_patient", path, row)
        for field in _bmd_fields(path, row):
            key = (row_device.id, row_site, tech, patient)
            counters[key] += 1
            repeat = PrecisionRepeat(tech, patient, counters[key], bmd_field(path, row, field))
            groups[(row_device.id, row_site)].append(repeat)
    return [
        PrecisionPreview(devices[device_id], group_site, tuple(repeats), study_of(group_site, repeats, config))
        for (device_id, group_site), repeats in groups.items()
    ]


def _save(session: Session, previews: list[PrecisionPreview], path: Source, performed_on: date | None) -> None:
    for p in previews:
        if p.facility is None:
            label = machine_from_device(p.device).label()
            raise ImportError_(f"{path}: study for {label} at {p.site}: {p.study.error}")
    for p in previews:
        assert p.facility is not None
        save_precision_study(
            session,
            p.device,
            p.site,
            p.repeats,
            rms_sd_g_cm2=p.facility.rms_sd_g_cm2,
            lsc_g_cm2=p.facility.lsc_g_cm2,
            performed_on=performed_on,
            notes=p.facility.note,
        )


def save_precision(
    ctx: Context,
    actor: Actor,
    text: str,
    path: Source,
    *,
    device_id: int | None = None,
    site: str | None = None,
    performed_on: date | None = None,
) -> list[PrecisionPreview]:
    """Compute and save every study of the CSV, all or none (`ImportError_` names the first that
    cannot be saved), and queue the re-evaluation of the patients scanned on those machines."""
    with unit_of_work(ctx) as work:
        session = work.session
        device = session.get(Device, device_id) if device_id is not None else None
        if device_id is not None and device is None:
            raise LookupError("no such device")
        previews = preview_precision(session, text, path, ctx.monitoring, device=device, site=site)
        _save(session, previews, path, performed_on)
        for p in previews:
            record(session, actor, "precision_study_saved", None, device=p.device.id, site=p.site)
        device_ids = sorted({p.device.id for p in previews})
        work.queue_evaluations(
            session.scalars(select(Exam.patient_id).where(Exam.device_id.in_(device_ids)).distinct())
        )
    return previews


def import_precision(ctx: Context, path: Path, actor: Actor = CLI) -> list[PrecisionPreview]:
    """`dxa precision import FILE.csv`."""
    return save_precision(ctx, actor, read_text(path), path)
