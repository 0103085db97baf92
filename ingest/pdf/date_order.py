"""Which number is the day in one report's numeric dates ("03/04/2024": 3 April or March 4?).

A layout either prints one order (its template says `date_order = "MDY"`), or prints whatever the
workstation's regional settings say (`"locale"`: Hologic APEX, GE enCORE). Either way the order is
proved from what this report itself prints, strongest first:

1. a numeric date printed in the report that one order cannot read ("19/11/2019") proves the
   other, whatever else the report prints;
2. the layout's scan ID, which encodes the scan date month first whatever the locale (Hologic
   "A0304240D" is March 4, 2024): the order that makes the printed exam date equal to it;
3. the envelope's own exam date (an Encapsulated PDF's DICOM header, YYYYMMDD), when exactly one
   order makes the printed exam date equal to it;
4. dotted dates ("19.11.2019") are day first in every locale that prints them;
5. a layout with a fixed order: that order. A "locale" layout goes on with the locale's marks:
   US units for height or weight ("lb", "in") mark a US printout, month first; then dates with
   the month as a word ("March 4, 2024" is a US printout, "4 March 2024" a day-first one), which
   the same regional setting prints beside its numeric dates.

The first rule that names one order decides; a rule that names both (a text mixing locales) or
none is no evidence. Facts about this exam come before the locale's marks because a report with
one field reprinted in another spelling (a word date from another system, an edited field) is
still printed in its own locale. A "locale" layout whose stored dates (exam, birth, trend rows)
read differently day-first and month-first, with no evidence, is refused (`AmbiguousDate`), never
guessed: a swapped date moves an exam in a patient's history. Metric units and page size are not
evidence: UK, European and Canadian printouts use them with either order, US sites print metric
units too, and the shared UK samples are on Letter pages.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import date

from ingest.dates import DateOrder, numeric_dates, parse_date, reads_alike, word_date_orders
from ingest.errors import AmbiguousDate
from ingest.pdf.template import Template

_DAY_MONTH: tuple[DateOrder, DateOrder] = ("DMY", "MDY")
_BODY_LINE = re.compile(
    r"^.*\b(?:height|weight|ht|wt|größe|gewicht|taille|poids|altura|peso|身高|体重)\b.*$", re.IGNORECASE | re.MULTILINE
)
_IMPERIAL = re.compile(r"\d\s*(?:lbs?|in|inch(?:es)?|ft)\b\.?|\d\s*(?:'|′)\s*\d+\s*(?:\"|″)", re.IGNORECASE)


def _id_orders(template: Template, text: str, exam_raw: str) -> set[DateOrder]:
    pattern = template.fields.get("scan_id_date")
    if pattern is None:
        return set()
    found: set[DateOrder] = set()
    for match in pattern.finditer(text):
        try:
            encoded = (int(match["mm"]), int(match["dd"]), int(match["yy"]))
        except (TypeError, ValueError):
            continue
        for order in _DAY_MONTH:
            when = parse_date(exam_raw, order)
            if when is not None and (when.month, when.day, when.year % 100) == encoded:
                found.add(order)
    return found


def _unit_orders(text: str) -> set[DateOrder]:
    lines = " ".join(m.group() for m in _BODY_LINE.finditer(text))
    return {"MDY"} if _IMPERIAL.search(lines) else set()


def _envelope_orders(exam_raw: str, envelope: Iterable[date]) -> set[DateOrder]:
    dates = set(envelope)
    return {order for order in _DAY_MONTH if parse_date(exam_raw, order) in dates}


def report_date_order(
    template: Template, text: str, exam_raw: str, *, envelope_dates: Iterable[date] = ()
) -> DateOrder:
    """The day/month order of this report's numeric dates; `text` is the report's own pages,
    `exam_raw` its exam date as printed. Raises AmbiguousDate when it cannot be proved."""
    declared = template.date_order
    if declared == "YMD":
        return "YMD"
    printed = numeric_dates(text)
    readable = {o for o in _DAY_MONTH if all(parse_date(raw, o) is not None for raw in printed)}
    if not readable:
        readable = set(_DAY_MONTH)  # a damaged number readable either way proves nothing; fields fail later
    if len(readable) == 1:
        return readable.pop()  # a printed date that only one order reads: the strongest proof
    # Facts about this exam's date, then the locale's marks. A layout with a fixed order trusts its
    # own order over the locale's marks: a US printout with one field in another spelling is
    # still a US printout.
    dotted: set[DateOrder] = {"DMY"} if any("." in raw for raw in printed) else set()
    evidence: list[set[DateOrder]] = [
        _id_orders(template, text, exam_raw),
        _envelope_orders(exam_raw, envelope_dates),
        dotted,
    ]
    if declared == "locale":
        evidence += [_unit_orders(text), word_date_orders(text)]
    for orders in evidence:
        if len(orders) == 1:  # none, or both (a text mixing locales): no evidence either way
            return orders.pop()
    if declared != "locale":
        return declared
    if all(reads_alike(raw) for raw in _dates_that_matter(template, text, exam_raw)):
        return "DMY"  # every date stored reads the same either way
    raise AmbiguousDate(
        f"exam date: {template.description} prints its dates as numbers only, which read differently "
        "day-first and month-first, and nothing in the report (a month in words, a day over 12, the scan ID, "
        "units) tells which; re-export the report with dates in words, or send the DICOM results"
    )


def _dates_that_matter(template: Template, text: str, exam_raw: str) -> list[str]:
    """The exam date, the birth date and the trend tables' dates: what would be stored."""
    out = [exam_raw]
    birth = template.fields.get("birth_date")
    out += [m["v"] for m in birth.finditer(text)] if birth else []
    out += [m["date"] for line in text.splitlines() if (m := template.date_pattern.match(line))]
    return out


def pages_date_order(
    template: Template, pages: Iterable[Iterable[str]], *, envelope_dates: Iterable[date] = ()
) -> DateOrder:
    """The same for a report's pages as read; the layout's own order when no exam date is printed
    (the report itself is then refused for its missing date)."""
    full = "\n".join("\n".join(lines) for lines in pages)
    pattern = template.fields.get("exam_date")
    match = pattern.search(full) if pattern else None
    if match is None or (template.date_order == "locale" and not match["v"].strip()):
        return "DMY" if template.date_order == "locale" else template.date_order
    return report_date_order(template, full, match["v"].strip(), envelope_dates=envelope_dates)
