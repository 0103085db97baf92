"""DICOM side of ingest: sniffing, safe reading, Hologic / GE SR / GE XML parsers, on our own
synthetic files (the shared samples are checked in test_shared_samples.py)."""

from __future__ import annotations

import warnings
from datetime import date
from typing import Any

import pytest

from ingest.dates import parse_date
from ingest.dicom.dates import resolve_order
from ingest.dicom.header import split_model_serial
from ingest.errors import (
    EmptyFile,
    ImplausibleValues,
    MalformedResults,
    MissingField,
    NotDicom,
    NotDxaResult,
    TooLarge,
    UnreadableFile,
)
from ingest.parse import ParseLimits, parse_file
from ingest.report import ParsedReport
from tests.unit.ingest import dicom_builders as b

LIMITS = ParseLimits()


def _by_site(report: ParsedReport) -> dict[tuple[str, str | None], float]:
    return {(m.site, m.side): m.bmd for m in report.measurements}


# --- sniffing -------------------------------------------------------------------------------------


def test_empty_file() -> None:
    with pytest.raises(EmptyFile, match="0 bytes"):
        parse_file(b"", "x.dcm", LIMITS)


def test_over_size_limit() -> None:
    with pytest.raises(TooLarge):
        parse_file(b"x" * 2048, "x.dcm", ParseLimits(max_bytes=1024))


def test_text_named_dcm_is_not_dicom() -> None:
    with pytest.raises(NotDicom, match="unrecognised format"):
        parse_file(b"MWL EXPORT 2019-03-12\nStation: QDR\n", "worklist.dcm", LIMITS)


def test_part10_without_preamble_is_read_without_force() -> None:
    data = b.hologic_file(b.hologic_blob(b.SPINE_ROWS))
    assert data[128:132] == b"DICM"
    report = parse_file(data[132:], "nopreamble.dcm", LIMITS)
    assert _by_site(report)[("L1-L4", None)] == pytest.approx(0.682)


def test_file_name_is_never_used_for_routing() -> None:
    data = b.hologic_file(b.hologic_blob(b.SPINE_ROWS))
    report = parse_file(data, "..%2f..%2fetc.pdf", LIMITS)
    assert report.format == "hologic_apex_dicom"


# --- truncation -----------------------------------------------------------------------------------


def test_truncated_sr_is_never_accepted_in_part() -> None:
    data = b.sr_file([b.container("AP Spine", [b.region(f"L{i}", f"0.{800 + i}") for i in range(1, 5)])])
    content_start = data.find(b"\x40\x00\x30\xa7")  # (0040,A730) ContentSequence
    assert content_start > 0
    for cut in range(content_start + 1, len(data) - 1, 7):
        with pytest.raises(UnreadableFile, match="truncated"):
            parse_file(data[:cut], "cut.dcm", LIMITS)


def test_truncated_header_is_unreadable_or_not_dicom() -> None:
    data = b.sr_file([b.container("AP Spine", [b.region("L1-L4", "0.9")])])
    for cut in (130, 140, 200, 300):
        with pytest.raises((UnreadableFile, NotDicom, NotDxaResult)):
            parse_file(data[:cut], "cut.dcm", LIMITS)


# --- Hologic --------------------------------------------------------------------------------------


def test_hologic_spine_total_is_the_analysed_range() -> None:
    report = parse_file(b.hologic_file(b.hologic_blob(b.SPINE_ROWS)), "sp.dcm", LIMITS)
    sites = _by_site(report)
    assert set(sites) == {("L1", None), ("L2", None), ("L3", None), ("L4", None), ("L1-L4", None)}
    total = next(m for m in report.measurements if m.site == "L1-L4")
    assert (total.t_score, total.z_score, total.provenance) == (-3.3, -2.3, "ResultsTable1[5][3]")
    assert report.device.model == "Horizon Ci" and report.device.serial == "301234M"


def test_hologic_excluded_vertebra_narrows_the_range() -> None:
    rows = [r for r in b.SPINE_ROWS if r[0] != "L1"]
    report = parse_file(b.hologic_file(b.hologic_blob(rows)), "sp.dcm", LIMITS)
    assert ("L2-L4", None) in _by_site(report) and ("L1-L4", None) not in _by_site(report)


def test_hologic_non_contiguous_set_is_not_a_site() -> None:
    rows = [r for r in b.SPINE_ROWS if r[0] != "L3"]
    report = parse_file(b.hologic_file(b.hologic_blob(rows)), "sp.dcm", LIMITS)
    assert not [m for m in report.measurements if "-" in m.site]


def test_hologic_columns_mapped_by_code_and_header_not_position() -> None:
    columns = [(1, "Region"), (5, "T-score"), (6, "Z-score"), (3, "BMD[g/cm<sup>2</sup>]")]
    rows = [
        ["L1", "-2.9", "-1.9", "0.626"],
        ["L2", "-3.3", "-2.3", "0.672"],
        ["Total", "-3.1", "-2.1", "0.650"],
    ]
    report = parse_file(b.hologic_file(b.hologic_blob(rows, columns)), "sp.dcm", LIMITS)
    m = {x.site: x for x in report.measurements}
    assert (m["L1-L2"].bmd, m["L1-L2"].t_score, m["L1-L2"].z_score) == (0.650, -3.1, -2.1)


def _spine_with_l1_bmd(cell: str) -> bytes:
    rows = [list(r) for r in b.SPINE_ROWS]
    rows[0][3] = cell
    return b.hologic_file(b.hologic_blob(rows))


@pytest.mark.parametrize("cell", ["nan", "NaN", "inf", "0.6x2", "0.626 0.672", "0.6.26", "O.626", "1/2"])
def test_hologic_bmd_cell_that_is_not_one_number_refuses_the_file(cell: str) -> None:
    """A damaged cell must neither vanish (L1 dropped, Total relabelled L2-L4) nor read as 0.6."""
    with pytest.raises(MalformedResults, match="BMD cell") as err:
        parse_file(_spine_with_l1_bmd(cell), "sp.dcm", LIMITS)
    assert cell not in str(err.value)


def test_hologic_bmd_cell_with_an_exponent_is_read_whole_and_refused_as_implausible() -> None:
    with pytest.raises(ImplausibleValues):
        parse_file(_spine_with_l1_bmd("1e23"), "sp.dcm", LIMITS)


@pytest.mark.parametrize("cell", ["0.626", " 0.626 ", "0,626", "6.26E-01", "+0.626", "0.626*", "0.6260"])
def test_hologic_bmd_cell_spellings_of_one_number(cell: str) -> None:
    sites = _by_site(parse_file(_spine_with_l1_bmd(cell), "sp.dcm", LIMITS))
    assert sites[("L1", None)] == pytest.approx(0.626) and ("L1-L4", None) in sites


@pytest.mark.parametrize("cell", ["", "-", "--", "N/A"])
def test_hologic_blank_bmd_cell_is_a_vertebra_not_printed(cell: str) -> None:
    sites = _by_site(parse_file(_spine_with_l1_bmd(cell), "sp.dcm", LIMITS))
    assert ("L1", None) not in sites and ("L2-L4", None) in sites


def test_hologic_without_bmd_column_is_malformed() -> None:
    columns = [(1, "Region"), (5, "T-score"), (6, "Z-score")]
    rows = [["L1", "-2.9", "-1.9"], ["Total", "-3.1", "-2.1"]]
    with pytest.raises(MalformedResults, match="BMD column"):
        parse_file(b.hologic_file(b.hologic_blob(rows, columns)), "sp.dcm", LIMITS)


def test_hologic_type_code_contradicting_header_is_malformed() -> None:
    columns = [(1, "Region"), (3, "T-score"), (6, "Z-score")]
    rows = [["L1", "-2.9", "-1.9"]]
    with pytest.raises(MalformedResults, match="column"):
        parse_file(b.hologic_file(b.hologic_blob(rows, columns)), "sp.dcm", LIMITS)


def test_hologic_creator_block_is_found_wherever_it_is() -> None:
    report = parse_file(b.hologic_file(b.hologic_blob(b.SPINE_ROWS), block=0x11), "sp.dcm", LIMITS)
    assert len(report.measurements) == 5


def test_hologic_sc_without_private_data_is_not_a_result() -> None:
    with pytest.raises(NotDxaResult, match="private"):
        parse_file(b.hologic_file(None), "sc.dcm", LIMITS)


@pytest.mark.parametrize(("vr", "encoding", "implicit"), [("UN", "latin-1", False), ("LT", "utf-8", True)])
def test_hologic_blob_encodings(vr: str, encoding: str, implicit: bool) -> None:
    blob = b.hologic_blob(b.SPINE_ROWS, extra='Comment = "Müller, Ward\'s";')
    report = parse_file(b.hologic_file(blob, vr=vr, encoding=encoding, implicit=implicit), "sp.dcm", LIMITS)
    assert _by_site(report)[("L1-L4", None)] == pytest.approx(0.682)


def test_hologic_serial_from_model_string_when_tag_absent() -> None:
    blob = b.hologic_blob(b.SPINE_ROWS, model="Discovery SL (S/N45678)")
    report = parse_file(b.hologic_file(blob, serial=None), "sp.dcm", LIMITS)
    assert report.device.serial == "301234M"  # the header's model string wins over the blob's
    assert report.device.strength == "serial"


def test_hologic_history_change_cells_and_markers() -> None:
    history = [
        ["03/20/2021", "0.682", "-0.012 (-1.7%)#", "-1.3%*"],
        ["03/18/2019", "0.694", " ", " "],
    ]
    blob = b.hologic_blob(
        b.SPINE_ROWS, history=history, extra='FractureRiskStr = "x<BR>* Denotes ..., LSC is 0.022 g/cm²";'
    )
    report = parse_file(b.hologic_file(blob), "sp.dcm", LIMITS)
    latest = report.extras.history[0]
    assert latest.date == date(2021, 3, 20) and latest.site == "L1-L4"
    assert latest.change_vs_baseline_g_cm2 == -0.012 and latest.change_vs_baseline_pct == -1.7
    assert latest.change_vs_previous_pct == -1.3 and latest.change_vs_previous_g_cm2 is None
    assert latest.significant_marker and latest.dissimilar_marker
    assert report.extras.printed_lsc_g_cm2 == (("L1-L4", 0.022),)


def test_hologic_dual_hip_tables_per_region() -> None:
    blob = b.hologic_blob(
        [
            ["Left", "4.79", "3.13", "0.653", "-1.7", "-0.2"],
            ["Right", "4.85", "3.11", "0.643", "-1.8", "-0.3"],
            ["Mean", "4.82", "3.12", "0.648", "-1.7", "-0.3"],
            ["|Diff.|", "0.06", "0.02", "0.010", " ", " "],
        ],
        scan_mode="f Left Hip",
        protocol="Hip",
    ).replace("Results Summary:", "DXA Results Summary Neck (Mean):")
    report = parse_file(b.hologic_file(blob), "dh.dcm", LIMITS)
    assert _by_site(report) == {
        ("femoral_neck", "left"): 0.653,
        ("femoral_neck", "right"): 0.643,
        ("femoral_neck", "mean"): 0.648,
    }
    assert report.scan_type == "dual_hip"


def test_hologic_forearm_drops_mid_and_maps_total_to_radius() -> None:
    rows = [
        ["1/3", "2.68", "1.62", "0.606", "-1.3", "-0.6"],
        ["MID", "5.36", "2.76", "0.515", "-1.2", "-0.5"],
        ["UD", "3.79", "1.42", "0.376", "-0.9", "-0.1"],
        ["Total", "11.83", "5.98", "0.506", "-1.2", "-0.5"],
    ]
    blob = b.hologic_blob(rows, scan_mode="x L.Forearm", protocol="Left Forearm")
    report = parse_file(b.hologic_file(blob), "fa.dcm", LIMITS)
    assert set(_by_site(report)) == {("radius_33", "left"), ("radius_ud", "left"), ("radius_total", "left")}


# --- GE Enhanced SR -------------------------------------------------------------------------------


@pytest.mark.parametrize("implicit", [False, True])
def test_ge_sr_mg_units_and_case_insensitive_meanings(implicit: bool) -> None:
    femur = b.container(
        "Left Femur",
        [
            b.region("Neck", "729", "mg/cm2", names=("bmd", "bmd_tscore", "Bmd_ZScore")),
            b.region("Shaft", "951", "mg/cm2"),
            b.region("Total", "820", "mg/cm2", t="-1.4", z="0.2"),
            b.container("Trend Total", [b.container("04/01/2018", [b.num("BMD", "820", "mg/cm2")])]),
        ],
    )
    report = parse_file(b.sr_file([femur], implicit=implicit), "sr.dcm", LIMITS)
    assert _by_site(report) == {("femoral_neck", "left"): 0.729, ("total_hip", "left"): 0.82}
    total = next(m for m in report.measurements if m.site == "total_hip")
    assert (total.t_score, total.z_score) == (-1.4, 0.2)
    assert total.provenance == "DXA Report/Left Femur/Total/BMD"
    assert report.extras.history[0].date == date(2018, 4, 1) and report.extras.history[0].bmd == 0.82


def test_ge_sr_dual_femur_sides_and_diff_dropped() -> None:
    dual = b.container(
        "DualFemur",
        [
            b.region("Neck Left", "0.758"),
            b.region("Neck Right", "0.759"),
            b.region("Neck Mean", "0.759"),
            b.container("Neck Diff.", [b.num("BMD", "0.001", "g/cm2")]),
            b.region("Total Mean", "0.857"),
        ],
    )
    report = parse_file(b.sr_file([dual], serial=None), "sr.dcm", LIMITS)
    assert set(_by_site(report)) == {
        ("femoral_neck", "left"),
        ("femoral_neck", "right"),
        ("femoral_neck", "mean"),
        ("total_hip", "mean"),
    }
    assert report.device.serial is None and report.device.strength == "weak"


def test_ge_sr_without_dxa_containers_is_not_a_result() -> None:
    with pytest.raises(NotDxaResult):
        parse_file(b.sr_file([b.container("FRAX", [b.num("HIP_FRAC_RISK", "3.9", "%")])]), "sr.dcm", LIMITS)


# --- GE ImageComments XML ---------------------------------------------------------------------------


def test_ge_xml_decimal_comma_and_mg() -> None:
    xml = (
        '<DXA_RESULTS><SCAN type="Right Femur">'
        '<ROI region="Neck"><BMD>0,647</BMD><BMD_TSCORE>-2,1</BMD_TSCORE><BMD_ZSCORE>-0,8</BMD_ZSCORE></ROI>'
        '<ROI region="Total"><BMD>726</BMD><BMD_TSCORE>-2,1</BMD_TSCORE></ROI>'
        "</SCAN></DXA_RESULTS>"
    )
    report = parse_file(b.image_with_comments(xml), "img.dcm", LIMITS)
    assert _by_site(report) == {("femoral_neck", "right"): 0.647, ("total_hip", "right"): 0.726}
    assert next(m for m in report.measurements if m.site == "femoral_neck").t_score == -2.1


def test_ge_xml_with_dtd_is_refused() -> None:
    xml = '<!DOCTYPE x [<!ENTITY a "aaaa">]><DXA_RESULTS><SCAN type="AP Spine"></SCAN></DXA_RESULTS>'
    with pytest.raises(MalformedResults):
        parse_file(b.image_with_comments(xml), "img.dcm", LIMITS)


def test_image_without_results() -> None:
    with pytest.raises(NotDxaResult, match="image only"):
        parse_file(b.image_with_comments("positioning ok"), "img.dcm", LIMITS)


# --- small readers ----------------------------------------------------------------------------------


def test_model_serial_split() -> None:
    assert split_model_serial("Horizon Ci (S/N 301234M)") == ("Horizon Ci", "301234M")
    assert split_model_serial("Discovery SL (S/N45678)") == ("Discovery SL", "45678")
    assert split_model_serial("Lunar iDXA") == ("Lunar iDXA", None)


def test_date_order_is_chosen_per_file() -> None:
    assert resolve_order(["04/01/2018"], date(2018, 4, 1), "DMY") == "MDY"
    assert resolve_order(["04/01/2018", "13/02/2019"], None, "MDY") == "DMY"
    assert parse_date("05-Sep-2019", "MDY") == date(2019, 9, 5)
    assert parse_date("22.12.2021", "DMY") == date(2021, 12, 22)


def test_no_pydicom_warning_escapes() -> None:
    data = b.hologic_file(b.hologic_blob(b.SPINE_ROWS)).replace(b"2.25.1234\x00", b"2.25.0123\x00")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        parse_file(data, "uid.dcm", LIMITS)
    assert caught == []


# --- fewer sites than the file holds is an error ------------------------------------------------


def _spine() -> Any:
    return b.container(
        "AP Spine", [b.region(f"L{i}", f"0.{800 + i}") for i in range(1, 5)] + [b.region("L1-L4", "0.9")]
    )


def test_ge_sr_femur_without_a_side_beside_a_spine_is_refused_not_dropped() -> None:
    femur = b.container("Femur", [b.region("Neck", "0.700"), b.region("Total", "0.800")])
    with pytest.raises(MissingField, match="side"):
        parse_file(b.sr_file([_spine(), femur]), "sr.dcm", LIMITS)


@pytest.mark.parametrize(("label", "refused"), [("Upper Neck", True), ("Trochanteric Area", True), ("Shaft", False)])
def test_ge_sr_row_naming_a_site_we_cannot_place(label: str, refused: bool) -> None:
    femur = b.container("Left Femur", [b.region("Neck", "0.700"), b.region(label, "0.650"), b.region("Total", "0.8")])
    data = b.sr_file([femur])
    if refused:
        with pytest.raises(MalformedResults, match="fewer sites"):
            parse_file(data, "sr.dcm", LIMITS)
    else:
        report = parse_file(data, "sr.dcm", LIMITS)
        assert {m.site for m in report.measurements} == {"femoral_neck", "total_hip"}


def test_a_lateral_spine_is_not_read_as_the_ap_spine() -> None:
    lateral = b.container("Lateral Spine", [b.region("L2-L4", "0.612")])
    report = parse_file(b.sr_file([lateral, _spine()]), "sr.dcm", LIMITS)
    assert {m.site: m.bmd for m in report.measurements}["L1-L4"] == 0.9
    assert "L2-L4" not in {m.site for m in report.measurements}


def test_ge_xml_femur_without_a_side_is_refused_not_dropped() -> None:
    xml = (
        '<DXA_RESULTS><SCAN type="AP Spine"><ROI region="L1-L4"><BMD>1.0</BMD></ROI></SCAN>'
        '<SCAN type="Femur"><ROI region="Neck"><BMD>0.7</BMD></ROI></SCAN></DXA_RESULTS>'
    )
    with pytest.raises(MissingField, match="side"):
        parse_file(b.image_with_comments(xml), "x.dcm", LIMITS)


def test_hologic_row_naming_a_site_we_cannot_place_is_refused() -> None:
    rows = [*b.SPINE_ROWS[:4], ["L1-L4 adj", "58.17", "39.69", "0.690", "-3.3", "-2.3"], b.SPINE_ROWS[4]]
    with pytest.raises(MalformedResults, match="fewer sites"):
        parse_file(b.hologic_file(b.hologic_blob(rows)), "h.dcm", LIMITS)
