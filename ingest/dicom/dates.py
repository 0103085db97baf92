"""Which day/month order a DICOM file's printed dates use ('04/01/2018': April or January?).

The order is a property of the scanner's locale, not of one value: it is decided once per file
from all its dates and the exam date, then every date is read with `ingest.dates.parse_date`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import date

from ingest.dates import DateOrder, parse_date

Order = DateOrder
_NUMERIC = re.compile(r"^\s*(\d{1,2})[./-](\d{1,2})[./-](\d{4})\s*$")


def is_numeric(raw: str) -> bool:
    return bool(_NUMERIC.match(raw))


def resolve_order(raws: Iterable[str], exam: date | None, default: Order) -> Order:
    """Pick one day/month order for all numeric dates of a file.

    An order under which some date is impossible is out; of the rest, the one that makes one
    of the dates equal to this exam's date (the vendor always lists the current exam) wins;
    otherwise the layout's default.
    """
    numeric = [r for r in raws if is_numeric(r)]
    if not numeric:
        return default
    candidates: list[Order] = [o for o in ("MDY", "DMY") if all(parse_date(r, o) for r in numeric)]
    if len(candidates) == 1:
        return candidates[0]
    if exam is not None:
        matching = [o for o in candidates if any(parse_date(r, o) == exam for r in numeric)]
        if len(matching) == 1:
            return matching[0]
    return default


def separator_default(raws: Iterable[str]) -> Order:
    """'.' is day-first in every locale that uses it; '/' and '-' default to month-first."""
    return "DMY" if any("." in r for r in raws if is_numeric(r)) else "MDY"
