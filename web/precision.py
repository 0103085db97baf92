"""The ISCD precision calculator behind the QA machines page: parse an uploaded study CSV and
compute RMS-SD / LSC (facility and per technologist) with `monitor.precision.facility_study`.

CSV columns: `technologist, patient_code, scan_index, bmd` (g/cm², one row per scan). A study
is one device at one site; the site and device are chosen on the form.
"""

from __future__ import annotations

import csv
import io
import math
from collections import defaultdict

from monitor.config import MonitoringConfig
from monitor.precision import FacilityStudy, facility_study

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


def compute(site: str, repeats: list[Repeat], config: MonitoringConfig | None) -> FacilityStudy:
    """The facility study of the uploaded scans (`monitor.precision.facility_study`, the one
    `dxa precision import` runs)."""
    scans: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for tech, patient, _, bmd in sorted(repeats, key=lambda r: (r[0], r[1], r[2])):
        scans[tech][patient].append(bmd)
    return facility_study(site, scans, config or MonitoringConfig(rules={}))
