"""Alerts agree with the comparisons and therapies they come from (issue 15): a real loss is
never "unlikely to exceed the LSC", a late follow-on is not "start a bisphosphonate", and each
alert names the facts that raised it, so an acknowledged alert returns only on new facts."""

from __future__ import annotations

from datetime import date

from monitor.evaluate import evaluate_patient
from monitor.model import SiteLsc, Therapy
from tests.unit.monitor.monitor_builders import HOLOGIC_A, exam, load_config, spine

CONFIG = load_config()
D = date.fromisoformat
LSCS = [SiteLsc(HOLOGIC_A, "L2-L4", 0.02, 0.0072)]


def _norland_like(third: float) -> list:  # type: ignore[type-arg]
    return [
        exam("3", "2015-08-04", HOLOGIC_A, spine(0.906, site="L2-L4", t=-1.2)),
        exam("4", "2017-08-15", HOLOGIC_A, spine(0.886, site="L2-L4", t=-1.4)),
        exam("5", "2019-08-20", HOLOGIC_A, spine(third, site="L2-L4", t=-1.6)),
    ]


def test_early_scan_with_a_real_loss_says_the_loss_is_real() -> None:
    ev = evaluate_patient(_norland_like(0.855), [], LSCS, [], CONFIG, D("2020-01-01"))
    early = next(a for a in ev.alerts if a.code == "scan_too_early")
    assert "unlikely" not in early.message
    assert "is real" in early.message and "-5.63 % vs baseline" in early.message
    untreated = next(a for a in ev.alerts if a.code == "loss_untreated")
    assert "-5.63 %" in untreated.message and "no treatment recorded" in untreated.message


def test_early_scan_within_the_lsc_keeps_the_warning() -> None:
    ev = evaluate_patient(_norland_like(0.892), [], LSCS, [], CONFIG, D("2020-01-01"))
    early = next(a for a in ev.alerts if a.code == "scan_too_early")
    assert "unlikely to exceed" in early.message
    assert not any(a.code == "loss_untreated" for a in ev.alerts)


def test_late_zoledronic_acid_is_not_told_to_start_a_bisphosphonate() -> None:
    therapies = [
        Therapy("denosumab", "denosumab", D("2018-05-01"), D("2019-11-01")),
        Therapy("zoledronic acid", "iv_bisphosphonate", D("2020-05-04"), D("2020-05-04")),
    ]
    exams = [exam("6", "2018-04-10", HOLOGIC_A, spine(0.835))]
    [alert] = [a for a in evaluate_patient(exams, therapies, [], [], CONFIG, D("2021-01-01")).alerts]
    assert alert.code == "denosumab_stopped"
    assert "start a bisphosphonate" not in alert.message.lower()
    assert "zoledronic acid started on 2020-05-04" in alert.message and "3 days after" in alert.message
    # before the infusion the same patient is told to start one
    before = evaluate_patient(exams, therapies[:1], [], [], CONFIG, D("2020-06-01")).alerts
    assert "Start a bisphosphonate now" in before[0].message
    assert before[0].basis != alert.basis


def test_basis_changes_only_with_new_facts() -> None:
    first = evaluate_patient(_norland_like(0.855), [], LSCS, [], CONFIG, D("2020-01-01")).alerts
    again = evaluate_patient(_norland_like(0.855), [], LSCS, [], CONFIG, D("2021-06-01")).alerts
    assert {a.code: a.basis for a in first} == {a.code: a.basis for a in again}
    newer = [*_norland_like(0.855), exam("7", "2020-09-01", HOLOGIC_A, spine(0.83, site="L2-L4"))]
    later = evaluate_patient(newer, [], LSCS, [], CONFIG, D("2021-06-01")).alerts
    assert {a.code: a.basis for a in later}.get("loss_untreated") != {a.code: a.basis for a in first}["loss_untreated"]
