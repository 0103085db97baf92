"""The one entry point the workers call: a patient's history in, everything derived out."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

from monitor.comparisons import compare_history
from monitor.config import MonitoringConfig
from monitor.model import DRUG_CLASSES, CrossCalibration, Exam, PatientEvaluation, SiteLsc, Therapy, VendorLsc
from monitor.schedule import next_scan
from monitor.who import classify_history


def evaluate_patient(
    exams: Sequence[Exam],
    therapies: Sequence[Therapy],
    lscs: Sequence[SiteLsc],
    crosscals: Sequence[CrossCalibration],
    config: MonitoringConfig,
    today: date,
    *,
    birth_date: date | None = None,
    vendor_lscs: Sequence[VendorLsc] = (),
) -> PatientEvaluation:
    """Comparisons, WHO category, next scan and alerts for one patient.

    Pure and deterministic: the same inputs (including `today`) give the same output, so a job
    that runs twice writes the same rows. Exams dated after `today` are ignored (a clock or
    data error should not schedule from the future). `birth_date` decides whether the WHO
    categories apply at each exam (see `monitor.who`). `vendor_lscs`: what the patient's machines
    printed as their LSC, used where no precision study was loaded here.
    """
    for t in therapies:
        if t.drug_class not in DRUG_CLASSES:
            raise ValueError(f"therapy has unknown drug class {t.drug_class!r}")
    ids = [e.exam_id for e in exams]
    if len(set(ids)) != len(ids):
        raise ValueError("exam ids must be unique within a patient")
    history = [e for e in exams if e.date <= today]
    comparisons = compare_history(history, lscs, crosscals, config, vendor_lscs)
    who = classify_history(history, config, birth_date)
    scan = next_scan(history, comparisons, therapies, config, today)
    return PatientEvaluation(
        comparisons=comparisons,
        next_scan=scan,
        who_category=who.category,
        z_below_expected=who.z_below_expected,
        alerts=scan.alerts,
    )
