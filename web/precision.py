"""The ISCD precision calculator behind the QA machines page: parse an uploaded study CSV and
compute RMS-SD / LSC (facility and per technologist) with `monitor.precision`.

CSV columns: `technologist, patient_code, scan_index, bmd` (g/cm², one row per scan). A study
is one device at one site; the site and device are chosen on the form.
"""

from __future__ import annotations

import csv
import io
import math
from collections import defaultdict
from dataclasses import dataclass

from monitor.config import MonitoringConfig
from monitor.precision import (
    PrecisionCheck,
    PrecisionResult,
    PrecisionStudyError,
    check_technologist,
    pool_precision,
    precision_study,
)

Repeat = tuple[str, str, int, float]
REQUIRED_COLUMNS = ("technologist", "patient_code", "scan_index", "bmd")
MAX_ROWS = 10_000


class PrecisionCsvError(ValueError):
    pass


def parse_csv(text: str) -> list[Repeat]:
    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff")))
    columns = [c.strip().lower() for c in reader.fieldnames or []]
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise PrecisionCsvError(f"missing column(s): {', '.join(missing)}; expected {', '.join(REQUIRED_COLUMNS)}")
    repeats: list[Repeat] = []
    for line, raw in enumerate(reader, start=2):
        row = {(k or "").strip().lower(): (v or "").strip() for k, v in raw.items()}
        if not any(row.values()):
            continue
        try:
            bmd = float(row["bmd"].replace(",", "."))
            index = int(row["scan_index"])
        except ValueError:
            raise PrecisionCsvError(f"line {line}: scan_index must be a whole number and bmd a number") from None
        if not math.isfinite(bmd) or bmd <= 0:
            raise PrecisionCsvError(f"line {line}: bmd must be a positive number of g/cm²")
        if not row["technologist"] or not row["patient_code"]:
            raise PrecisionCsvError(f"line {line}: technologist and patient_code are required")
        repeats.append((row["technologist"], row["patient_code"], index, bmd))
        if len(repeats) > MAX_ROWS:
            raise PrecisionCsvError(f"more than {MAX_ROWS} rows")
    if not repeats:
        raise PrecisionCsvError("the file has no scans")
    return repeats


@dataclass(frozen=True)
class TechnologistResult:
    technologist: str
    result: PrecisionResult | None
    check: PrecisionCheck | None
    error: str | None


@dataclass(frozen=True)
class StudyPreview:
    site: str
    facility: PrecisionResult | None
    technologists: tuple[TechnologistResult, ...]
    error: str | None

    @property
    def over_limit(self) -> tuple[TechnologistResult, ...]:
        return tuple(t for t in self.technologists if t.check is not None and t.check.acceptable is False)


def compute(site: str, repeats: list[Repeat], config: MonitoringConfig | None) -> StudyPreview:
    """Each technologist's study, checked against the ISCD limit, and the pooled facility value."""
    min_dof = config.min_degrees_of_freedom if config else 30
    multiplier = config.lsc_multiplier if config else 2.77
    by_tech: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for tech, patient, _, bmd in sorted(repeats, key=lambda r: (r[0], r[1], r[2])):
        by_tech[tech][patient].append(bmd)
    results: list[TechnologistResult] = []
    for tech, scans in sorted(by_tech.items()):
        try:
            result = precision_study(site, scans, min_degrees_of_freedom=min_dof, lsc_multiplier=multiplier)
        except PrecisionStudyError as exc:
            results.append(TechnologistResult(tech, None, None, str(exc)))
            continue
        check = check_technologist(result, config) if config else None
        results.append(TechnologistResult(tech, result, check, None))
    valid = [t.result for t in results if t.result is not None]
    if not valid:
        errors = "; ".join(f"{t.technologist}: {t.error}" for t in results if t.error)
        return StudyPreview(site, None, tuple(results), errors or "no valid study")
    try:
        facility = pool_precision(valid, lsc_multiplier=multiplier)
    except PrecisionStudyError as exc:
        return StudyPreview(site, None, tuple(results), str(exc))
    return StudyPreview(site, facility, tuple(results), None)
