"""Small builders for parsed reports and evaluations used by the db tests."""

from __future__ import annotations

import hashlib
from datetime import date

from ingest.report import DeviceIdentity, ParsedReport, PatientInfo, SiteMeasurement
from monitor.model import Alert, Comparison, NextScan, PatientEvaluation

HOLOGIC = DeviceIdentity("HOLOGIC", "Horizon A", "302081M", "13.6.0.5")
HOLOGIC_OTHER = DeviceIdentity("HOLOGIC", "Horizon A", "300001M")
HOLOGIC_WEAK = DeviceIdentity("Hologic", "Horizon A", None)
GE = DeviceIdentity("GE Healthcare", "Lunar iDXA", "200123")


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def site(name: str, bmd: float, side: str | None = None, **kw: float | str | None) -> SiteMeasurement:
    return SiteMeasurement(site=name, side=side, bmd=bmd, **kw)  # type: ignore[arg-type]


def report(
    *sites: SiteMeasurement,
    patient: str = "P1",
    on: date = date(2020, 1, 10),
    device: DeviceIdentity = HOLOGIC,
    scan_type: str = "spine",
    fmt: str = "hologic_apex_dicom",
    uid: str | None = None,
) -> ParsedReport:
    return ParsedReport(
        format=fmt,
        patient=PatientInfo(patient_id=patient, name="Test^Person", birth_date=date(1950, 5, 1), sex="F"),
        exam_date=on,
        device=device,
        scan_type=scan_type,
        measurements=tuple(sites),
        sop_instance_uid=uid,
    )


SPINE = (site("L1-L4", 0.900, t_score=-1.5, z_score=-0.5, area_cm2=60.1), site("L1", 0.850))
HIP = (
    site("femoral_neck", 0.700, "left", t_score=-2.0),
    site("total_hip", 0.800, "left", t_score=-1.4),
)


def comparison(
    from_exam: str, to_exam: str, *, status: str = "ok", reference: str = "previous", site_name: str = "L1-L4"
) -> Comparison:
    ok = status.startswith("ok")
    return Comparison(
        site=site_name,
        side=None,
        from_exam=from_exam,
        to_exam=to_exam,
        reference=reference,  # type: ignore[arg-type]
        status=status,  # type: ignore[arg-type]
        delta_g_cm2=0.05 if ok else None,
        percent_change=5.56 if ok else None,
        lsc_g_cm2=0.03 if ok else None,
        lsc_source="study" if ok else None,
        significance="gain" if ok else None,
        dissimilar=False,
        reason=None if ok else "different machines: HOLOGIC Horizon A (S/N 1) vs GE Lunar iDXA (S/N 2)",
    )


def evaluation(
    *comparisons: Comparison, due: date | None = date(2022, 1, 10), alerts: tuple[Alert, ...] = ()
) -> PatientEvaluation:
    return PatientEvaluation(
        comparisons=tuple(comparisons),
        next_scan=NextScan(due=due, rule_id="oral_bisphosphonate_followup", reason="Every 24 months.", alerts=alerts),
        who_category="low_bone_mass",
    )
