"""The redundancy of a DXA results table, used to catch OCR misreads before a person confirms.

A results table says most things twice: BMD is BMC divided by area on every row; a lumbar range's
BMC and area are the sums of its vertebrae, and its BMD lies between theirs; T- and Z-scores of
one region are the same BMD measured against two references, so T − Z is (nearly) one number
across that region's rows; a patient is born before the exam; the patient ID is printed once per
page. A digit misread almost never keeps all of these true. Each check names the values it
involves, so a failed check marks exactly those values for the reviewer. Pure: values in,
failures out.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

from ingest.report import ParsedReport, SiteMeasurement

_LUMBAR = re.compile(r"^L([1-5])$")
_RANGE = re.compile(r"^L([1-5])-L([1-5])$")
_TZ_SPREAD = 0.25  # T − Z within one region: the printed scores are rounded to 0.1 each
_HIP = frozenset({"femoral_neck", "total_hip", "trochanter", "intertrochanter", "wards"})


def value_key(m: SiteMeasurement, column: str) -> str:
    """The name of one value of a report, as the reviewer's page and the checks call it."""
    return f"{m.site}/{m.side or '-'}/{column}"


@dataclass(frozen=True)
class Failure:
    check: str  # a short name: "bmd_ratio", "range_sum", "t_minus_z", "range_between", "dates", "identity"
    keys: tuple[str, ...]  # the values it involves (`value_key`, or "patient_id", "exam_date", …)
    message: str  # for the reviewer; no patient data


def _ratio(m: SiteMeasurement) -> list[Failure]:
    if m.bmc_g is None or m.area_cm2 is None or m.area_cm2 <= 0:
        return []
    # BMC and area print to 2 decimals, BMD to 3: the worst rounding of the ratio, plus BMD's own
    tolerance = m.bmd * (0.0051 / max(m.bmc_g, 0.01) + 0.0051 / m.area_cm2) + 0.0006
    if abs(m.bmc_g / m.area_cm2 - m.bmd) <= tolerance:
        return []
    keys = tuple(value_key(m, c) for c in ("bmd", "bmc", "area"))
    return [Failure("bmd_ratio", keys, f"{m.site}: BMD is not BMC / area")]


def _vertebrae(measurements: Sequence[SiteMeasurement]) -> dict[int, SiteMeasurement]:
    found: dict[int, SiteMeasurement] = {}
    for m in measurements:
        match = _LUMBAR.match(m.site)
        if match:
            found[int(match[1])] = m
    return found


def _ranges(measurements: Sequence[SiteMeasurement]) -> list[Failure]:
    failures: list[Failure] = []
    single = _vertebrae(measurements)
    for m in measurements:
        match = _RANGE.match(m.site)
        if not match:
            continue
        parts = [single.get(i) for i in range(int(match[1]), int(match[2]) + 1)]
        if any(p is None for p in parts):
            continue
        members = [p for p in parts if p is not None]
        keys_of = [value_key(p, "bmd") for p in members] + [value_key(m, "bmd")]
        low, high = min(p.bmd for p in members), max(p.bmd for p in members)
        if not low - 0.0015 <= m.bmd <= high + 0.0015:
            failures.append(Failure("range_between", tuple(keys_of), f"{m.site}: BMD outside its vertebrae's"))
        for column, attr in (("bmc", "bmc_g"), ("area", "area_cm2")):
            values = [getattr(p, attr) for p in members]
            total = getattr(m, attr)
            if total is None or any(v is None for v in values):
                continue
            if abs(sum(values) - total) > 0.0101 * len(values) + 0.0051:
                keys = (*tuple(value_key(p, column) for p in members), value_key(m, column))
                failures.append(Failure("range_sum", keys, f"{m.site}: {column} is not the sum of its vertebrae"))
    return failures


def _region(m: SiteMeasurement) -> str:
    if m.site.startswith("L"):
        return "spine"
    if m.site in _HIP:
        return f"hip/{m.side}"
    return f"{m.site}/{m.side}"


def _t_minus_z(measurements: Sequence[SiteMeasurement]) -> list[Failure]:
    """Within a region, T − Z is one number (± rounding): a dropped minus sign or a misread digit
    moves one row's T or Z away from its neighbours'."""
    failures: list[Failure] = []
    regions: dict[str, list[SiteMeasurement]] = {}
    for m in measurements:
        if m.t_score is not None and m.z_score is not None:
            regions.setdefault(_region(m), []).append(m)
    for rows in regions.values():
        if len(rows) < 3:
            continue
        center = statistics.median(
            m.t_score - m.z_score for m in rows if m.t_score is not None and m.z_score is not None
        )
        for m in rows:
            assert m.t_score is not None and m.z_score is not None
            if abs((m.t_score - m.z_score) - center) > _TZ_SPREAD:
                keys = (value_key(m, "t"), value_key(m, "z"))
                failures.append(
                    Failure("t_minus_z", keys, f"{m.site}: T and Z do not move together with the other rows")
                )
    return failures


def _dates(report: ParsedReport) -> list[Failure]:
    failures: list[Failure] = []
    birth = report.patient.birth_date
    if birth is not None and not (date(birth.year + 1, 1, 1) <= report.exam_date):
        failures.append(Failure("dates", ("birth_date", "exam_date"), "birth date is not before the exam date"))
    if birth is not None and report.exam_date.year - birth.year > 110:
        failures.append(Failure("dates", ("birth_date", "exam_date"), "age over 110 at the exam"))
    for row in report.extras.history:
        if row.date > report.exam_date:
            failures.append(Failure("dates", ("exam_date",), "a trend row is dated after the exam"))
            break
    return failures


def identity_failures(printed_ids: Sequence[str]) -> list[Failure]:
    """The patient ID as printed in each place it appears: all the same, or the page is held."""
    distinct = {p.strip().upper() for p in printed_ids if p.strip()}
    if len(distinct) > 1:
        return [Failure("identity", ("patient_id",), "the patient ID reads differently in two places")]
    return []


def check_report(report: ParsedReport) -> list[Failure]:
    measurements = report.measurements
    failures: list[Failure] = []
    for m in measurements:
        failures += _ratio(m)
    failures += _ranges(measurements)
    failures += _t_minus_z(measurements)
    failures += _dates(report)
    return failures
