"""Properties that must hold for any input, not just the cases we thought of."""

from __future__ import annotations

import math
from datetime import date

from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.comparisons import compare_history, percent_change
from monitor.crosscal import pooled_lsc
from monitor.model import Exam, Machine, Measurement
from monitor.precision import precision_study
from tests.unit.monitor.monitor_builders import load_config

CONFIG = load_config()
bmd = st.floats(min_value=0.2, max_value=2.0, allow_nan=False)
serials = st.text(alphabet="ABCDEFGH0123456789+", min_size=1, max_size=8)


@given(bmd, bmd)
def test_percent_change_sign_matches_delta_and_reverses(a: float, b: float) -> None:
    forward = percent_change(a, b)
    backward = percent_change(b, a)
    assert (forward > 0) == (b > a)
    assert (forward < 0) == (b < a)
    if a != b:
        assert (forward > 0) != (backward > 0)


@given(bmd, bmd)
def test_comparison_delta_and_percent_agree_in_sign(a: float, b: float) -> None:
    m = Machine("HOLOGIC", "Horizon Ci", "1")
    exams = [
        Exam("1", date(2015, 1, 1), m, (Measurement("total_hip", "left", a),)),
        Exam("2", date(2017, 1, 1), m, (Measurement("total_hip", "left", b),)),
    ]
    for c in compare_history(exams, [], [], CONFIG):
        assert c.delta_g_cm2 is not None and c.percent_change is not None
        assert c.delta_g_cm2 * c.percent_change >= 0
        assert c.significance in ("gain", "loss", "stable")
        if c.significance == "gain":
            assert b > a
        if c.significance == "loss":
            assert b < a


deviation = st.floats(min_value=-0.05, max_value=0.05, allow_nan=False)


@settings(max_examples=50)
@given(
    st.lists(
        st.tuples(st.floats(min_value=0.6, max_value=1.5), st.lists(deviation, min_size=2, max_size=3)),
        min_size=30,
        max_size=35,
    ),
    st.floats(min_value=0.1, max_value=10, allow_nan=False),
)
def test_lsc_scales_with_rms_sd(patients: list[tuple[float, list[float]]], k: float) -> None:
    """Scaling every patient's scatter around its own BMD by k scales RMS-SD and LSC by k."""
    base = precision_study("L1-L4", [[mean + d for d in devs] for mean, devs in patients])
    scaled = precision_study("L1-L4", [[mean + k * d for d in devs] for mean, devs in patients])
    assert math.isclose(base.lsc_g_cm2, 2.77 * base.rms_sd_g_cm2, rel_tol=1e-12)
    assert math.isclose(scaled.lsc_g_cm2, k * base.lsc_g_cm2, rel_tol=1e-6, abs_tol=1e-12)


@given(
    st.floats(min_value=0, max_value=0.1),
    st.floats(min_value=0, max_value=0.1),
    st.floats(min_value=0.1, max_value=10),
)
def test_pooled_lsc_scales(a: float, b: float, k: float) -> None:
    assert abs(pooled_lsc(k * a, k * b) - k * pooled_lsc(a, b)) <= 1e-12 + 1e-9 * k * pooled_lsc(a, b)


@given(serials, serials, bmd, bmd, st.sampled_from(["L1-L4", "femoral_neck", "total_hip", "radius_33"]))
def test_rejected_whenever_serials_differ(s1: str, s2: str, a: float, b: float, site: str) -> None:
    side = None if site == "L1-L4" else "left"
    exams = [
        Exam("1", date(2015, 1, 1), Machine("HOLOGIC", "Horizon Ci", s1), (Measurement(site, side, a),)),
        Exam("2", date(2017, 1, 1), Machine("Hologic Inc.", "Horizon Ci", s2), (Measurement(site, side, b),)),
    ]
    comparisons = compare_history(exams, [], [], CONFIG)
    assert len(comparisons) == 2
    same = s1.casefold() == s2.casefold()
    for c in comparisons:
        assert (c.status == "ok") is same
        if not same:
            assert c.status == "rejected_cross_machine"
            assert c.percent_change is None and c.delta_g_cm2 is None and c.significance is None


@given(
    st.lists(st.tuples(st.sampled_from(["L1", "L2", "L3", "L4", "L1-L4", "L2-L4", "L3-L4"]), bmd), min_size=1),
    st.booleans(),
)
def test_never_a_comparison_at_a_single_vertebra(rows: list[tuple[str, float]], serial_missing: bool) -> None:
    machine = Machine("GE Healthcare", "Lunar iDXA", None if serial_missing else "X1")
    exams = [
        Exam(str(i), date(2010 + i, 1, 1), machine, tuple(Measurement(s, None, v) for s, v in rows)) for i in range(3)
    ]
    for c in compare_history(exams, [], [], CONFIG):
        assert "-" in c.site
        assert c.site.startswith("L")
