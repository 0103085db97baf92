from __future__ import annotations

from dataclasses import replace
from datetime import date

import pytest

from monitor.model import Measurement
from monitor.who import classify_exam, classify_history
from tests.unit.monitor.monitor_builders import HOLOGIC_A, exam, hip, load_config

CONFIG = load_config()


@pytest.mark.parametrize(
    ("measurements", "category", "site"),
    [
        ([Measurement("L1-L4", None, 1.0, t_score=-0.9)], "normal", "L1-L4"),
        ([Measurement("L1-L4", None, 1.0, t_score=-1.0)], "normal", "L1-L4"),
        ([Measurement("L1-L4", None, 1.0, t_score=-1.1)], "low_bone_mass", "L1-L4"),
        ([Measurement("L1-L4", None, 1.0, t_score=-2.4)], "low_bone_mass", "L1-L4"),
        ([Measurement("L1-L4", None, 1.0, t_score=-2.5)], "osteoporosis", "L1-L4"),
        # the lowest of spine / neck / total hip, any side
        (
            [
                Measurement("L1-L4", None, 1.0, t_score=-1.2),
                Measurement("femoral_neck", "right", 0.6, t_score=-2.6),
                Measurement("total_hip", "left", 0.7, t_score=-1.9),
            ],
            "osteoporosis",
            "femoral_neck",
        ),
        # single vertebrae, trochanter and Ward's do not count
        (
            [
                Measurement("L1-L4", None, 1.0, t_score=-1.2),
                Measurement("L1", None, 1.0, t_score=-3.0),
                Measurement("wards", "left", 0.5, t_score=-3.1),
                Measurement("trochanter", "left", 0.5, t_score=-2.9),
            ],
            "low_bone_mass",
            "L1-L4",
        ),
        # the 1/3 radius only when spine and hip have no T-score
        (
            [
                Measurement("L1-L4", None, 1.0, t_score=-0.5),
                Measurement("radius_33", "left", 0.6, t_score=-2.7),
            ],
            "normal",
            "L1-L4",
        ),
        ([Measurement("radius_33", "left", 0.6, t_score=-2.7)], "osteoporosis", "radius_33"),
        ([Measurement("L1-L4", None, 1.0)], None, None),
    ],
)
def test_category(measurements: list[Measurement], category: str | None, site: str | None) -> None:
    result = classify_exam(exam("1", "2020-01-01", HOLOGIC_A, *measurements), CONFIG)
    assert result.category == category
    assert result.site == site


@pytest.mark.parametrize(("z", "flag"), [(-1.9, False), (-2.0, True), (-2.6, True), (None, False)])
def test_z_below_expected_range(z: float | None, flag: bool) -> None:
    e = exam("1", "2020-01-01", HOLOGIC_A, hip("total_hip", "left", 0.7, t=-1.0, z=z))
    assert classify_exam(e, CONFIG).z_below_expected is flag


def test_osteoporosis_persists() -> None:
    exams = [
        exam("1", "2015-01-01", HOLOGIC_A, Measurement("L1-L4", None, 0.7, t_score=-2.7)),
        exam("2", "2017-01-01", HOLOGIC_A, Measurement("L1-L4", None, 0.8, t_score=-2.0)),
    ]
    result = classify_history(exams, CONFIG)
    assert result.category == "osteoporosis"
    assert result.lowest_t == -2.0  # the latest T is still what is shown


def test_low_bone_mass_does_not_persist() -> None:
    exams = [
        exam("1", "2015-01-01", HOLOGIC_A, Measurement("L1-L4", None, 0.7, t_score=-1.7)),
        exam("2", "2017-01-01", HOLOGIC_A, Measurement("L1-L4", None, 0.8, t_score=-0.8)),
    ]
    assert classify_history(exams, CONFIG).category == "normal"


@pytest.mark.parametrize(
    ("birth", "category"),
    [
        ("1970-01-02", "z_score_only"),  # 49 the day before the 50th birthday
        ("1970-01-01", "osteoporosis"),  # 50 on the scan day
        (None, "osteoporosis"),  # age unknown: the vendor's own reading
    ],
)
def test_who_categories_apply_from_fifty(birth: str | None, category: str) -> None:
    e = exam("1", "2020-01-01", HOLOGIC_A, Measurement("L1-L4", None, 0.7, t_score=-2.8, z_score=-2.1))
    born = date.fromisoformat(birth) if birth else None
    result = classify_exam(e, CONFIG, born)
    assert result.category == category
    assert result.z_below_expected is True  # the Z-score is read at every age


def test_osteoporosis_before_fifty_is_not_a_diagnosis_that_persists() -> None:
    born = date(1968, 6, 1)
    exams = [
        exam("1", "2016-01-01", HOLOGIC_A, Measurement("L1-L4", None, 0.7, t_score=-2.9)),  # aged 47
        exam("2", "2019-01-01", HOLOGIC_A, Measurement("L1-L4", None, 0.8, t_score=-1.8)),  # aged 50
    ]
    assert classify_history(exams[:1], CONFIG, born).category == "z_score_only"
    assert classify_history(exams, CONFIG, born).category == "low_bone_mass"


def test_age_limit_is_configurable() -> None:
    e = exam("1", "2020-01-01", HOLOGIC_A, Measurement("L1-L4", None, 0.7, t_score=-2.8))
    no_limit = replace(CONFIG, who_min_age_years=0)
    assert classify_exam(e, no_limit, date(2000, 1, 1)).category == "osteoporosis"
