"""What a DXA result can be: values outside these bounds are refused before anything is stored.

Why here (the pure core) and not in the database: a CHECK constraint or a column length says only
"the database refused", and on PostgreSQL an over-long string or a zero BMD aborts the whole store
with an error that looks like any other (once it was taken for a UID clash and the file stayed
`processing`). Checked first, the refusal names the field and the bound, and the file is
quarantined with that sentence on its first attempt.

Each check returns a list of problems worded for a technologist, never quoting patient data: no
identifier, name or date appears in a problem, only which field is wrong and why. Measured values
(a BMD of 1e23) are quoted: they say what the reader saw and identify nobody. No clock: `today`
is passed in by the caller.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date

# DXA (dual-energy X-ray absorptiometry) scanners came to market in 1987; no exam is older.
FIRST_DXA_DAY = date(1987, 1, 1)
EARLIEST_BIRTH = date(1880, 1, 1)


@dataclass(frozen=True)
class Bound:
    low: float
    high: float
    unit: str
    low_inclusive: bool = False

    def holds(self, value: float) -> bool:
        above = value >= self.low if self.low_inclusive else value > self.low
        return math.isfinite(value) and above and value <= self.high


# Wide enough for any real site of any age (forearm ultradistal ~0.3, total body up to ~1.6 g/cm²;
# total-body BMC ~4 kg over ~2 500 cm²), narrow enough to catch a misread column or a damaged file.
BMD = Bound(0.05, 3.0, "g/cm²")
BMC = Bound(0.0, 10_000.0, "g")
AREA = Bound(0.0, 5_000.0, "cm²")
SCORE = Bound(-10.0, 10.0, "SD", low_inclusive=True)
LSC = Bound(0.0, 0.5, "g/cm²")  # a least significant change is a few hundredths

# Lengths of the database columns these values go to (db/models.py; a test keeps them equal).
COLUMN_LENGTHS: dict[str, int] = {
    "patient ID": 128,
    "issuer": 128,
    "patient name": 256,
    "sex": 1,
    "manufacturer": 128,
    "device model": 128,
    "device serial": 128,
    "software version": 128,
    "SOP instance UID": 64,
    "format": 64,
    "scan mode": 64,
    "analysis protocol": 128,
    "reference database": 128,
    "site": 32,
    "side": 8,
    "vertebral set": 16,
}
# Values kept but not in a sized column (provenance, notes, accession, study UID): still bounded.
FREE_TEXT_LENGTH = 2_000
IDENTIFIER_FIELDS = frozenset({"patient ID", "issuer", "device serial", "SOP instance UID", "accession", "study UID"})


def check_value(label: str, value: float | None, bound: Bound) -> list[str]:
    """A measured number: None (not printed) is fine, anything else must be finite and in range."""
    if value is None or bound.holds(value):
        return []
    low = "≥" if bound.low_inclusive else ">"
    limits = f"{low} {bound.low:g} and ≤ {bound.high:g}"
    return [f"{label} is {value:g} {bound.unit}, outside the plausible range ({limits})"]


def check_measurement(
    where: str,
    *,
    bmd: float,
    bmc_g: float | None = None,
    area_cm2: float | None = None,
    t_score: float | None = None,
    z_score: float | None = None,
) -> list[str]:
    """One site's values; `where` names the site (e.g. "femoral_neck left")."""
    return [
        *check_value(f"BMD at {where}", bmd, BMD),
        *check_value(f"BMC at {where}", bmc_g, BMC),
        *check_value(f"area at {where}", area_cm2, AREA),
        *check_value(f"T-score at {where}", t_score, SCORE),
        *check_value(f"Z-score at {where}", z_score, SCORE),
    ]


def check_dates(exam_date: date, birth_date: date | None, today: date | None) -> list[str]:
    """The exam not before DXA existed nor in the future (when `today` is given; a day of slack for
    time zones), the birth before the exam and not absurdly old. The dates are never quoted."""
    problems: list[str] = []
    if exam_date < FIRST_DXA_DAY:
        problems.append(f"exam date is before {FIRST_DXA_DAY.year}, when DXA scanners did not exist yet")
    if today is not None and exam_date.toordinal() > today.toordinal() + 1:
        problems.append("exam date is in the future")
    if birth_date is not None:
        if birth_date > exam_date:
            problems.append("birth date is after the exam date")
        if birth_date < EARLIEST_BIRTH:
            problems.append(f"birth date is before {EARLIEST_BIRTH.year}")
    return problems


def check_history_date(day: date, exam_date: date) -> list[str]:
    """A vendor trend row's date: an earlier (or the same) DXA exam."""
    if day < FIRST_DXA_DAY or day > exam_date:
        return ["a trend row's date is outside the span from the first DXA scanners to this exam"]
    return []


def _has_control(text: str) -> bool:
    return any(ord(ch) < 32 or 0x7F <= ord(ch) < 0xA0 for ch in text)


def check_text(label: str, value: str | None, *, max_length: int | None = None, required: bool = False) -> list[str]:
    """A string bounded to its column (`COLUMN_LENGTHS[label]` unless `max_length`), without control
    characters; identifiers must also be printable and not blank. The value is never quoted."""
    if value is None:
        return [f"{label} is missing"] if required else []
    limit = max_length if max_length is not None else COLUMN_LENGTHS.get(label, FREE_TEXT_LENGTH)
    problems: list[str] = []
    if len(value) > limit:
        problems.append(f"{label} is {len(value)} characters long, over the {limit} allowed")
    if required and not value.strip():
        problems.append(f"{label} is blank")
    if label in IDENTIFIER_FIELDS:
        if not value.isprintable():
            problems.append(f"{label} contains characters that cannot be printed (control or separator)")
    elif _has_control(value):
        problems.append(f"{label} contains control characters")
    return problems
