"""ISCD precision studies: how much a machine's BMD varies when nothing has changed.

The least significant change (LSC) a comparison is judged against comes from here:
LSC = 2.77 × RMS-SD, 2.77 = 1.96 × √2 (95 % confidence that the difference of two
measurements is not precision error). ISCD 2019 asks for 15 patients scanned 3 times or 30
scanned twice, repositioning in between (30 degrees of freedom either way); each technologist
does a study and the facility's value pools them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from monitor.config import MonitoringConfig
from monitor.model import Phrase
from monitor.phrases import english

ISCD_LSC_MULTIPLIER = 2.77


class PrecisionStudyError(ValueError):
    """A precision study that cannot give a valid LSC; the message says what is wrong."""


class TooFewDegreesOfFreedom(PrecisionStudyError):
    def __init__(self, degrees_of_freedom: int, required: int) -> None:
        super().__init__(
            f"precision study has {degrees_of_freedom} degrees of freedom; ISCD requires at least "
            f"{required} (15 patients × 3 scans or 30 patients × 2 scans)"
        )
        self.degrees_of_freedom = degrees_of_freedom
        self.required = required


@dataclass(frozen=True)
class PrecisionResult:
    site: str
    patients: int
    scans: int
    degrees_of_freedom: int
    rms_sd_g_cm2: float
    rms_cv_percent: float
    lsc_g_cm2: float
    lsc_percent: float
    design: str  # "15x3", "30x2", or e.g. "unbalanced" / "20x3"
    note: str | None = None  # set when the design is not one of the two ISCD designs


@dataclass(frozen=True)
class PrecisionCheck:
    """A technologist's %CV against the ISCD minimum acceptable precision for the site."""

    acceptable: bool | None  # None when no limit is configured for the site
    cv_percent: float
    limit_cv_percent: float | None
    message: str
    phrase: Phrase | None = None  # `message` as a phrase, for the reader's language


def _variance(values: Sequence[float]) -> float:
    mean = sum(values) / len(values)
    return sum((v - mean) ** 2 for v in values) / (len(values) - 1)


def precision_study(
    site: str,
    scans_by_patient: Sequence[Sequence[float]] | Mapping[str, Sequence[float]],
    *,
    min_degrees_of_freedom: int = 30,
    lsc_multiplier: float = ISCD_LSC_MULTIPLIER,
) -> PrecisionResult:
    """RMS-SD, RMS-%CV and LSC from repeated BMD scans (g/cm²) of each patient.

    RMS-SD = sqrt(Σ (n_i − 1)·SD_i² / Σ (n_i − 1)): for the ISCD designs (every patient
    scanned the same number of times) this is exactly sqrt(mean of per-patient variances);
    weighting by degrees of freedom keeps unbalanced studies unbiased (Glüer et al.,
    Osteoporos Int 1995;5:262-270). %CV is pooled the same way from SD_i / mean_i.
    """
    groups = list(scans_by_patient.values()) if isinstance(scans_by_patient, Mapping) else list(scans_by_patient)
    if not groups:
        raise PrecisionStudyError(f"precision study for {site} has no patients")
    for index, values in enumerate(groups, start=1):
        if len(values) < 2:
            raise PrecisionStudyError(
                f"precision study for {site}: patient #{index} has {len(values)} scan(s); each needs at least 2"
            )
        if any(not math.isfinite(v) or v <= 0 for v in values):
            raise PrecisionStudyError(f"precision study for {site}: patient #{index} has a BMD that is not positive")
    dof = sum(len(v) - 1 for v in groups)
    if dof < min_degrees_of_freedom:
        raise TooFewDegreesOfFreedom(dof, min_degrees_of_freedom)
    sum_var = sum((len(v) - 1) * _variance(v) for v in groups)
    sum_cv2 = sum((len(v) - 1) * _variance(v) / (sum(v) / len(v)) ** 2 for v in groups)
    rms_sd = math.sqrt(sum_var / dof)
    rms_cv = 100.0 * math.sqrt(sum_cv2 / dof)
    counts = {len(v) for v in groups}
    design = f"{len(groups)}x{counts.pop()}" if len(counts) == 1 else "unbalanced"
    note = None
    if design not in ("15x3", "30x2"):
        note = (
            f"design {design} is not an ISCD design (15 patients × 3 scans or 30 × 2); "
            f"accepted with {dof} degrees of freedom"
        )
    return PrecisionResult(
        site=site,
        patients=len(groups),
        scans=sum(len(v) for v in groups),
        degrees_of_freedom=dof,
        rms_sd_g_cm2=rms_sd,
        rms_cv_percent=rms_cv,
        lsc_g_cm2=lsc_multiplier * rms_sd,
        lsc_percent=lsc_multiplier * rms_cv,
        design=design,
        note=note,
    )


def precision_study_from_config(
    site: str,
    scans_by_patient: Sequence[Sequence[float]] | Mapping[str, Sequence[float]],
    config: MonitoringConfig,
) -> PrecisionResult:
    return precision_study(
        site,
        scans_by_patient,
        min_degrees_of_freedom=config.min_degrees_of_freedom,
        lsc_multiplier=config.lsc_multiplier,
    )


def pool_precision(
    results: Sequence[PrecisionResult], *, lsc_multiplier: float = ISCD_LSC_MULTIPLIER
) -> PrecisionResult:
    """The facility's precision at one site from its technologists' studies.

    Variances are pooled by degrees of freedom (the same estimator as one study holding every
    patient), which is how ISCD's calculator combines technologists.
    """
    if not results:
        raise PrecisionStudyError("no precision studies to pool")
    sites = {r.site for r in results}
    if len(sites) > 1:
        raise PrecisionStudyError(f"cannot pool precision across sites: {', '.join(sorted(sites))}")
    dof = sum(r.degrees_of_freedom for r in results)
    rms_sd = math.sqrt(sum(r.degrees_of_freedom * r.rms_sd_g_cm2**2 for r in results) / dof)
    rms_cv = math.sqrt(sum(r.degrees_of_freedom * r.rms_cv_percent**2 for r in results) / dof)
    notes = [r.note for r in results if r.note]
    return PrecisionResult(
        site=results[0].site,
        patients=sum(r.patients for r in results),
        scans=sum(r.scans for r in results),
        degrees_of_freedom=dof,
        rms_sd_g_cm2=rms_sd,
        rms_cv_percent=rms_cv,
        lsc_g_cm2=lsc_multiplier * rms_sd,
        lsc_percent=lsc_multiplier * rms_cv,
        design=f"pooled from {len(results)} stud{'y' if len(results) == 1 else 'ies'}",
        note="; ".join(notes) or None,
    )


def lsc_from_rms_sd(rms_sd_g_cm2: float, *, lsc_multiplier: float = ISCD_LSC_MULTIPLIER) -> float:
    if rms_sd_g_cm2 < 0:
        raise PrecisionStudyError("RMS-SD cannot be negative")
    return lsc_multiplier * rms_sd_g_cm2


def check_technologist(result: PrecisionResult, config: MonitoringConfig) -> PrecisionCheck:
    """ISCD 2019 minimum acceptable precision for one technologist at one site."""
    limit = config.max_cv_percent_for(result.site)
    cv = result.rms_cv_percent
    if limit is None:
        phrase = Phrase.of("precision_no_limit", site=result.site)
        return PrecisionCheck(None, cv, None, english(phrase), phrase)
    if cv <= limit + 1e-9:
        phrase = Phrase.of(
            "precision_within", site=result.site, cv_pct=cv, limit_pct=float(limit), lsc_pct=result.lsc_percent
        )
        return PrecisionCheck(True, cv, limit, english(phrase), phrase)
    phrase = Phrase.of(
        "precision_over",
        site=result.site,
        cv_pct=cv,
        limit_pct=float(limit),
        lsc_limit_pct=config.lsc_multiplier * limit,
    )
    return PrecisionCheck(False, cv, limit, english(phrase), phrase)


@dataclass(frozen=True)
class TechnologistStudy:
    """One technologist's part of a facility study. `error` says why there is no `result` (scans
    that cannot make a study) or no `check` (fewer degrees of freedom than ISCD asks of each
    technologist: the %CV is too uncertain to judge them, though their scans still count)."""

    technologist: str
    result: PrecisionResult | None
    check: PrecisionCheck | None
    error: str | None
    error_phrase: Phrase | None = None  # `error` as a phrase when the core words it


@dataclass(frozen=True)
class FacilityStudy:
    site: str
    facility: PrecisionResult | None  # None when the study cannot give the facility's LSC
    technologists: tuple[TechnologistStudy, ...]
    error: str | None

    @property
    def over_limit(self) -> tuple[TechnologistStudy, ...]:
        return tuple(t for t in self.technologists if t.check is not None and t.check.acceptable is False)


def facility_study(
    site: str, scans_by_technologist: Mapping[str, Mapping[str, Sequence[float]]], config: MonitoringConfig
) -> FacilityStudy:
    """A facility's precision study at one site, as ISCD runs it (2019 official positions).

    Each technologist's scans are a study of their own, checked against the minimum acceptable
    precision when it has the full degrees of freedom; the facility's RMS-SD and LSC pool every
    technologist's scans and need the degrees of freedom in all. Scans that cannot make a study
    (a patient scanned once, a BMD that is not positive) refuse the whole study rather than being
    left out: an LSC must not silently rest on part of what was uploaded. The command-line import
    and the QA page both call this, so they cannot disagree.
    """
    required = config.min_degrees_of_freedom
    technologists: list[TechnologistStudy] = []
    for tech, scans in sorted(scans_by_technologist.items()):
        try:
            result = precision_study(site, scans, min_degrees_of_freedom=1, lsc_multiplier=config.lsc_multiplier)
        except PrecisionStudyError as exc:
            technologists.append(TechnologistStudy(tech, None, None, str(exc)))
            continue
        if result.degrees_of_freedom < required:
            short = Phrase.of("technologist_few_dof", dof=result.degrees_of_freedom, required=required)
            technologists.append(TechnologistStudy(tech, result, None, english(short), short))
        else:
            technologists.append(TechnologistStudy(tech, result, check_technologist(result, config), None))
    broken = [f"{t.technologist}: {t.error}" for t in technologists if t.result is None]
    if broken:
        return FacilityStudy(site, None, tuple(technologists), "; ".join(broken))
    if not technologists:
        return FacilityStudy(site, None, (), f"precision study for {site} has no scans")
    facility = pool_precision([t.result for t in technologists if t.result], lsc_multiplier=config.lsc_multiplier)
    if facility.degrees_of_freedom < required:
        error = (
            f"{facility.degrees_of_freedom} degrees of freedom; ISCD needs at least {required} "
            "(15 patients x 3 scans or 30 x 2)"
        )
        return FacilityStudy(site, None, tuple(technologists), error)
    return FacilityStudy(site, facility, tuple(technologists), None)
