"""Vendor-printed dates ('05-Sep-2019', '04/01/2018', 'March 20, 2021', '22.12.2021').

Whether '04/01/2018' is April or January is a property of the layout (the scanner's locale),
not of the value: callers decide the order once per file and pass it in.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import date
from typing import Literal

Order = Literal["mdy", "dmy"]

_MONTHS = {
    m: i + 1 for i, m in enumerate(["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"])
}
_NUMERIC = re.compile(r"^\s*(\d{1,2})[./-](\d{1,2})[./-](\d{4})\s*$")
_ISO = re.compile(r"^\s*(\d{4})[-./]?(\d{2})[-./]?(\d{2})\s*$")
_DAY_MON_YEAR = re.compile(r"^\s*(\d{1,2})[\s-]+([A-Za-z]{3,})\.?[\s,-]+(\d{4})\s*$")
_MON_DAY_YEAR = re.compile(r"^\s*([A-Za-z]{3,})\.?\s+(\d{1,2}),?\s+(\d{4})\s*$")


def _month(name: str) -> int | None:
    return _MONTHS.get(name[:3].lower())


def _make(y: int, m: int, d: int) -> date | None:
    try:
        return date(y, m, d)
    except ValueError:
        return None


def parse_date(raw: str, order: Order) -> date | None:
    """Parse one printed date; numeric day/month order comes from `order`."""
    m = _ISO.match(raw)
    if m:
        return _make(int(m.group(1)), int(m.group(2)), int(m.group(3)))
    m = _NUMERIC.match(raw)
    if m:
        a, b, y = int(m.group(1)), int(m.group(2)), int(m.group(3))
        return _make(y, a, b) if order == "mdy" else _make(y, b, a)
    m = _DAY_MON_YEAR.match(raw)
    if m:
        mon = _month(m.group(2))
        return _make(int(m.group(3)), mon, int(m.group(1))) if mon else None
    m = _MON_DAY_YEAR.match(raw)
    if m:
        mon = _month(m.group(1))
        return _make(int(m.group(3)), mon, int(m.group(2))) if mon else None
    return None


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
    candidates: list[Order] = [o for o in ("mdy", "dmy") if all(parse_date(r, o) for r in numeric)]
    if len(candidates) == 1:
        return candidates[0]
    if exam is not None:
        matching = [o for o in candidates if any(parse_date(r, o) == exam for r in numeric)]
        if len(matching) == 1:
            return matching[0]
    return default


def separator_default(raws: Iterable[str]) -> Order:
    """'.' is day-first in every locale that uses it; '/' and '-' default to month-first."""
    return "dmy" if any("." in r for r in raws if is_numeric(r)) else "mdy"
