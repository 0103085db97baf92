"""Cross-calibrations: one CSV layout, computed and saved the same way from `dxa crosscal import`
and from the QA page's calculator (preview first, save exactly what was previewed).

CSV: `kind, device_a_serial, device_b_serial, site, subject, bmd_a, bmd_b`. `phantom` (same model):
each row one phantom scan on each unit (`subject` = scan number). `in_vivo` (different models):
each row one patient scanned on both (`subject` = study code); device a is the old machine. Both
devices need a precision study at the site (the LSC through a calibration is built from both
units' precision). Saving queues the re-evaluation of the patients scanned on both machines: their
refused comparisons may now be allowed.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.calibration import latest_studies, save_cross_calibration
from db.converters import machine_from_device
from db.models import Device, Exam
from monitor.config import MonitoringConfig
from monitor.crosscal import (
    CrossCalibrationError,
    InVivoResult,
    PhantomResult,
    in_vivo_cross_calibration,
    phantom_cross_calibration,
)
from monitor.model import CrossCalibration
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
    config: MonitoringConfig,
    *,
    kind: CrossCalKind | None = None,
    performed_on: date | None = None,
) -> list[CrossCalPreview]:
    """Parse a cross-calibration CSV and compute each (kind, device a, device b, site) group;
    writes nothing. A bad row (unknown serial, site, number) raises `ImportError_`; a group that
    cannot be used comes back with its `error` set. `kind`, when given, fills an empty or missing
    kind column (and must agree with a filled one)."""
    limits = config
    required = CROSSCAL_COLUMNS if kind is None else CROSSCAL_COLUMNS[1:]
    rows = list(parse_rows(text, path, required))
    if not rows:
        raise refusal("csv_no_rows", path)
    groups: dict[tuple[CrossCalKind, int, int, str], list[tuple[float, float]]] = defaultdict(list)
    devices: dict[int, Device] = {}
    for row in rows:
        row_kind = _crosscal_kind(path, row, kind)
        a = find_device(session, path, row, "device_a_serial")
        b = find_device(session, path, row, "device_b_serial")
        devices[a.id], devices[b.id] = a, b
        site = site_field(path, row)
        groups[(row_kind, a.id, b.id, site)].append((bmd_field(path, row, "bmd_a"), bmd_field(path, row, "bmd_b")))
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


def patients_on_both(session: Session, previews: list[CrossCalPreview]) -> list[int]:
    """Patients with exams on both machines of a cross-calibration: the only ones whose
    comparisons it can change, so the only ones to re-evaluate."""
    found: set[int] = set()
    for preview in previews:
        on_a = set(session.scalars(select(Exam.patient_id).where(Exam.device_id == preview.device_a.id)))
        on_b = set(session.scalars(select(Exam.patient_id).where(Exam.device_id == preview.device_b.id)))
        found |= on_a & on_b
    return sorted(found)


@dataclass(frozen=True)
class CrossCalSaved:
    previews: list[CrossCalPreview]
    patients_queued: int


def save_crosscal(
    ctx: Context,
    actor: Actor,
    text: str,
    path: Source,
    *,
    kind: CrossCalKind | None = None,
    performed_on: date | None = None,
) -> CrossCalSaved:
    """Compute and store every cross-calibration of the CSV, or none (`ImportError_` names the
    first that cannot be saved); audit each and queue the patients scanned on both machines."""
    with unit_of_work(ctx) as work:
        session = work.session
        previews = preview_crosscal(session, text, path, ctx.monitoring, kind=kind, performed_on=performed_on)
        for preview in previews:
            if preview.error is not None:
                raise ImportError_(f"{preview.where(path)}: {preview.error}")
        for preview in previews:
            record_ = preview.record
            assert record_ is not None  # no error, so computed
            save_cross_calibration(
                session,
                preview.device_a,
                preview.device_b,
                kind=record_.kind,
                sites=record_.sites,
                lsc_g_cm2=dict(record_.lsc_g_cm2),
                slope=record_.slope,
                intercept=record_.intercept,
                performed_on=record_.performed_on,
                notes=preview.note,
            )
            record(
                session,
                actor,
                "cross_calibration_saved",
                None,
                kind=preview.kind,
                device_a=preview.device_a.id,
                device_b=preview.device_b.id,
                site=preview.site,
                lsc_g_cm2=preview.lsc_g_cm2,
            )
        queued = work.queue_evaluations(patients_on_both(session, previews))
    return CrossCalSaved(previews, queued)


def import_crosscal(ctx: Context, path: Path, actor: Actor = CLI) -> CrossCalSaved:
    """`dxa crosscal import FILE.csv`."""
    return save_crosscal(ctx, actor, read_text(path), path)
