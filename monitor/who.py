"""WHO densitometric category, for display (never trended: T-scores are not compared).

ISCD 2019: classify on the lowest T-score of the lumbar spine (the analysed L1-L4 range),
femoral neck and total hip; the 1/3 radius is used only when those cannot be. A diagnosis of
osteoporosis, once made, is kept even if a later T-score is higher (treatment raises BMD; the
fracture risk stays).

The T-score thresholds apply to postmenopausal women and men aged 50 and over. ISCD 2019: for
premenopausal women, men under 50 and children the WHO classification must not be used; the
Z-score is read instead ("below the expected range for age" at Z <= -2.0). Menopausal status is
not in any DXA file we read, so age at the scan (`who.min_age_years`, 50) is the proxy; when the
birth date is unknown the T-score categories are given, as the vendors' own reports do.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

from monitor.comparisons import analysed_vertebral_set
from monitor.config import MonitoringConfig
from monitor.model import Exam, Measurement

NORMAL = "normal"
LOW_BONE_MASS = "low_bone_mass"
OSTEOPOROSIS = "osteoporosis"
#: The patient was younger than `who.min_age_years` at the scan: no WHO category, Z-score only.
Z_SCORE_ONLY = "z_score_only"

_CENTRAL = ("femoral_neck", "total_hip")


@dataclass(frozen=True)
class WhoResult:
    category: str | None
    lowest_t: float | None
    site: str | None  # where the lowest T was read
    z_below_expected: bool


def diagnostic_measurements(exam: Exam) -> list[Measurement]:
    """Spine (analysed range), femoral neck and total hip; else the 1/3 radius."""
    spine = analysed_vertebral_set(exam)
    central = [m for m in exam.measurements if m.site in _CENTRAL or (spine is not None and m.site == spine)]
    if any(m.t_score is not None for m in central):
        return central
    return [m for m in exam.measurements if m.site == "radius_33"]


def category_for_t(t_score: float, config: MonitoringConfig) -> str:
    if t_score <= config.osteoporosis_max_t:
        return OSTEOPOROSIS
    if t_score >= config.normal_min_t:
        return NORMAL
    return LOW_BONE_MASS


def lowest_t(exam: Exam, measurements: Sequence[Measurement] | None = None) -> tuple[float, str] | None:
    """`measurements`: the exam's `diagnostic_measurements`, when the caller has them already."""
    diagnostic = diagnostic_measurements(exam) if measurements is None else measurements
    scored = [(m.t_score, m.site) for m in diagnostic if m.t_score is not None]
    return min(scored) if scored else None


def age_at(birth_date: date, day: date) -> int:
    """Completed years on `day`."""
    return day.year - birth_date.year - ((day.month, day.day) < (birth_date.month, birth_date.day))


def who_applies(exam: Exam, config: MonitoringConfig, birth_date: date | None) -> bool:
    return birth_date is None or age_at(birth_date, exam.date) >= config.who_min_age_years


def classify_exam(exam: Exam, config: MonitoringConfig, birth_date: date | None = None) -> WhoResult:
    diagnostic = diagnostic_measurements(exam)
    found = lowest_t(exam, diagnostic)
    z_low = any(m.z_score is not None and m.z_score <= config.low_z for m in diagnostic)
    if not who_applies(exam, config, birth_date):
        return WhoResult(Z_SCORE_ONLY, None, None, z_low)
    if found is None:
        return WhoResult(None, None, None, z_low)
    t, site = found
    return WhoResult(category_for_t(t, config), t, site, z_low)


def classify_history(exams: Sequence[Exam], config: MonitoringConfig, birth_date: date | None = None) -> WhoResult:
    """The latest exam's category, kept at osteoporosis when any earlier exam reached it.

    Only exams where the WHO classification applies (age) can make the osteoporosis diagnosis;
    a patient still under the age limit at the latest exam is `z_score_only`."""
    ordered = sorted(exams, key=lambda e: (e.date, e.exam_id))
    results = [classify_exam(e, config, birth_date) for e in ordered]
    if results and results[-1].category == Z_SCORE_ONLY:
        return results[-1]
    scored = [r for r in results if r.category not in (None, Z_SCORE_ONLY)]
    if not scored:
        return WhoResult(None, None, None, results[-1].z_below_expected if results else False)
    latest = scored[-1]
    z_low = results[-1].z_below_expected
    if any(r.category == OSTEOPOROSIS for r in scored):
        return WhoResult(OSTEOPOROSIS, latest.lowest_t, latest.site, z_low)
    return WhoResult(latest.category, latest.lowest_t, latest.site, z_low)
