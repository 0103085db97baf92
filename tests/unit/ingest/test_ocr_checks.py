"""The self-checks that catch OCR misreads (`ingest.ocr.checks`): each redundancy of a results
table, broken one value at a time the way OCR breaks it (a dropped minus sign, a digit misread),
names exactly the values involved; a table read right passes every check."""

from __future__ import annotations

from dataclasses import replace
from datetime import date

import pytest

from ingest.ocr.checks import check_report, identity_failures
from ingest.report import DeviceIdentity, ParsedReport, PatientInfo, SiteMeasurement, VendorExtras, VendorHistoryRow

# The Hologic sample's spine table (area cm², BMC g, BMD g/cm², T, Z) as printed.
ROWS = {
    "L1": (12.94, 9.38, 0.725, -2.0, -1.1),
    "L2": (14.08, 10.89, 0.773, -2.3, -1.4),
    "L3": (15.50, 12.66, 0.817, -2.5, -1.5),
    "L4": (17.43, 14.67, 0.841, -2.3, -1.3),
    "L1-L4": (59.95, 47.59, 0.794, -2.3, -1.3),
}
# The Chinese PRIMUS sample's rows (no BMC or area printed).
PRIMUS = {
    ("L1", None): (0.967, -0.6, 0.4),
    ("L2", None): (1.042, -0.7, 0.3),
    ("L3", None): (1.141, -0.4, 0.6),
    ("L4", None): (1.105, -0.8, 0.2),
    ("L1-L4", None): (1.070, -0.6, 0.4),
    ("femoral_neck", "left"): (0.764, -1.0, 0.4),
    ("trochanter", "left"): (0.666, -0.8, 0.5),
    ("total_hip", "left"): (0.888, -0.6, 0.7),
}


def _report(measurements: list[SiteMeasurement], birth: date | None = date(1948, 4, 14)) -> ParsedReport:
    return ParsedReport(
        format="test",
        patient=PatientInfo("X1", birth_date=birth),
        exam_date=date(2014, 7, 25),
        device=DeviceIdentity("HOLOGIC", "Horizon A", "302081M"),
        scan_type="spine",
        measurements=tuple(measurements),
    )


def _hologic(**changes: dict[str, float]) -> ParsedReport:
    out = []
    for site, (area, bmc, bmd, t, z) in ROWS.items():
        m = SiteMeasurement(site, None, bmd, t, z, bmc, area)
        out.append(replace(m, **changes.get(site, {})))
    return _report(out)


def _primus(**changes: dict[str, float]) -> ParsedReport:
    out = []
    for (site, side), (bmd, t, z) in PRIMUS.items():
        m = SiteMeasurement(site, side, bmd, t, z)
        out.append(replace(m, **changes.get(site, {})))
    return _report(out)


def test_tables_read_right_pass_every_check() -> None:
    assert check_report(_hologic()) == []
    assert check_report(_primus()) == []


@pytest.mark.parametrize(
    ("site", "change", "check", "flagged"),
    [
        ("L3", {"bmd": 0.877}, "bmd_ratio", {"L3/-/bmd", "L3/-/bmc", "L3/-/area"}),  # 1 read as 7
        ("L2", {"bmc_g": 16.89}, "bmd_ratio", {"L2/-/bmd", "L2/-/bmc", "L2/-/area"}),
        ("L1-L4", {"area_cm2": 69.95, "bmc_g": 55.54}, "range_sum", {"L1-L4/-/area", "L1/-/area"}),
        ("L4", {"z_score": 1.3}, "t_minus_z", {"L4/-/t", "L4/-/z"}),  # the minus sign dropped
        ("L1", {"t_score": 2.0}, "t_minus_z", {"L1/-/t", "L1/-/z"}),
    ],
)
def test_a_misread_fails_the_check_that_covers_it(
    site: str, change: dict[str, float], check: str, flagged: set[str]
) -> None:
    failures = check_report(_hologic(**{site: change}))
    assert any(f.check == check for f in failures), failures
    marked = {k for f in failures if f.check == check for k in f.keys}
    assert flagged <= marked


def test_a_spine_total_outside_its_vertebrae_is_caught_without_bmc_or_area() -> None:
    failures = check_report(_primus(**{"L1-L4": {"bmd": 1.570}}))  # 0 read as 5
    assert [f.check for f in failures] == ["range_between"]
    assert "L1-L4/-/bmd" in failures[0].keys


def test_a_hip_z_without_its_minus_is_caught_among_the_hip_rows() -> None:
    failures = check_report(_primus(trochanter={"t_score": 0.8}))
    assert {k for f in failures for k in f.keys} == {"trochanter/left/t", "trochanter/left/z"}


def test_dates_out_of_order_are_caught() -> None:
    born_after = _report([SiteMeasurement("L1-L4", None, 0.8)], birth=date(2016, 1, 1))
    assert [f.check for f in check_report(born_after)] == ["dates"]
    too_old = _report([SiteMeasurement("L1-L4", None, 0.8)], birth=date(1894, 1, 1))
    assert [f.check for f in check_report(too_old)] == ["dates"]
    later_trend = replace(
        _report([SiteMeasurement("L1-L4", None, 0.8)]),
        extras=VendorExtras(history=(VendorHistoryRow("L1-L4", None, date(2019, 1, 1), 0.8),)),
    )
    assert [f.check for f in check_report(later_trend)] == ["dates"]


def test_identity_printed_differently_is_caught() -> None:
    assert identity_failures(["RR953040", "RR953040"]) == []
    assert identity_failures(["RR953040", "rr953040 "]) == []
    assert [f.keys for f in identity_failures(["RR953040", "RR958040"])] == [("patient_id",)]
