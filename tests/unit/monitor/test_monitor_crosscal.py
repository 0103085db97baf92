from __future__ import annotations

import math
import random

import pytest

from monitor.comparisons import compare_history
from monitor.crosscal import (
    CrossCalibrationError,
    combine,
    generalized_lsc,
    in_vivo_cross_calibration,
    linear_regression,
    phantom_cross_calibration,
    pooled_lsc,
)
from tests.unit.monitor.monitor_builders import GE, HOLOGIC_A, HOLOGIC_B, NO_SERIAL, exam, load_config, spine

CONFIG = load_config()


def test_pooled_lsc() -> None:
    assert pooled_lsc(0.01, 0.01) == pytest.approx(0.0277)
    assert pooled_lsc(0.01, 0.02) == pytest.approx(2.77 * math.sqrt((0.0001 + 0.0004) / 2))


@pytest.mark.parametrize(("offset", "accepted"), [(0.0, True), (0.009, True), (0.0101, False), (-0.02, False)])
def test_phantom_tolerance(offset: float, accepted: bool) -> None:
    a = [1.000 + 0.001 * (i % 3 - 1) for i in range(10)]
    b = [v * (1 + offset) for v in a]
    result = phantom_cross_calibration(HOLOGIC_A, HOLOGIC_B, ["spine"], a, b, rms_sd_a=0.008, rms_sd_b=0.009)
    assert result.accepted is accepted
    assert result.difference_percent == pytest.approx(100 * offset)
    assert (result.record is not None) is accepted
    if result.record is not None:
        assert dict(result.record.lsc_g_cm2)["spine"] == pytest.approx(pooled_lsc(0.008, 0.009))


def test_phantom_needs_same_model_and_enough_scans() -> None:
    scans = [1.0] * 10
    with pytest.raises(CrossCalibrationError, match="in-vivo"):
        phantom_cross_calibration(HOLOGIC_A, GE, ["spine"], scans, scans, rms_sd_a=0.01, rms_sd_b=0.01)
    with pytest.raises(CrossCalibrationError, match="at least 10"):
        phantom_cross_calibration(HOLOGIC_A, HOLOGIC_B, ["spine"], scans[:5], scans, rms_sd_a=0.01, rms_sd_b=0.01)


def test_accepted_phantom_record_makes_comparisons_cross_calibrated() -> None:
    scans = [1.0] * 10
    result = phantom_cross_calibration(HOLOGIC_A, HOLOGIC_B, ["spine"], scans, scans, rms_sd_a=0.008, rms_sd_b=0.008)
    assert result.record is not None
    exams = [exam("1", "2015-01-01", HOLOGIC_A, spine(0.8)), exam("2", "2017-01-01", HOLOGIC_B, spine(0.83))]
    c = compare_history(exams, [], [result.record], CONFIG)[0]
    assert (c.status, c.lsc_source, c.significance) == ("ok_cross_calibrated", "crosscal", "gain")


def test_linear_regression_recovers_a_line() -> None:
    x = [0.6 + 0.01 * i for i in range(40)]
    y = [0.9 * v + 0.02 for v in x]
    slope, intercept, r, see = linear_regression(x, y)
    assert slope == pytest.approx(0.9)
    assert intercept == pytest.approx(0.02)
    assert r == pytest.approx(1.0)
    assert see == pytest.approx(0.0, abs=1e-12)


def test_glsc_reduces_to_lsc_for_identical_units() -> None:
    sigma = 0.01
    # identical units, perfect calibration: SEE² holds only the two precision errors
    assert generalized_lsc(sigma, sigma, 1.0, math.sqrt(2) * sigma) == pytest.approx(2.77 * sigma, rel=1e-3)


def test_glsc_grows_with_calibration_scatter_and_slope() -> None:
    base = generalized_lsc(0.01, 0.01, 1.0, 0.015)
    assert generalized_lsc(0.01, 0.01, 1.0, 0.03) > base
    assert generalized_lsc(0.01, 0.01, 1.2, 0.015) > generalized_lsc(0.01, 0.01, 0.8, 0.015)
    # the precision part is a floor: an SEE below it adds nothing
    assert generalized_lsc(0.01, 0.01, 1.0, 0.0) == pytest.approx(1.96 * math.sqrt(0.0002))


def test_in_vivo_cross_calibration() -> None:
    rng = random.Random(7)
    old = [rng.uniform(0.6, 1.2) for _ in range(100)]
    new = [0.9 * v + 0.02 + rng.gauss(0, 0.012) for v in old]
    result = in_vivo_cross_calibration(GE, HOLOGIC_A, "L1-L4", old, new, rms_sd_old=0.01, rms_sd_new=0.008)
    assert result.slope == pytest.approx(0.9, abs=0.02)
    assert result.intercept == pytest.approx(0.02, abs=0.02)
    assert result.note is None
    assert result.glsc_g_cm2 > 2.77 * 0.008 / math.sqrt(2)
    assert result.record.kind == "in_vivo"
    assert result.record.regression_for("L1-L4") == (result.slope, result.intercept)
    exams = [exam("1", "2016-01-12", GE, spine(0.858)), exam("2", "2018-02-06", HOLOGIC_A, spine(0.795))]
    c = compare_history(exams, [], [result.record], CONFIG)[0]
    assert c.status == "ok_cross_calibrated"
    assert c.lsc_g_cm2 == pytest.approx(result.glsc_g_cm2, abs=1e-4)


def test_in_vivo_small_studies() -> None:
    old = [0.6 + 0.01 * i for i in range(40)]
    new = [v + 0.01 * (i % 2) for i, v in enumerate(old)]
    result = in_vivo_cross_calibration(GE, HOLOGIC_A, "L1-L4", old, new, rms_sd_old=0.01, rms_sd_new=0.01)
    assert result.note is not None and "100" in result.note
    with pytest.raises(CrossCalibrationError, match="at least 30"):
        in_vivo_cross_calibration(GE, HOLOGIC_A, "L1-L4", old[:20], new[:20], rms_sd_old=0.01, rms_sd_new=0.01)
    with pytest.raises(CrossCalibrationError, match="serial"):
        in_vivo_cross_calibration(NO_SERIAL, HOLOGIC_A, "L1-L4", old, new, rms_sd_old=0.01, rms_sd_new=0.01)


def test_combine_per_site_records_keeps_each_regression() -> None:
    old = [0.6 + 0.01 * i for i in range(40)]
    spine_cal = in_vivo_cross_calibration(
        GE,
        HOLOGIC_A,
        "L1-L4",
        old,
        [0.9 * v + 0.01 * (i % 2) for i, v in enumerate(old)],
        rms_sd_old=0.01,
        rms_sd_new=0.01,
    )
    hip_cal = in_vivo_cross_calibration(
        GE,
        HOLOGIC_A,
        "total_hip",
        old,
        [0.95 * v + 0.01 * (i % 2) for i, v in enumerate(old)],
        rms_sd_old=0.01,
        rms_sd_new=0.01,
    )
    both = combine([spine_cal.record, hip_cal.record])
    assert both.sites == frozenset({"L1-L4", "total_hip"})
    assert both.regression_for("total_hip") == (hip_cal.slope, hip_cal.intercept)
    assert both.regression_for("L1-L4") == (spine_cal.slope, spine_cal.intercept)
