"""The one reader of vendor-printed dates, for PDF and DICOM parsers alike."""

from __future__ import annotations

from datetime import date

import pytest

from ingest.dates import DateOrder, parse_date


@pytest.mark.parametrize(
    ("text", "order", "expected"),
    [
        ("05-Sep-2019", "MDY", date(2019, 9, 5)),
        ("5 September, 2019", "DMY", date(2019, 9, 5)),
        ("Sept. 5 2019", "DMY", date(2019, 9, 5)),
        ("March 20, 2021", "DMY", date(2021, 3, 20)),
        ("20 marzo 2021", "MDY", date(2021, 3, 20)),  # a month word that starts like the English one
        ("04/01/2018", "MDY", date(2018, 4, 1)),
        ("04/01/2018", "DMY", date(2018, 1, 4)),
        ("22.12.2021", "DMY", date(2021, 12, 22)),
        ("2019-09-05", "DMY", date(2019, 9, 5)),  # a year in front is unambiguous
        ("2019年03月12日", "MDY", date(2019, 3, 12)),
        ("20190905", "DMY", date(2019, 9, 5)),  # DICOM DA
        ("13/02/2019", "MDY", None),  # no 13th month: never silently flipped
        ("04/01/18", "MDY", None),  # two-digit years are refused
        ("31-Feb-2019", "DMY", None),
        ("Date of birth", "DMY", None),
        ("", "DMY", None),
    ],
)
def test_parse_date(text: str, order: DateOrder, expected: date | None) -> None:
    assert parse_date(text, order) == expected
