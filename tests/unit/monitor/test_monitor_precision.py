from __future__ import annotations

import math

import pytest

from monitor.precision import (
    PrecisionStudyError,
    TooFewDegreesOfFreedom,
    check_technologist,
    facility_study,
    lsc_from_rms_sd,
    pool_precision,
    precision_study,
    precision_study_from_config,
)
from tests.unit.monitor.monitor_builders import load_config

CONFIG = load_config()


def pairs(n: int, d: float, base: float = 0.8) -> list[list[float]]:
    return [[base + 0.01 * i, base + 0.01 * i + d] for i in range(n)]


def triples(n: int, d: float, base: float = 0.8) -> list[list[float]]:
    return [[base + 0.01 * i - d, base + 0.01 * i, base + 0.01 * i + d] for i in range(n)]


def test_30_by_2() -> None:
    r = precision_study("L1-L4", pairs(30, 0.01))
    assert r.degrees_of_freedom == 30
    assert r.design == "30x2" and r.note is None
    assert r.rms_sd_g_cm2 == pytest.approx(0.01 / math.sqrt(2))
    assert r.lsc_g_cm2 == pytest.approx(2.77 * 0.01 / math.sqrt(2))
    assert r.lsc_percent == pytest.approx(2.77 * r.rms_cv_percent)


def test_15_by_3() -> None:
    r = precision_study("total_hip", triples(15, 0.008))
    assert (r.degrees_of_freedom, r.patients, r.scans, r.design) == (30, 15, 45, "15x3")
    assert r.rms_sd_g_cm2 == pytest.approx(0.008)
    expected_cv = 100 * math.sqrt(sum((0.008 / (0.8 + 0.01 * i)) ** 2 for i in range(15)) / 15)
    assert r.rms_cv_percent == pytest.approx(expected_cv)


def test_rms_is_root_mean_of_variances_not_mean_of_sds() -> None:
    data = [[1.0, 1.0 + d] for d in [0.0, 0.02] * 15]
    r = precision_study("femoral_neck", data)
    assert r.rms_sd_g_cm2 == pytest.approx(math.sqrt((0 + 0.02**2 / 2) / 2))
    assert r.rms_sd_g_cm2 > sum(abs(d) / math.sqrt(2) for d in [0.0, 0.02]) / 2


def test_other_design_with_enough_degrees_of_freedom_is_accepted_with_a_note() -> None:
    r = precision_study("L1-L4", triples(20, 0.01))
    assert r.degrees_of_freedom == 40
    assert r.note is not None and "20x3" in r.note


@pytest.mark.parametrize(
    ("data", "dof"),
    [(pairs(29, 0.01), 29), (triples(14, 0.01), 28), (pairs(10, 0.01), 10)],
)
def test_too_few_degrees_of_freedom(data: list[list[float]], dof: int) -> None:
    with pytest.raises(TooFewDegreesOfFreedom) as err:
        precision_study("L1-L4", data)
    assert isinstance(err.value, ValueError)
    assert err.value.degrees_of_freedom == dof
    assert str(dof) in str(err.value)


@pytest.mark.parametrize(
    ("data", "word"),
    [([[0.8]] * 40, "at least 2"), ([[0.8, -0.1]] * 30, "not positive"), ([], "no patients")],
)
def test_invalid_studies(data: list[list[float]], word: str) -> None:
    with pytest.raises(PrecisionStudyError, match=word):
        precision_study("L1-L4", data)


def test_pooling_technologists_weights_by_degrees_of_freedom() -> None:
    a = precision_study("L1-L4", pairs(30, 0.01))
    b = precision_study("L1-L4", triples(15, 0.02))
    pooled = pool_precision([a, b])
    assert pooled.degrees_of_freedom == 60
    assert pooled.rms_sd_g_cm2 == pytest.approx(math.sqrt((30 * a.rms_sd_g_cm2**2 + 30 * b.rms_sd_g_cm2**2) / 60))
    assert pooled.lsc_g_cm2 == pytest.approx(2.77 * pooled.rms_sd_g_cm2)
    # pooling equals one study holding every patient
    assert pooled.rms_sd_g_cm2 == pytest.approx(
        precision_study("L1-L4", pairs(30, 0.01) + triples(15, 0.02)).rms_sd_g_cm2
    )
    with pytest.raises(PrecisionStudyError, match="across sites"):
        pool_precision([a, precision_study("total_hip", pairs(30, 0.01))])


@pytest.mark.parametrize(
    ("site", "d", "acceptable"),
    [
        ("L1-L4", 0.010, True),  # ~0.75 %CV
        ("L1-L4", 0.030, False),  # ~2.2 %CV > 1.9
        ("total_hip", 0.022, True),  # ~1.65 %CV <= 1.8
        ("total_hip", 0.026, False),  # ~1.95 %CV
        ("femoral_neck", 0.026, True),  # <= 2.5
        ("femoral_neck", 0.036, False),  # ~2.7 %CV
        ("radius_33", 0.05, None),  # no ISCD limit configured
    ],
)
def test_minimum_acceptable_precision(site: str, d: float, acceptable: bool | None) -> None:
    r = precision_study_from_config(site, pairs(30, d, base=0.8), CONFIG)
    assert check_technologist(r, CONFIG).acceptable is acceptable


def test_configured_limits_are_iscd() -> None:
    assert (CONFIG.max_cv_percent_for("L2-L4"), CONFIG.max_cv_percent_for("total_hip")) == (1.9, 1.8)
    assert CONFIG.max_cv_percent_for("femoral_neck") == 2.5


def test_lsc_from_rms_sd() -> None:
    assert lsc_from_rms_sd(0.01) == pytest.approx(0.0277)


def _by_patient(groups: list[list[float]]) -> dict[str, list[float]]:
    return {f"p{i}": g for i, g in enumerate(groups)}


def test_facility_pools_technologists_too_small_to_judge_alone() -> None:
    # three technologists, 10 patients x 2 scans each: 10 degrees of freedom apiece, 30 together
    spreads = {"ann": 0.01, "ben": 0.02, "cai": 0.03}
    study = facility_study("L1-L4", {t: _by_patient(pairs(10, d)) for t, d in spreads.items()}, CONFIG)
    assert study.error is None and study.facility is not None
    assert study.facility.degrees_of_freedom == 30
    # a pair differing by d has variance d²/2: the pooled RMS-SD is sqrt(mean of d²/2)
    expected = math.sqrt(sum(d**2 / 2 for d in spreads.values()) / 3)
    assert study.facility.rms_sd_g_cm2 == pytest.approx(expected)
    assert all(t.check is None and "ISCD asks 30" in (t.error or "") for t in study.technologists)
    assert study.over_limit == ()


def test_facility_judges_each_full_technologist_study() -> None:
    good, poor = _by_patient(pairs(30, 0.005)), _by_patient(pairs(30, 0.08))
    study = facility_study("L1-L4", {"good": good, "poor": poor}, CONFIG)
    assert study.facility is not None
    assert [t.technologist for t in study.over_limit] == ["poor"]
    assert next(t for t in study.technologists if t.technologist == "good").check.acceptable  # type: ignore[union-attr]


def test_facility_study_refuses_scans_that_cannot_count() -> None:
    once = {**_by_patient(pairs(30, 0.01)), "lonely": [0.9]}
    study = facility_study("L1-L4", {"ann": once, "ben": _by_patient(pairs(30, 0.01))}, CONFIG)
    assert study.facility is None and study.error is not None and study.error.startswith("ann:")
    small = facility_study("L1-L4", {"ann": _by_patient(pairs(12, 0.01))}, CONFIG)
    assert small.facility is None and "12 degrees of freedom" in (small.error or "")
