"""The patient page's per-site rows, from plain view data (no database): new baselines, the
vendor's figure only for the same two exams on one machine, dual hips, the drug at each exam,
and the spine set in use."""

from __future__ import annotations

from datetime import date
from typing import Any

from monitor.config import MonitoringConfig
from web.patient_view import drug_at, other_spine_sets, site_tables, spine_set_in_use
from web.queries.patient import ComparisonView, DeviceView, ExamView, MeasurementView, PatientDetail, TherapyView

A = DeviceView(1, "HOLOGIC", "Discovery A", "111")
B = DeviceView(2, "HOLOGIC", "Horizon A", "222")
CONFIG = MonitoringConfig(rules={}, effect_months={"denosumab": 6})


def _m(site: str, side: str | None, bmd: float, vendor: dict[str, Any] | None = None) -> MeasurementView:
    return MeasurementView(site, side, bmd, None, None, {"vendor_change_pct": vendor} if vendor else {})


def _exam(pk: int, day: date, device: DeviceView, *measurements: MeasurementView) -> ExamView:
    return ExamView(pk, str(pk), day, device, f"d{device.pk}", tuple(measurements), None)


def _cmp(
    site: str, side: str | None, src: ExamView, dst: ExamView, ref: str, status: str = "ok", **kw: Any
) -> ComparisonView:
    bmd = {(m.site, m.side): m.bmd for m in src.measurements}[(site, side)]
    new = {(m.site, m.side): m.bmd for m in dst.measurements}[(site, side)]
    refused = status.startswith("rejected")
    delta = None if refused else round(new - bmd, 4)
    return ComparisonView(
        site=site,
        side=side,
        from_exam=src.exam_id,
        to_exam=dst.exam_id,
        from_date=src.date,
        to_date=dst.date,
        from_device=src.device.label,
        to_device=dst.device.label,
        reference=ref,
        status=status,
        delta_g_cm2=delta,
        percent_change=None if delta is None else round(100 * delta / bmd, 2),
        lsc_g_cm2=None if refused else 0.03,
        lsc_source=None if refused else kw.get("lsc_source", "study"),
        significance=None if refused else kw.get("significance", "stable"),
        dissimilar=False,
        reason="different models" if refused else None,
    )


def _detail(
    exams: list[ExamView], comparisons: list[ComparisonView], therapies: tuple[TherapyView, ...] = ()
) -> PatientDetail:
    return PatientDetail(1, "P1", "", None, None, None, tuple(exams), tuple(comparisons), therapies, None)


def test_new_machine_is_a_new_baseline_and_refused_rows_never_show_the_vendor_figure() -> None:
    e1 = _exam(1, date(2014, 1, 1), A, _m("L1-L4", None, 0.900))
    e2 = _exam(
        2,
        date(2016, 1, 1),
        A,
        _m(
            "L1-L4",
            None,
            0.880,
            {"baseline": -2.2, "previous": -2.2, "baseline_date": "2014-01-01", "previous_date": "2014-01-01"},
        ),
    )
    # the new scanner printed a change against an exam only it knew: never shown
    e3 = _exam(
        3,
        date(2018, 1, 1),
        B,
        _m(
            "L1-L4",
            None,
            0.950,
            {"baseline": 4.2, "previous": 4.2, "baseline_date": "2015-06-01", "previous_date": "2015-06-01"},
        ),
    )
    # same machine, but the vendor's baseline is another exam than ours: only "previous" matches
    e4 = _exam(
        4,
        date(2020, 1, 1),
        B,
        _m(
            "L1-L4",
            None,
            0.960,
            {"baseline": 9.9, "previous": 1.1, "baseline_date": "2015-06-01", "previous_date": "2018-01-01"},
        ),
    )
    comps = [
        _cmp("L1-L4", None, e1, e2, "baseline"),
        _cmp("L1-L4", None, e1, e2, "previous"),
        _cmp("L1-L4", None, e1, e3, "baseline", "rejected_cross_machine"),
        _cmp("L1-L4", None, e2, e3, "previous", "rejected_cross_machine"),
        _cmp("L1-L4", None, e3, e4, "baseline"),
        _cmp("L1-L4", None, e3, e4, "previous"),
    ]
    [table] = site_tables(_detail([e1, e2, e3, e4], comps), CONFIG)
    r1, r2, r3, r4 = table.rows
    assert r1.first and not r1.new_baseline and r1.previous is None
    assert r2.previous is not None and r2.previous.vendor_percent == -2.2
    assert r2.baseline is not None and r2.baseline.vendor_percent == -2.2
    assert r3.new_baseline
    assert r3.previous is not None and r3.previous.refused and r3.previous.vendor_percent is None
    assert r3.previous.verdict == "not comparable: machine changed"
    assert r3.baseline is not None and r3.baseline.vendor_percent is None
    assert r3.lsc is None
    assert r4.previous is not None and r4.previous.vendor_percent == 1.1
    assert r4.baseline is not None and r4.baseline.vendor_percent is None
    assert not r4.new_baseline and r4.lsc is not None and r4.lsc.lsc_source == "study"


def test_dual_hip_mean_headlined_with_left_and_right() -> None:
    e1 = _exam(
        1,
        date(2014, 1, 1),
        A,
        _m("total_hip", "left", 0.80),
        _m("total_hip", "right", 0.82),
        _m("total_hip", "mean", 0.81),
    )
    e2 = _exam(
        2,
        date(2016, 1, 1),
        A,
        _m("total_hip", "left", 0.76),
        _m("total_hip", "right", 0.83),
        _m("total_hip", "mean", 0.795),
    )
    comps = [
        _cmp("total_hip", side, e1, e2, ref, significance="loss" if side == "left" else "stable")
        for side in ("left", "right", "mean")
        for ref in ("baseline", "previous")
    ]
    [table] = site_tables(_detail([e1, e2], comps), CONFIG)
    assert (table.site, table.side) == ("total_hip", "mean")
    latest = table.rows[-1]
    assert latest.bmd == 0.795
    sides = {sv.side: sv for sv in latest.sides}
    assert sides["left"].bmd == 0.76 and sides["right"].bmd == 0.83
    assert sides["left"].previous is not None and sides["left"].previous.comparison.significance == "loss"


def test_drug_at_each_exam() -> None:
    therapies = (
        TherapyView(1, "denosumab", "denosumab", date(2015, 1, 1), date(2017, 1, 1), False),
        TherapyView(2, "zoledronic acid", "iv_bisphosphonate", date(2018, 1, 1), None, False),
    )
    assert str(drug_at(therapies, date(2014, 6, 1), CONFIG)) == "none recorded"
    assert str(drug_at(therapies, date(2016, 6, 1), CONFIG)) == "denosumab"
    assert str(drug_at(therapies, date(2017, 3, 1), CONFIG)) == "denosumab (stopped 2017-01-01, still acting)"
    assert str(drug_at(therapies, date(2019, 3, 1), CONFIG)) == "zoledronic acid"


def test_spine_set_in_use_is_the_latest_analysed_set() -> None:
    ge = [_m(site, None, 0.8) for site in ("L1-L2", "L1-L3", "L1-L4", "L2-L4", "L3-L4", "L2")]
    e1 = _exam(1, date(2014, 1, 1), A, *ge)
    e2 = _exam(2, date(2016, 1, 1), A, _m("L2-L4", None, 0.81), _m("L3-L4", None, 0.8))
    detail = _detail([e1, e2], [])
    assert spine_set_in_use(detail.exams) == "L2-L4"
    assert other_spine_sets(detail) == ["L1-L2", "L1-L3", "L1-L4", "L3-L4"]
