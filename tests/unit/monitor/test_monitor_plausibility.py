"""The plausibility rules of the pure core, and their column lengths kept equal to the schema's."""

from __future__ import annotations

import math
from datetime import date

import pytest

from monitor import plausibility as p


@pytest.mark.parametrize("bmd", [0.0, -0.1, 1e23, math.nan, math.inf, 0.04, 3.01])
def test_bmd_outside_range(bmd: float) -> None:
    assert p.check_measurement("L1", bmd=bmd)


@pytest.mark.parametrize("bmd", [0.3, 0.682, 1.6, 2.9])
def test_bmd_inside_range(bmd: float) -> None:
    assert p.check_measurement("L1", bmd=bmd, bmc_g=40.0, area_cm2=58.0, t_score=-3.3, z_score=2.0) == []


def test_each_value_is_named() -> None:
    problems = p.check_measurement("total_hip left", bmd=0.9, bmc_g=-1, area_cm2=0, t_score=-177, z_score=11)
    assert [x.split(" is ")[0] for x in problems] == [
        "BMC at total_hip left",
        "area at total_hip left",
        "T-score at total_hip left",
        "Z-score at total_hip left",
    ]


def test_dates() -> None:
    today = date(2026, 1, 10)
    assert p.check_dates(date(2020, 1, 1), date(1950, 1, 1), today) == []
    assert p.check_dates(date(2026, 1, 11), None, today) == []  # a day of slack for time zones
    assert "in the future" in p.check_dates(date(9999, 12, 31), None, today)[0]
    assert "before 1987" in p.check_dates(date(1800, 1, 1), None, today)[0]
    assert "after the exam" in p.check_dates(date(2020, 1, 1), date(2021, 1, 1), today)[0]
    assert "before 1880" in p.check_dates(date(2020, 1, 1), date(1800, 1, 1), today)[0]
    assert p.check_dates(date(9999, 12, 31), None, None) == []  # no clock given: no future check


def test_text_rules_never_quote_the_value() -> None:
    unprintable = "patient ID contains characters that cannot be printed (control or separator)"
    assert p.check_text("patient ID", "\x01") == [unprintable]
    assert p.check_text("patient ID", " ", required=True) == ["patient ID is blank"]
    assert p.check_text("patient ID", None, required=True) == ["patient ID is missing"]
    assert p.check_text("manufacturer", "H" * 70_000) == ["manufacturer is 70000 characters long, over the 128 allowed"]
    assert p.check_text("patient name", "DOE^JANE\x00") == ["patient name contains control characters"]
    assert p.check_text("patient name", "王^秀英") == []
    assert p.check_text("patient ID", "12-345/67 A") == []


def test_column_lengths_match_the_schema() -> None:
    from db import models as m

    columns = {
        "patient ID": m.Patient.identifier,
        "issuer": m.Patient.issuer,
        "patient name": m.Patient.name,
        "sex": m.Patient.sex,
        "manufacturer": m.Device.manufacturer,
        "device model": m.Device.model,
        "device serial": m.Device.serial,
        "software version": m.Exam.software_version,
        "SOP instance UID": m.SourceFile.sop_instance_uid,
        "format": m.SourceFile.format,
        "scan mode": m.Exam.scan_mode,
        "analysis protocol": m.Exam.analysis_protocol,
        "reference database": m.Exam.reference_database,
        "site": m.Measurement.site,
        "side": m.Measurement.side,
        "vertebral set": m.Exam.vertebral_set,
    }
    assert set(columns) == set(p.COLUMN_LENGTHS)
    for label, column in columns.items():
        assert column.property.columns[0].type.length == p.COLUMN_LENGTHS[label], label
