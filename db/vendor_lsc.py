"""The LSC each machine prints on its reports (`device_lscs`), kept from the files it sends.

A scanner prints the LSC of the facility's own precision study entered on it ("LSC is 0.022
g/cm²", "LSC=0.025 g/cm² for DualFemur Total Mean"). It is the machine's, not the patient's: a
value read from one patient's report applies to every patient scanned on that machine, when no
precision study was loaded here. The most recent exam's value wins (a facility repeats its study);
a new or changed value asks for the re-evaluation of the machine's patients. Nothing here commits.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from datetime import date

from sqlalchemy import select, tuple_
from sqlalchemy.orm import Session

from db.converters import machine_from_device
from db.inserts import insert_unless_exists
from db.models import Device, DeviceLsc, Exam
from monitor.model import VendorLsc


def lock_printed_lscs(session: Session, sites: Mapping[int, Collection[str]]) -> dict[int, dict[str, DeviceLsc]]:
    """The rows of these machines (id -> sites), locked in (machine, site) order by one statement
    (a batch's `db.reports.write_shared`, rather than a statement per machine or per site: each
    was a round trip of a Celery pool process's store, bench/pipeline.py --profile): machine id ->
    `record_printed_lscs`'s `locked`."""
    pairs = sorted((device_id, site) for device_id, names in sites.items() for site in names)
    out: dict[int, dict[str, DeviceLsc]] = {device_id: {} for device_id in sites}
    if not pairs:
        return out
    stmt = (
        select(DeviceLsc)
        .where(tuple_(DeviceLsc.device_id, DeviceLsc.site).in_(pairs))
        .order_by(DeviceLsc.device_id, DeviceLsc.site)
        .with_for_update()
    )
    for row in session.scalars(stmt):
        out[row.device_id][row.site] = row
    return out


def record_printed_lscs(
    session: Session,
    device: Device,
    printed: Iterable[tuple[str, float]],
    exam_date: date,
    source_file_id: int | None,
    *,
    locked: Mapping[str, DeviceLsc] | None = None,
) -> bool:
    """Keep what this file printed; True when a machine's LSC is new or changed (its patients'
    comparisons may change). `locked`: the device's rows of these sites, read and locked already
    (`lock_printed_lscs`); a site missing there has no row yet."""
    changed = False
    for site, lsc in printed:
        if lsc <= 0:
            continue
        if locked is not None:
            row = locked.get(site)
        else:
            row = session.scalars(
                select(DeviceLsc).where(DeviceLsc.device_id == device.id, DeviceLsc.site == site).with_for_update()
            ).one_or_none()
        if row is None:
            values = {
                "device_id": device.id,
                "site": site,
                "lsc_g_cm2": lsc,
                "exam_date": exam_date,
                "source_file_id": source_file_id,
            }
            if insert_unless_exists(session, DeviceLsc, values, ["device_id", "site"]) is not None:
                changed = True
                continue
            # Another transaction wrote it first (and has committed): compared like any row.
            row = session.scalars(
                select(DeviceLsc).where(DeviceLsc.device_id == device.id, DeviceLsc.site == site).with_for_update()
            ).one()
        if exam_date >= row.exam_date and abs(row.lsc_g_cm2 - lsc) > 1e-9:
            row.lsc_g_cm2, row.exam_date, row.source_file_id = lsc, exam_date, source_file_id
            changed = True
        elif exam_date > row.exam_date:
            row.exam_date, row.source_file_id = exam_date, source_file_id
    if changed:
        session.flush()
    return changed


def load_vendor_lscs(session: Session, device_ids: Iterable[int]) -> tuple[VendorLsc, ...]:
    ids = sorted(set(device_ids))
    if not ids:
        return ()
    rows = session.execute(
        select(DeviceLsc, Device).join(Device, Device.id == DeviceLsc.device_id).where(DeviceLsc.device_id.in_(ids))
    ).all()
    return tuple(
        VendorLsc(
            machine=machine_from_device(device),
            site=row.site,
            lsc_g_cm2=row.lsc_g_cm2,
            source_file=str(row.source_file_id) if row.source_file_id is not None else None,
        )
        for row, device in sorted(rows, key=lambda r: (r[0].device_id, r[0].site))
    )


def patients_on_device(session: Session, device_id: int) -> list[int]:
    return list(session.scalars(select(Exam.patient_id).where(Exam.device_id == device_id).distinct()))
