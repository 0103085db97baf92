from __future__ import annotations

import pytest

from monitor.comparisons import analysed_vertebral_set, compare_history
from monitor.identity import DIFFERENT_MANUFACTURERS, DIFFERENT_SERIALS, MISSING_SERIAL
from monitor.model import Comparison, CrossCalibration, Exam, Measurement, SiteLsc
from tests.unit.monitor.monitor_builders import (
    GE,
    HOLOGIC_A,
    HOLOGIC_B,
    NO_SERIAL,
    PRIMUS,
    exam,
    hip,
    load_config,
    spine,
)

CONFIG = load_config()


def by_key(comparisons: tuple[Comparison, ...]) -> dict[tuple[str, str | None, str, str, str], Comparison]:
    return {(c.site, c.side, c.from_exam, c.to_exam, c.reference): c for c in comparisons}


def test_design_example_a1_a2_b3_b4() -> None:
    exams = [
        exam("A1", "2015-01-01", HOLOGIC_A, spine(0.800)),
        exam("A2", "2017-01-01", HOLOGIC_A, spine(0.820)),
        exam("B3", "2019-01-01", GE, spine(0.900)),
        exam("B4", "2021-01-01", GE, spine(0.910)),
    ]
    got = {(c.from_exam, c.to_exam, c.reference): c.status for c in compare_history(exams, [], [], CONFIG)}
    assert got == {
        ("A1", "A2", "baseline"): "ok",
        ("A1", "A2", "previous"): "ok",
        ("A1", "B3", "baseline"): "rejected_cross_machine",
        ("A2", "B3", "previous"): "rejected_cross_machine",
        ("B3", "B4", "baseline"): "ok",
        ("B3", "B4", "previous"): "ok",
    }


def test_return_to_first_machine_uses_its_first_exam_as_baseline() -> None:
    exams = [
        exam("A1", "2015-01-01", HOLOGIC_A, spine(0.800)),
        exam("B2", "2017-01-01", GE, spine(0.900)),
        exam("A3", "2019-01-01", HOLOGIC_A, spine(0.830)),
    ]
    got = by_key(compare_history(exams, [], [], CONFIG))
    assert got[("L1-L4", None, "A1", "A3", "baseline")].status == "ok"
    assert got[("L1-L4", None, "B2", "A3", "previous")].status == "rejected_cross_machine"


def test_rejected_comparison_names_both_machines_and_has_no_numbers() -> None:
    exams = [exam("1", "2016-01-12", GE, spine(0.858)), exam("2", "2018-02-06", HOLOGIC_A, spine(0.795))]
    c = compare_history(exams, [], [], CONFIG)[0]
    assert c.status == "rejected_cross_machine"
    assert c.reason is not None
    assert DIFFERENT_MANUFACTURERS in c.reason
    assert GE.label() in c.reason and HOLOGIC_A.label() in c.reason
    assert (c.delta_g_cm2, c.percent_change, c.significance, c.lsc_g_cm2) == (None, None, None, None)


def test_missing_serial_rejected_unknown_machine() -> None:
    exams = [
        exam("1", "2017-06-06", NO_SERIAL, spine(0.771)),
        exam("2", "2019-06-11", NO_SERIAL, spine(0.843)),
    ]
    statuses = {c.status for c in compare_history(exams, [], [], CONFIG)}
    assert statuses == {"rejected_unknown_machine"}
    assert all(MISSING_SERIAL in (c.reason or "") for c in compare_history(exams, [], [], CONFIG))


def test_same_model_different_serial_is_rejected() -> None:
    exams = [exam("1", "2015-01-01", HOLOGIC_A, spine(0.8)), exam("2", "2017-01-01", HOLOGIC_B, spine(0.8))]
    c = compare_history(exams, [], [], CONFIG)[0]
    assert c.status == "rejected_cross_machine"
    assert DIFFERENT_SERIALS in (c.reason or "")


# delta, LSC source and significance: (ref, new, lscs, expected delta, pct, lsc, source, significance)
STUDY = [SiteLsc(HOLOGIC_A, "L1-L4", 0.022, 0.0079)]


@pytest.mark.parametrize(
    ("ref", "new", "lscs", "delta", "pct", "lsc", "source", "significance"),
    [
        (0.750, 0.793, STUDY, 0.043, 5.73, 0.022, "study", "gain"),
        (0.750, 0.772, STUDY, 0.022, 2.93, 0.022, "study", "gain"),  # exactly the LSC counts
        (0.750, 0.728, STUDY, -0.022, -2.93, 0.022, "study", "loss"),
        (0.750, 0.771, STUDY, 0.021, 2.8, 0.022, "study", "stable"),
        (0.750, 0.790, [], 0.04, 5.33, 0.0398, "default", "gain"),  # 5.3 % of 0.750 = 0.03975
        (0.750, 0.780, [], 0.03, 4.0, 0.0398, "default", "stable"),
        (0.800, 0.7576, [], -0.042, -5.3, 0.0424, "default", "loss"),
    ],
)
def test_delta_percent_lsc_significance(
    ref: float,
    new: float,
    lscs: list[SiteLsc],
    delta: float,
    pct: float,
    lsc: float,
    source: str,
    significance: str,
) -> None:
    exams = [exam("1", "2013-04-16", HOLOGIC_A, spine(ref)), exam("2", "2015-05-05", HOLOGIC_A, spine(new))]
    c = compare_history(exams, lscs, [], CONFIG)[0]
    assert c.status == "ok"
    assert c.delta_g_cm2 == pytest.approx(delta, abs=1e-9)
    assert c.percent_change == pytest.approx(pct, abs=1e-9)
    assert c.lsc_g_cm2 == pytest.approx(lsc, abs=1e-4)
    assert c.lsc_source == source
    assert c.significance == significance
    assert not c.dissimilar


def test_study_lsc_for_spine_family_applies_to_any_range() -> None:
    lscs = [SiteLsc(HOLOGIC_A, "spine", 0.030, 0.011)]
    exams = [
        exam("1", "2013-01-01", HOLOGIC_A, spine(0.9, "L2-L4")),
        exam("2", "2015-01-01", HOLOGIC_A, spine(0.93, "L2-L4")),
    ]
    c = compare_history(exams, lscs, [], CONFIG)[0]
    assert (c.lsc_g_cm2, c.lsc_source, c.significance) == (0.03, "study", "gain")


def test_study_of_another_machine_is_not_used() -> None:
    lscs = [SiteLsc(HOLOGIC_B, "L1-L4", 0.001, 0.0004)]
    exams = [exam("1", "2013-01-01", HOLOGIC_A, spine(0.9)), exam("2", "2015-01-01", HOLOGIC_A, spine(0.91))]
    assert compare_history(exams, lscs, [], CONFIG)[0].lsc_source == "default"


def test_published_osteosys_primus_case() -> None:
    """One patient, three scans on one OsteoSys Primus (CV <= 1 %): final versus baseline."""
    lscs = [
        SiteLsc(PRIMUS, s, 0.0277 * b, 0.01 * b)
        for s, b in (("L1-L4", 0.678), ("femoral_neck", 0.674), ("total_hip", 0.698))
    ]
    exams = [
        exam(
            "1",
            "2016-03-09",
            PRIMUS,
            spine(0.678),
            hip("femoral_neck", "left", 0.674),
            hip("total_hip", "left", 0.698),
        ),
        exam(
            "2",
            "2017-03-09",
            PRIMUS,
            spine(0.763),
            hip("femoral_neck", "left", 0.732),
            hip("total_hip", "left", 0.775),
        ),
        exam(
            "3",
            "2018-03-09",
            PRIMUS,
            spine(0.929),
            hip("femoral_neck", "left", 0.721),
            hip("total_hip", "left", 0.752),
        ),
    ]
    got = by_key(compare_history(exams, lscs, [], CONFIG))
    assert got[("L1-L4", None, "1", "3", "baseline")].percent_change == 37.02
    assert got[("femoral_neck", "left", "1", "3", "baseline")].percent_change == 6.97
    assert got[("total_hip", "left", "1", "3", "baseline")].percent_change == 7.74
    assert got[("L1-L4", None, "1", "3", "baseline")].delta_g_cm2 == 0.251
    assert {c.significance for c in got.values() if c.reference == "baseline" and c.to_exam == "3"} == {"gain"}
    # previous: femoral neck 0.732 -> 0.721 is inside the LSC
    assert got[("femoral_neck", "left", "2", "3", "previous")].significance == "stable"


@pytest.mark.parametrize(
    ("sites", "expected"),
    [
        (["L1", "L2", "L3", "L4", "L1-L2", "L1-L3", "L1-L4", "L2-L4", "L3-L4"], "L1-L4"),
        (["L2-L4", "L2", "L3", "L4"], "L2-L4"),
        (["L1", "L2", "L3", "L4"], None),
        (["L1-L2", "L3-L4"], "L1-L2"),
        (["L1,L3"], None),
        (["total_hip"], None),
    ],
)
def test_analysed_vertebral_set(sites: list[str], expected: str | None) -> None:
    e = exam("1", "2020-01-01", HOLOGIC_A, *(Measurement(s, None, 0.8) for s in sites))
    assert analysed_vertebral_set(e) == expected


def test_single_vertebrae_and_non_monitoring_sites_get_no_comparison() -> None:
    sites = [
        Measurement("L1", None, 0.7),
        Measurement("L2", None, 0.75),
        hip("trochanter", "left", 0.6),
        hip("wards", "left", 0.5),
        hip("intertrochanter", "left", 0.9),
        Measurement("radius_ud", "left", 0.4),
        Measurement("total_body", None, 1.1),
    ]
    exams = [exam("1", "2015-01-01", HOLOGIC_A, *sites), exam("2", "2017-01-01", HOLOGIC_A, *sites)]
    assert compare_history(exams, [], [], CONFIG) == ()


def test_every_side_is_compared_and_sides_never_mix() -> None:
    def visit(i: str, day: str, k: float) -> Exam:
        return exam(
            i,
            day,
            HOLOGIC_A,
            hip("total_hip", "left", 0.70 * k),
            hip("total_hip", "right", 0.72 * k),
            hip("total_hip", "mean", 0.71 * k),
            Measurement("radius_33", "left", 0.65 * k),
        )

    # the right hip is missing at the second visit: no right comparison from visit 1 to 2
    v2 = exam("2", "2017-01-01", HOLOGIC_A, hip("total_hip", "left", 0.71), hip("total_hip", "mean", 0.715))
    exams = [visit("1", "2015-01-01", 1.0), v2, visit("3", "2019-01-01", 1.02)]
    got = by_key(compare_history(exams, [], [], CONFIG))
    assert ("total_hip", "right", "1", "3", "previous") in got  # previous at that side skips visit 2
    assert ("total_hip", "right", "1", "2", "previous") not in got
    assert ("radius_33", "left", "1", "3", "baseline") in got
    for c in got.values():
        assert c.site in {"total_hip", "radius_33"}
    assert got[("total_hip", "left", "1", "2", "baseline")].percent_change == pytest.approx(1.43, abs=0.005)


@pytest.mark.parametrize(
    ("ref_kwargs", "new_kwargs", "ref_m", "new_m", "reason_word"),
    [
        ({"scan_mode": "Array"}, {"scan_mode": "Fast Array"}, spine(0.8), spine(0.82), "scan mode"),
        (
            {"analysis_protocol": "APEX 4.0"},
            {"analysis_protocol": "APEX 5.6"},
            spine(0.8),
            spine(0.82),
            "protocol",
        ),
        ({}, {}, spine(0.8, area=60.0), spine(0.85, area=61.5), "area"),
        ({}, {}, spine(0.8, "L1-L4"), spine(0.85, "L2-L4"), "vertebral set"),
    ],
)
def test_dissimilar_scans_suppress_significance(
    ref_kwargs: dict[str, str],
    new_kwargs: dict[str, str],
    ref_m: Measurement,
    new_m: Measurement,
    reason_word: str,
) -> None:
    exams = [
        exam("1", "2015-01-01", HOLOGIC_A, ref_m, **ref_kwargs),
        exam("2", "2017-01-01", HOLOGIC_A, new_m, **new_kwargs),
    ]
    for c in compare_history(exams, [], [], CONFIG):
        assert c.status == "ok"
        assert c.dissimilar is True
        assert c.significance is None
        assert c.percent_change is not None
        assert reason_word in (c.reason or "")


@pytest.mark.parametrize(
    ("ref_kwargs", "new_kwargs", "ref_m", "new_m"),
    [
        ({"scan_mode": "Array"}, {"scan_mode": " array "}, spine(0.8), spine(0.82)),
        ({"scan_mode": "Array"}, {}, spine(0.8), spine(0.82)),  # unknown on one side: not dissimilar
        ({}, {}, spine(0.8, area=60.0), spine(0.85, area=61.2)),  # exactly 2 %
        ({}, {}, spine(0.8, area=60.0), spine(0.85)),
    ],
)
def test_similar_scans(
    ref_kwargs: dict[str, str], new_kwargs: dict[str, str], ref_m: Measurement, new_m: Measurement
) -> None:
    exams = [
        exam("1", "2015-01-01", HOLOGIC_A, ref_m, **ref_kwargs),
        exam("2", "2017-01-01", HOLOGIC_A, new_m, **new_kwargs),
    ]
    for c in compare_history(exams, [], [], CONFIG):
        assert c.dissimilar is False
        assert c.significance is not None


def test_same_vertebrae_are_compared_when_the_reference_measured_them() -> None:
    ref = exam("1", "2015-01-01", GE, spine(0.80, "L1-L4"), spine(0.85, "L2-L4"))
    new = exam("2", "2017-01-01", GE, spine(0.88, "L2-L4"), Measurement("L1", None, 0.7))
    (c, _) = compare_history([ref, new], [], [], CONFIG)
    assert c.site == "L2-L4"
    assert c.dissimilar is False
    assert c.delta_g_cm2 == 0.03


def test_phantom_cross_calibration_makes_same_model_comparable() -> None:
    cal = CrossCalibration(HOLOGIC_A, HOLOGIC_B, "phantom", frozenset({"spine", "total_hip"}), (("spine", 0.025),))
    exams = [
        exam(
            "1",
            "2015-01-01",
            HOLOGIC_A,
            spine(0.80),
            hip("total_hip", "left", 0.7),
            hip("femoral_neck", "left", 0.6),
        ),
        exam(
            "2",
            "2017-01-01",
            HOLOGIC_B,
            spine(0.83),
            hip("total_hip", "left", 0.7),
            hip("femoral_neck", "left", 0.6),
        ),
    ]
    got = by_key(compare_history(exams, [], [cal], CONFIG))
    s = got[("L1-L4", None, "1", "2", "baseline")]
    assert (s.status, s.lsc_source, s.lsc_g_cm2, s.significance) == (
        "ok_cross_calibrated",
        "crosscal",
        0.025,
        "gain",
    )
    assert "cross-calibration" in (s.reason or "")
    assert got[("total_hip", "left", "1", "2", "baseline")].status == "ok_cross_calibrated"
    assert got[("total_hip", "left", "1", "2", "baseline")].lsc_source == "default"  # no crosscal LSC for the hip
    assert got[("femoral_neck", "left", "1", "2", "baseline")].status == "rejected_cross_machine"  # not covered


def test_in_vivo_cross_calibration_converts_the_reference() -> None:
    # Lunar reads higher: hologic = 0.9 * lunar + 0.02
    cal = CrossCalibration(
        GE, HOLOGIC_A, "in_vivo", frozenset({"L1-L4"}), (("L1-L4", 0.03),), slope=0.9, intercept=0.02
    )
    exams = [exam("1", "2016-01-12", GE, spine(0.858)), exam("2", "2018-02-06", HOLOGIC_A, spine(0.795))]
    c = compare_history(exams, [], [cal], CONFIG)[0]
    converted = 0.9 * 0.858 + 0.02
    assert c.status == "ok_cross_calibrated"
    assert c.delta_g_cm2 == round(0.795 - converted, 3)
    assert c.percent_change == round(100 * (0.795 - converted) / converted, 2)
    assert c.significance == "stable"
    # back to the old machine: the reference (new-machine units) is converted the other way
    exams.append(exam("3", "2020-01-01", GE, spine(0.87)))
    got = by_key(compare_history(exams, [], [cal], CONFIG))
    back = got[("L1-L4", None, "2", "3", "previous")]
    assert back.status == "ok_cross_calibrated"
    assert back.delta_g_cm2 == round(0.87 - (0.795 - 0.02) / 0.9, 3)
    assert got[("L1-L4", None, "1", "3", "baseline")].status == "ok"


def test_crosscal_never_rescues_a_missing_serial() -> None:
    cal = CrossCalibration(NO_SERIAL, GE, "phantom", frozenset({"spine"}), (("spine", 0.03),))
    exams = [exam("1", "2017-01-01", NO_SERIAL, spine(0.8)), exam("2", "2019-01-01", GE, spine(0.81))]
    assert {c.status for c in compare_history(exams, [], [cal], CONFIG)} == {"rejected_unknown_machine"}


def test_comparisons_are_ordered_and_deterministic() -> None:
    a = [
        exam("2", "2017-01-01", HOLOGIC_A, hip("total_hip", "left", 0.7), spine(0.8)),
        exam("1", "2015-01-01", HOLOGIC_A, spine(0.78), hip("total_hip", "left", 0.69)),
    ]
    first = compare_history(a, [], [], CONFIG)
    assert first == compare_history(list(reversed(a)), [], [], CONFIG)
    assert [c.site for c in first] == ["L1-L4", "L1-L4", "total_hip", "total_hip"]
    assert [c.reference for c in first] == ["baseline", "previous", "baseline", "previous"]
