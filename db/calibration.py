"""Precision studies (raw repeats kept) and cross-calibrations, and their monitor views.

The RMS-SD and LSC of a study are computed by `monitor.precision` from the raw repeats; this
module stores what the caller computed (so the QA page shows the figures that were accepted)
and, given a calculator, can recompute them from the raw rows when loading.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any, Literal, TypeVar

from sqlalchemy import select
from sqlalchemy.orm import Session, aliased, selectinload

from db.converters import cross_calibration_to_domain
from db.models import CrossCalibrationRow, Device, PrecisionMeasurement, PrecisionStudy
from monitor.model import CrossCalibration, Machine, SiteLsc


@dataclass(frozen=True)
class PrecisionRepeat:
    """One scan of a precision study: the technologist, the study subject's code (not a patient
    identifier), which repeat it was, and the BMD in g/cm²."""

    technologist: str
    patient_code: str
    scan_index: int
    bmd: float


# Raw repeats of one device and site -> (RMS-SD g/cm², LSC g/cm²).
PrecisionCalculator = Callable[[Sequence[PrecisionRepeat]], tuple[float, float]]


def save_precision_study(
    session: Session,
    device: Device,
    site: str,
    repeats: Iterable[PrecisionRepeat],
    *,
    rms_sd_g_cm2: float | None = None,
    lsc_g_cm2: float | None = None,
    performed_on: date | None = None,
    notes: str | None = None,
) -> PrecisionStudy:
    study = PrecisionStudy(
        device_id=device.id,
        site=site,
        performed_on=performed_on,
        rms_sd_g_cm2=rms_sd_g_cm2,
        lsc_g_cm2=lsc_g_cm2,
        notes=notes,
    )
    for r in repeats:
        if r.bmd <= 0:
            raise ValueError("precision BMD must be positive")
        study.measurements.append(
            PrecisionMeasurement(
                technologist=r.technologist, patient_code=r.patient_code, scan_index=r.scan_index, bmd=r.bmd
            )
        )
    session.add(study)
    session.flush()
    return study


def study_repeats(study: PrecisionStudy) -> tuple[PrecisionRepeat, ...]:
    return tuple(PrecisionRepeat(m.technologist, m.patient_code, m.scan_index, m.bmd) for m in study.measurements)


def latest_studies(session: Session, *, device_ids: Iterable[int] | None = None) -> list[PrecisionStudy]:
    """The study in force per (device, site): the latest performed (undated ones count as
    oldest), the last entered among equals."""
    stmt = select(PrecisionStudy).options(
        selectinload(PrecisionStudy.measurements), selectinload(PrecisionStudy.device)
    )
    if device_ids is not None:
        stmt = stmt.where(PrecisionStudy.device_id.in_(list(device_ids)))
    chosen = _in_force(session.scalars(stmt))
    return [chosen[k] for k in sorted(chosen)]


_S = TypeVar("_S")


def _in_force(studies: Iterable[_S]) -> dict[tuple[int, str], _S]:
    """By (device, site), the study in force among these (ORM rows or plain rows of their columns):
    the latest performed (undated ones count as oldest), the last entered among equals."""
    chosen: dict[tuple[int, str], _S] = {}
    for one in studies:
        study: Any = one  # a PrecisionStudy or a Row of its columns
        key = (study.device_id, study.site)
        best: Any = chosen.get(key)
        if best is None or (study.performed_on or date.min, study.id) > (best.performed_on or date.min, best.id):
            chosen[key] = one
    return chosen


def load_site_lscs(
    session: Session,
    *,
    calculator: PrecisionCalculator | None = None,
    device_ids: Iterable[int] | None = None,
) -> tuple[SiteLsc, ...]:
    """Per machine and site LSCs for the monitor. With a calculator they are recomputed from the
    raw repeats; otherwise, or for a study stored with its figures only, the stored figures are
    used, and studies without them are skipped (the monitor then falls back to its default LSC,
    saying so). The study in force as `latest_studies` picks it, read as plain rows, and only its
    repeats (each batch of evaluations asks: ORM objects of every study and repeat cost more
    than the rest of loading the batch's histories)."""
    stmt = select(
        PrecisionStudy.id,
        PrecisionStudy.device_id,
        PrecisionStudy.site,
        PrecisionStudy.performed_on,
        PrecisionStudy.rms_sd_g_cm2,
        PrecisionStudy.lsc_g_cm2,
        Device.manufacturer,
        Device.model,
        Device.serial,
    ).join(Device, Device.id == PrecisionStudy.device_id)
    if device_ids is not None:
        stmt = stmt.where(PrecisionStudy.device_id.in_(list(device_ids)))
    chosen = _in_force(session.execute(stmt))
    repeats: dict[int, list[PrecisionRepeat]] = {}
    if calculator is not None and chosen:
        for r in session.execute(
            select(
                PrecisionMeasurement.study_id,
                PrecisionMeasurement.technologist,
                PrecisionMeasurement.patient_code,
                PrecisionMeasurement.scan_index,
                PrecisionMeasurement.bmd,
            )
            .where(PrecisionMeasurement.study_id.in_([study.id for study in chosen.values()]))
            .order_by(  # the order of `PrecisionStudy.measurements`
                PrecisionMeasurement.study_id,
                PrecisionMeasurement.technologist,
                PrecisionMeasurement.patient_code,
                PrecisionMeasurement.scan_index,
            )
        ):
            repeats.setdefault(r.study_id, []).append(
                PrecisionRepeat(r.technologist, r.patient_code, r.scan_index, r.bmd)
            )
    out: list[SiteLsc] = []
    for key in sorted(chosen):
        study = chosen[key]
        own = tuple(repeats.get(study.id, ()))
        if calculator is not None and own:
            rms_sd, lsc = calculator(own)
        elif study.rms_sd_g_cm2 is not None and study.lsc_g_cm2 is not None:
            rms_sd, lsc = study.rms_sd_g_cm2, study.lsc_g_cm2
        else:
            continue
        machine = Machine(manufacturer=study.manufacturer, model=study.model, serial=study.serial)
        out.append(SiteLsc(machine=machine, site=study.site, lsc_g_cm2=lsc, rms_sd_g_cm2=rms_sd))
    return tuple(out)


def save_cross_calibration(
    session: Session,
    device_a: Device,
    device_b: Device,
    *,
    kind: Literal["phantom", "in_vivo"],
    sites: Iterable[str],
    lsc_g_cm2: Mapping[str, float] | None = None,
    slope: float = 1.0,
    intercept: float = 0.0,
    performed_on: date | None = None,
    notes: str | None = None,
) -> CrossCalibrationRow:
    if device_a.id == device_b.id:
        raise ValueError("a cross-calibration needs two different devices")
    if device_a.identity_strength != "serial" or device_b.identity_strength != "serial":
        raise ValueError("a cross-calibration needs two devices with serial numbers")
    site_list = sorted(set(sites))
    lscs = {str(k): float(v) for k, v in (lsc_g_cm2 or {}).items()}
    if not set(lscs) <= set(site_list):
        raise ValueError("LSC given for a site the cross-calibration does not cover")
    row = CrossCalibrationRow(
        device_a_id=device_a.id,
        device_b_id=device_b.id,
        kind=kind,
        sites=site_list,
        lsc_g_cm2=lscs,
        slope=slope,
        intercept=intercept,
        performed_on=performed_on,
        notes=notes,
    )
    session.add(row)
    session.flush()
    return row


def load_cross_calibrations(
    session: Session, *, device_ids: Iterable[int] | None = None
) -> tuple[CrossCalibration, ...]:
    """Cross-calibrations (any involving one of `device_ids`, when given) in the monitor's shape,
    read with their two machines by one query of plain rows (each batch of evaluations asks)."""
    a, b = aliased(Device), aliased(Device)
    stmt = (
        select(
            CrossCalibrationRow.kind,
            CrossCalibrationRow.sites,
            CrossCalibrationRow.lsc_g_cm2,
            CrossCalibrationRow.slope,
            CrossCalibrationRow.intercept,
            CrossCalibrationRow.performed_on,
            a.manufacturer.label("a_manufacturer"),
            a.model.label("a_model"),
            a.serial.label("a_serial"),
            b.manufacturer.label("b_manufacturer"),
            b.model.label("b_model"),
            b.serial.label("b_serial"),
        )
        .join(a, a.id == CrossCalibrationRow.device_a_id)
        .join(b, b.id == CrossCalibrationRow.device_b_id)
        .order_by(CrossCalibrationRow.id)
    )
    if device_ids is not None:
        ids = list(device_ids)
        stmt = stmt.where(CrossCalibrationRow.device_a_id.in_(ids) | CrossCalibrationRow.device_b_id.in_(ids))
    return tuple(
        cross_calibration_to_domain(
            r, Machine(r.a_manufacturer, r.a_model, r.a_serial), Machine(r.b_manufacturer, r.b_model, r.b_serial)
        )
        for r in session.execute(stmt)
    )
