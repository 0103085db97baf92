"""Pure helpers of the web package: CSV escaping, iCalendar, SVG writer, FHIR codes."""

from __future__ import annotations

import io
from datetime import date

import pandas as pd
import pytest
from fhir.resources.R4B.bundle import Bundle

from services.exports import escape_cell, to_csv
from services.fhir import build_bundle, loinc_codes
from web import svg
from web.exports import to_ics
from web.filters import person_name


@pytest.mark.parametrize("cell", ["=1+2", "+1", "-A1", "@SUM(A1)", "\tx", "\rx"])
def test_formula_cells_get_an_apostrophe(cell: str) -> None:
    assert escape_cell(cell) == "'" + cell


def test_numbers_and_plain_text_are_untouched() -> None:
    assert escape_cell(-1.5) == -1.5
    assert escape_cell("Horizon W") == "Horizon W"
    frame = pd.read_csv(io.StringIO(to_csv([("=x", -0.25, None)], ("a", "b", "c"))))
    assert frame["a"][0] == "'=x" and frame["b"][0] == -0.25


def test_ics_lines_are_folded_and_escaped() -> None:
    text = to_ics([("u1", date(2020, 1, 2), "Due; soon, maybe", "x" * 200)])
    assert "SUMMARY:Due\\; soon\\, maybe" in text
    assert all(len(line.encode()) <= 75 for line in text.split("\r\n"))
    assert "DTEND;VALUE=DATE:20200103" in text


def test_svg_escapes_text_and_attributes() -> None:
    out = svg.element("text", {"data-x": '"><script>'}, text="<b>&")
    assert "<script>" not in out and "&lt;b&gt;&amp;" in out and "&quot;" in out


def test_scale_ticks_are_round_and_inside() -> None:
    scale = svg.LinearScale((0.71, 0.93), (100, 0))
    ticks = scale.ticks(5)
    assert ticks[0] >= 0.71 and ticks[-1] <= 0.93 and len(ticks) >= 3
    assert scale(0.71) == 100 and scale(0.93) == 0


def test_loinc_codes_by_site_and_side() -> None:
    assert loinc_codes("L2-L4", None)[0][0] == "24966-4"
    assert loinc_codes("total_hip", "mean")[0][0] == "38261-4"
    assert loinc_codes("total_hip", "left")[1] == ("80946-7", "DXA Hip - left [T-score] Bone density")
    z_code = loinc_codes("femoral_neck", "right")[2]
    assert z_code is not None and z_code[0] == "80939-2"
    assert loinc_codes("radius_33", "left")[0][0] == "24890-6"
    assert loinc_codes("total_body", None)[1] is None


def test_fhir_bundle_without_serial_and_missing_scores_validates() -> None:
    export = {
        "patient_id": "p/1",
        "exams": [
            {
                "exam_id": "7",
                "date": "2020-02-03",
                "device": {"manufacturer": "GE", "model": "Prodigy", "serial": None},
                "measurements": [{"site": "radius_33", "side": "left", "bmd": 0.7, "t_score": None, "z_score": None}],
            }
        ],
        "comparisons": [],
        "next_scan": {"due": None, "rule_id": None, "reason": "", "alerts": []},
    }
    bundle = build_bundle(export)
    Bundle.model_validate(bundle)
    assert build_bundle(export) == bundle  # stable ids
    device = next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Device")
    assert "serialNumber" not in device
    observations = [e for e in bundle["entry"] if e["resource"]["resourceType"] == "Observation"]
    assert len(observations) == 1


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("TANAKA^JOAN", "TANAKA, JOAN"),
        ("McAllister^Joan^Ann^Dr.^PhD", "McAllister, Dr. Joan Ann PhD"),
        ("Wu^Xiuying=吴^秀英", "Wu, Xiuying (吴秀英)"),
        ("=吴^秀英", "吴秀英"),
        ("吴秀英", "吴秀英"),
        ("Smith, Jane", "Smith, Jane"),  # a PDF's printed name is left alone
        ("^^^^", "—"),
        (None, "—"),
    ],
)
def test_person_names_read_as_written(raw: str | None, shown: str) -> None:
    assert person_name(raw) == shown
