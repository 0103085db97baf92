"""Vendor-printed dates ('05-Sep-2019', '04/01/2018', 'March 20, 2021', '22.12.2021',
'2019年03月12日', '20190905'): the one reader every parser (PDF and DICOM) uses.

"03/04/2016" is 3 April on one printout and March 4 on another: the caller says which (`order`,
from the PDF template's `date_order`, or resolved once per DICOM file by
`ingest.dicom.dates.resolve_order`), and the value is never used to guess (a 13 does not flip the
order). A month written as a word, or a four-digit year in front (ISO, Chinese), is unambiguous.
"""

from __future__ import annotations

import re
from datetime import date
from typing import Literal

DateOrder = Literal["DMY", "MDY", "YMD"]
# A layout whose numeric day/month order follows the locale its software runs in (Hologic APEX and
# GE enCORE print in the workstation's regional settings): the order is proved per report from
# what the report itself prints (`ingest.pdf.date_order`), never assumed.
LayoutOrder = Literal["DMY", "MDY", "YMD", "locale"]

_MONTH_NAMES = (
    # English; German, French, Spanish, Italian as the vendors' localised software prints them
    ("jan", "january", "januar", "jän", "janv", "janvier", "ene", "enero", "gen", "gennaio"),
    ("feb", "february", "februar", "févr", "fevr", "février", "fevrier", "febrero", "febbraio"),
    ("mar", "march", "mär", "märz", "marz", "mars", "marzo"),
    ("apr", "april", "avr", "avril", "abr", "abril", "aprile"),
    ("may", "mai", "mayo", "mag", "maggio"),
    ("jun", "june", "juni", "juin", "junio", "giu", "giugno"),
    ("jul", "july", "juli", "juil", "juillet", "julio", "lug", "luglio"),
    ("aug", "august", "août", "aout", "ago", "agosto"),
    ("sep", "sept", "september", "septembre", "septiembre", "set", "settembre"),
    ("oct", "october", "okt", "oktober", "octobre", "octubre", "ott", "ottobre"),
    ("nov", "november", "novembre", "noviembre"),
    ("dec", "december", "dez", "dezember", "déc", "décembre", "decembre", "dic", "diciembre", "dicembre"),
)
_MONTHS = {name: i for i, names in enumerate(_MONTH_NAMES, start=1) for name in names}
_PART = re.compile(r"\d+|[^\W\d_]+")


_MONTH_FIRST = re.compile(r"^\s*[^\W\d_]{3,10}\.?\s+\d{1,2}(?:st|nd|rd|th)?,?\s+\d{4}")
_DAY_FIRST = re.compile(r"^\s*\d{1,2}(?:st|nd|rd|th|er|\.)?[\s-]+(?:de\s+)?[^\W\d_]{3,10}")
# The same two shapes anywhere in a text, whole ("Analysis: 19 November 2019 13:03").
_WORD_MONTH_FIRST = re.compile(r"(?<![\w])[^\W\d_]{3,10}\.?\s+\d{1,2}(?:st|nd|rd|th)?,?\s+\d{4}(?!\d)")
_WORD_DAY_FIRST = re.compile(
    r"(?<![\w.])\d{1,2}(?:st|nd|rd|th|er|\.)?[\s-]+(?:de\s+)?[^\W\d_]{3,10}\.?,?[\s-]+(?:de\s+)?\d{4}(?!\d)"
)
# A numeric date with the year last ("03/04/2024", "19.11.2019", "3-4-2024"): the only shape whose
# day/month order is in doubt.
NUMERIC_DATE = re.compile(r"(?<![\d./-])(\d{1,2})\s*([./-])\s*(\d{1,2})\s*\2\s*(\d{4})(?![\d])")


def locale_order(text: str) -> DateOrder | None:
    """The numeric day/month order of the locale a word date was printed in: "July 7, 2015" (US)
    prints 07/07/2015 month first, "7 July 2015" prints day first; None for a numeric date."""
    if _MONTH_FIRST.match(text) and parse_date(text, "DMY") is not None:
        return "MDY"
    if _DAY_FIRST.match(text) and parse_date(text, "DMY") is not None:
        return "DMY"
    return None


def word_date_orders(text: str) -> set[DateOrder]:
    """The numeric orders of the locales the word dates anywhere in `text` were printed in: {"MDY"}
    for a US printout ("Analysis: March 4, 2024"), {"DMY"} for a UK or European one, both when the
    text mixes them (no evidence then), none when it prints no month as a word."""
    found: set[DateOrder] = set()
    for match in _WORD_MONTH_FIRST.finditer(text):
        if parse_date(match.group(), "DMY") is not None:
            found.add("MDY")
    for match in _WORD_DAY_FIRST.finditer(text):
        if parse_date(match.group(), "DMY") is not None:
            found.add("DMY")
    return found


def numeric_dates(text: str) -> list[str]:
    """Every year-last numeric date printed in `text`, as printed."""
    return [match.group() for match in NUMERIC_DATE.finditer(text)]


def reads_alike(raw: str) -> bool:
    """True when a date means the same day whichever of day or month comes first ("07/07/2015",
    "July 7, 2015", ISO), so its order does not matter."""
    return parse_date(raw, "DMY") == parse_date(raw, "MDY")


def parse_date(text: str, order: DateOrder) -> date | None:
    """The date in `text`, or None when it is not a complete date (two-digit years are refused)."""
    parts = _PART.findall(text)
    words = [p.lower().rstrip(".") for p in parts if p.isalpha()]
    numbers = [p for p in parts if p.isdigit()]
    months = [_MONTHS[w] for w in words if w in _MONTHS]
    try:
        if not words and len(numbers) == 1 and len(numbers[0]) == 8:  # DICOM-style YYYYMMDD
            n = numbers[0]
            return date(int(n[:4]), int(n[4:6]), int(n[6:]))
        if months or len(numbers) == 2:  # "7 July 2015", "7 de julio de 2015", "July 7th, 2015"
            if len(months) != 1 or len(numbers) != 2:
                return None
            years = [n for n in numbers if len(n) == 4]
            days = [n for n in numbers if len(n) <= 2]
            if len(years) != 1 or len(days) != 1:
                return None
            return date(int(years[0]), months[0], int(days[0]))
        if len(numbers) != 3:
            return None
        a, b, c = numbers
        if len(a) == 4:
            return date(int(a), int(b), int(c))
        if len(c) != 4:
            return None
        if order == "DMY":
            return date(int(c), int(b), int(a))
        if order == "MDY":
            return date(int(c), int(a), int(b))
        return None  # a YMD layout printing the year last is not that layout
    except ValueError:
        return None
