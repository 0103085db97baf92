"""Cross-calibration: when scans from two machines may be compared, and against what LSC.

Two cases (ISCD 2019, "Cross-calibration of DXA systems"):

* Same model (a unit replaced by an identical one): the spine phantom is scanned on both
  (10 times each, no repositioning). When the mean BMDs agree within the tolerance (1 %),
  patients' scans may be compared and the LSC is the pooled one of the two units.
* Different models: an in-vivo study (ISCD: 100 patients once on the old unit and twice on the
  new within 60 days) gives a regression new = slope × old + intercept, used to convert the
  old BMD, and a generalized LSC (GLSC, Shepherd & Lu 2007) that adds the uncertainty of the
  conversion to the two units' precision.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

from monitor.identity import DIFFERENT_SERIALS, MISSING_SERIAL, same_model, why_different
from monitor.model import CrossCalibration, Machine, Phrase
from monitor.phrases import english
from monitor.precision import ISCD_LSC_MULTIPLIER

#: z for a two-sided 95 % interval; ISCD's 2.77 is this × √2.
Z95 = 1.96


class CrossCalibrationError(ValueError):
    """A cross-calibration study that cannot be used; the message says why."""


@dataclass(frozen=True)
class PhantomResult:
    accepted: bool
    mean_a: float
    mean_b: float
    difference_percent: float  # 100 × (mean_b − mean_a) / mean_a
    pooled_lsc_g_cm2: float
    message: str
    record: CrossCalibration | None  # only when accepted
    phrase: Phrase | None = None  # `message` as a phrase, for the reader's language


@dataclass(frozen=True)
class InVivoResult:
    site: str
    patients: int
    slope: float
    intercept: float
    r: float
    see_g_cm2: float  # standard error of the estimate of the regression
    glsc_g_cm2: float
    note: str | None
    record: CrossCalibration


def pooled_lsc(rms_sd_a: float, rms_sd_b: float, *, lsc_multiplier: float = ISCD_LSC_MULTIPLIER) -> float:
    """LSC between two units of one model: 2.77 × sqrt((RMS-SD_a² + RMS-SD_b²) / 2).

    With one scan on each unit, the difference has variance σ_a² + σ_b², so the 95 % limit is
    1.96 × sqrt(σ_a² + σ_b²) = 2.77 × sqrt((σ_a² + σ_b²)/2): the LSC of a single unit when both
    are equally precise.
    """
    if rms_sd_a < 0 or rms_sd_b < 0:
        raise CrossCalibrationError("RMS-SD cannot be negative")
    return lsc_multiplier * math.sqrt((rms_sd_a**2 + rms_sd_b**2) / 2.0)


def phantom_cross_calibration(
    machine_a: Machine,
    machine_b: Machine,
    sites: Sequence[str],
    phantom_a: Sequence[float],
    phantom_b: Sequence[float],
    *,
    rms_sd_a: float,
    rms_sd_b: float,
    tolerance_percent: float = 1.0,
    min_scans: int = 10,
    performed_on: date | None = None,
) -> PhantomResult:
    """Same-model phantom check. `rms_sd_*` are the units' in-vivo precision (g/cm²) at the sites.

    A phantom checks calibration, not patient precision, so the LSC still comes from the
    in-vivo precision of the two units (pooled).
    """
    why = why_different(machine_a, machine_b)
    if why is None:
        raise CrossCalibrationError("both records describe the same machine: no cross-calibration is needed")
    if why == MISSING_SERIAL:
        raise CrossCalibrationError(f"cannot cross-calibrate a machine without a serial number ({why})")
    if not same_model(machine_a, machine_b) or why != DIFFERENT_SERIALS:
        raise CrossCalibrationError(
            f"a phantom cross-calibration needs two units of one model ({why}); use an in-vivo study"
        )
    for name, scans in (("first", phantom_a), ("second", phantom_b)):
        if len(scans) < min_scans:
            raise CrossCalibrationError(f"{name} unit has {len(scans)} phantom scans; at least {min_scans} are needed")
        if any(not math.isfinite(v) or v <= 0 for v in scans):
            raise CrossCalibrationError(f"{name} unit has a phantom BMD that is not positive")
    mean_a = sum(phantom_a) / len(phantom_a)
    mean_b = sum(phantom_b) / len(phantom_b)
    diff = 100.0 * (mean_b - mean_a) / mean_a
    lsc = pooled_lsc(rms_sd_a, rms_sd_b)
    accepted = abs(diff) <= tolerance_percent + 1e-9
    if accepted:
        phrase = Phrase.of(
            "phantom_accepted",
            diff_pct=diff,
            limit_pct=float(tolerance_percent),
            machine_a=machine_a,
            machine_b=machine_b,
            lsc_g=lsc,
        )
        record: CrossCalibration | None = CrossCalibration(
            machine_a=machine_a,
            machine_b=machine_b,
            kind="phantom",
            sites=frozenset(sites),
            lsc_g_cm2=tuple((s, lsc) for s in sites),
            performed_on=performed_on,
        )
    else:
        phrase = Phrase.of("phantom_refused", diff_pct=diff, limit_pct=float(tolerance_percent))
        record = None
    return PhantomResult(accepted, mean_a, mean_b, diff, lsc, english(phrase), record, phrase)


def linear_regression(x: Sequence[float], y: Sequence[float]) -> tuple[float, float, float, float]:
    """Ordinary least squares y = slope·x + intercept: (slope, intercept, r, SEE)."""
    n = len(x)
    if n != len(y):
        raise CrossCalibrationError(f"{n} old and {len(y)} new values: every patient needs both")
    if n < 3:
        raise CrossCalibrationError("a regression needs at least 3 patients")
    mx, my = sum(x) / n, sum(y) / n
    sxx = sum((a - mx) ** 2 for a in x)
    syy = sum((b - my) ** 2 for b in y)
    sxy = sum((a - mx) * (b - my) for a, b in zip(x, y, strict=True))
    if sxx <= 0:
        raise CrossCalibrationError("all old-machine BMD values are equal: no regression possible")
    slope = sxy / sxx
    intercept = my - slope * mx
    residual = sum((b - (slope * a + intercept)) ** 2 for a, b in zip(x, y, strict=True))
    see = math.sqrt(residual / (n - 2))
    r = sxy / math.sqrt(sxx * syy) if syy > 0 else 0.0
    return slope, intercept, r, see


def generalized_lsc(
    rms_sd_old: float,
    rms_sd_new: float,
    slope: float,
    see: float,
    *,
    scans_old_per_patient: int = 1,
    scans_new_per_patient: int = 1,
) -> float:
    """Generalized LSC (g/cm², new machine's units) for a change from the old to the new machine.

    Model (after Shepherd JA, Lu Y. A generalized least significant change for individuals
    measured on different DXA systems. J Clin Densitom 2007;10:249-258): the change is
    y₂ − (slope·x₁ + intercept). With no true change its variance is

        σ_new² + (slope·σ_old)² + σ_cal²

    where σ_new, σ_old are the units' RMS-SD and σ_cal² is the individual calibration error:
    the regression's SEE² less the precision error already inside it,
    σ_cal² = max(0, SEE² − σ_new²/k_new − (slope·σ_old)²/k_old), k = scans averaged per
    patient on that unit in the calibration study (ISCD: k_old = 1, k_new = 2). Then

        GLSC = 1.96 × sqrt(σ_new² + (slope·σ_old)² + σ_cal²)
             = 2.77 × sqrt((σ_new² + (slope·σ_old)² + σ_cal²) / 2)

    which is exactly 2.77 × RMS-SD for two identical units with a perfect calibration (the
    property the GLSC must have) and grows with the calibration's scatter. Note that
    2.77 × sqrt(σ_new² + (slope·σ_old)² + SEE²) (√2 too large and precision counted twice)
    would give twice the ISCD LSC for identical units; see the module notes in the report.
    """
    for name, value in (("rms_sd_old", rms_sd_old), ("rms_sd_new", rms_sd_new), ("see", see)):
        if value < 0 or not math.isfinite(value):
            raise CrossCalibrationError(f"{name} must be a non-negative number")
    if scans_old_per_patient < 1 or scans_new_per_patient < 1:
        raise CrossCalibrationError("scans per patient must be at least 1")
    precision = rms_sd_new**2 + (slope * rms_sd_old) ** 2
    in_see = rms_sd_new**2 / scans_new_per_patient + (slope * rms_sd_old) ** 2 / scans_old_per_patient
    calibration = max(0.0, see**2 - in_see)
    return Z95 * math.sqrt(precision + calibration)


def in_vivo_cross_calibration(
    old_machine: Machine,
    new_machine: Machine,
    site: str,
    old_bmd: Sequence[float],
    new_bmd: Sequence[float],
    *,
    rms_sd_old: float,
    rms_sd_new: float,
    scans_old_per_patient: int = 1,
    scans_new_per_patient: int = 1,
    min_patients: int = 30,
    recommended_patients: int = 100,
    performed_on: date | None = None,
) -> InVivoResult:
    """In-vivo cross-calibration at one site: `old_bmd[i]`, `new_bmd[i]` are patient i's BMD
    (the mean of that patient's scans on each unit). The record maps old -> new units."""
    why = why_different(old_machine, new_machine)
    if why is None:
        raise CrossCalibrationError("both records describe the same machine: no cross-calibration is needed")
    if why == MISSING_SERIAL:
        raise CrossCalibrationError(f"cannot cross-calibrate a machine without a serial number ({why})")
    n = len(old_bmd)
    if n < min_patients:
        raise CrossCalibrationError(f"in-vivo cross-calibration has {n} patients; at least {min_patients} are needed")
    if any(not math.isfinite(v) or v <= 0 for v in [*old_bmd, *new_bmd]):
        raise CrossCalibrationError("a BMD in the cross-calibration study is not positive")
    slope, intercept, r, see = linear_regression(old_bmd, new_bmd)
    if slope <= 0:
        raise CrossCalibrationError(f"regression slope {slope:.3f} is not positive: the study cannot be used")
    glsc = generalized_lsc(
        rms_sd_old,
        rms_sd_new,
        slope,
        see,
        scans_old_per_patient=scans_old_per_patient,
        scans_new_per_patient=scans_new_per_patient,
    )
    note = None
    if n < recommended_patients:
        note = f"{n} patients: ISCD recommends {recommended_patients} for an in-vivo cross-calibration"
    record = CrossCalibration(
        machine_a=old_machine,
        machine_b=new_machine,
        kind="in_vivo",
        sites=frozenset({site}),
        lsc_g_cm2=((site, glsc),),
        slope=slope,
        intercept=intercept,
        performed_on=performed_on,
        regressions=((site, slope, intercept),),
    )
    return InVivoResult(site, n, slope, intercept, r, see, glsc, note, record)


def combine(records: Sequence[CrossCalibration]) -> CrossCalibration:
    """One record for several sites of the same two machines (e.g. spine, neck, total hip)."""
    if not records:
        raise CrossCalibrationError("nothing to combine")
    first = records[0]
    for rec in records[1:]:
        if (
            rec.kind != first.kind
            or why_different(rec.machine_a, first.machine_a)
            or why_different(rec.machine_b, first.machine_b)
        ):
            raise CrossCalibrationError("records to combine must share kind and machines (old, new)")
    regressions: list[tuple[str, float, float]] = []
    for rec in records:
        regressions.extend(rec.regressions or tuple((s, rec.slope, rec.intercept) for s in sorted(rec.sites)))
    return CrossCalibration(
        machine_a=first.machine_a,
        machine_b=first.machine_b,
        kind=first.kind,
        sites=frozenset().union(*(r.sites for r in records)),
        lsc_g_cm2=tuple(item for r in records for item in r.lsc_g_cm2),
        slope=first.slope,
        intercept=first.intercept,
        performed_on=max((r.performed_on for r in records if r.performed_on), default=None),
        regressions=tuple(regressions) if first.kind == "in_vivo" else (),
    )
