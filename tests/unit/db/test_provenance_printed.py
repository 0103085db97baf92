"""A measurement's provenance is decoded only when it may hold what the machine printed; whatever
it holds, the measurement comes out as decoding it whole gives."""

from __future__ import annotations

import json
from typing import Any

import pytest

from db.converters import measurement_from_columns, provenance_printed

ORIGIN = {"file": 7, "at": "row 3"}


@pytest.mark.parametrize(
    "provenance",
    [
        None,
        {},
        {"bmd": ORIGIN, "t_score": ORIGIN},
        {"bmd": ORIGIN, "vendor_lsc": {"g_cm2": 0.021, "file": 9}},
        {"bmd": ORIGIN, "vendor_significant": {"previous": True, "baseline": False}},
        {"bmd": ORIGIN, "vendor_change_pct": -3.1},
        {"bmd": {"file": None, "at": "Tabelle Ä 骨密度"}, "vendor_lsc": {"g_cm2": 0.03, "file": None}},
        {"bmd": {"file": 1, "at": "a vendor_lsc-like place name"}},
    ],
)
def test_the_measurement_is_what_the_whole_provenance_gives(provenance: dict[str, Any] | None) -> None:
    text = None if provenance is None else json.dumps(provenance)
    whole = measurement_from_columns("L1-L4", None, 0.9, -1.2, -0.4, 61.0, provenance)
    assert measurement_from_columns("L1-L4", None, 0.9, -1.2, -0.4, 61.0, provenance_printed(text)) == whole


def test_only_a_provenance_with_something_printed_is_decoded() -> None:
    assert provenance_printed(json.dumps({"bmd": ORIGIN, "z_score": ORIGIN})) is None
    assert provenance_printed(None) is None
    printed = {"bmd": ORIGIN, "vendor_lsc": {"g_cm2": 0.021, "file": 9}}
    assert provenance_printed(json.dumps(printed)) == printed
    # a key spelled with escapes is still found (no writer does so, but JSON allows it)
    escaped = '{"\\u0076endor_lsc": {"g_cm2": 0.02, "file": 1}}'
    assert provenance_printed(escaped) == {"vendor_lsc": {"g_cm2": 0.02, "file": 1}}
    assert (
        measurement_from_columns("L1", None, 0.8, None, None, None, provenance_printed(escaped)).vendor_lsc_g_cm2
        == 0.02
    )
