from __future__ import annotations

from datetime import date

import pytest

from monitor.dates import add_months
from monitor.evaluate import evaluate_patient
from monitor.model import Exam, SiteLsc, Therapy
from tests.unit.monitor.monitor_builders import HOLOGIC_A, exam, hip, load_config, spine

CONFIG = load_config()
D = date.fromisoformat


def t(drug_class: str, start: str, stop: str | None = None, agent: str | None = None, gc: bool = False) -> Therapy:
    return Therapy(agent or drug_class, drug_class, D(start), D(stop) if stop else None, glucocorticoid=gc)


def one_exam(day: str = "2020-01-15", t_score: float = -2.6) -> list[Exam]:
    return [exam("1", day, HOLOGIC_A, spine(0.8, t=t_score), hip("total_hip", "left", 0.7, t=t_score + 0.3))]


@pytest.mark.parametrize(
    ("therapies", "exams", "rule", "due"),
    [
        # untreated: lowest T decides
        ([], one_exam(t_score=-1.5), "untreated_high_t", "2025-01-15"),
        ([], one_exam(t_score=-2.0), "untreated", "2022-01-15"),
        ([], one_exam(t_score=-2.8), "untreated", "2022-01-15"),
        ([t("none", "2019-01-01")], one_exam(t_score=-1.0), "untreated_high_t", "2025-01-15"),
        # oral bisphosphonate: first follow-up 24 months after start, then every 24 months from the last exam
        ([t("oral_bisphosphonate", "2020-02-01")], one_exam(), "oral_bisphosphonate_first", "2022-02-01"),
        ([t("oral_bisphosphonate", "2019-06-01")], one_exam(), "oral_bisphosphonate", "2022-01-15"),
        # IV zoledronic acid: due at 24 months (sentence mentions 3 years)
        ([t("iv_bisphosphonate", "2019-06-01", "2019-06-01")], one_exam(), "iv_bisphosphonate", "2022-01-15"),
        ([t("denosumab", "2019-06-01")], one_exam(), "denosumab", "2021-01-15"),
        # anabolic: end of course (<= 24 months), a new baseline
        ([t("anabolic_pth", "2020-03-01")], one_exam(), "anabolic_pth", "2022-03-01"),
        ([t("anabolic_pth", "2020-03-01", "2021-09-30")], one_exam(), "anabolic_pth", "2021-09-30"),
        ([t("romosozumab", "2020-03-01")], one_exam(), "romosozumab", "2021-03-01"),
        ([t("serm", "2019-01-01")], one_exam(), "serm", "2022-01-15"),
        ([t("hrt", "2019-01-01")], one_exam(), "hrt", "2022-01-15"),
        ([t("calcitonin", "2019-01-01")], one_exam(), "calcitonin", "2022-01-15"),
        # drug holiday: said so, or a bisphosphonate stopped after 5 (oral) / 3 (IV) years
        ([t("drug_holiday", "2019-05-01")], one_exam(), "drug_holiday", "2022-01-15"),
        ([t("oral_bisphosphonate", "2014-05-01", "2019-05-01")], one_exam(), "drug_holiday", "2022-01-15"),
        ([t("oral_bisphosphonate", "2014-05-01", "2020-05-01")], one_exam(), "drug_holiday", "2022-05-01"),
        ([t("iv_bisphosphonate", "2016-05-01", "2019-05-01")], one_exam(), "drug_holiday", "2022-01-15"),
        (
            [t("oral_bisphosphonate", "2017-05-01", "2019-05-01")],
            one_exam(),
            "oral_bisphosphonate",
            "2022-01-15",
        ),
        # glucocorticoids: every 12 months when that is sooner
        ([t("none", "2019-01-01", agent="prednisone", gc=True)], one_exam(), "glucocorticoid", "2021-01-15"),
        ([t("oral_bisphosphonate", "2019-01-01", gc=True)], one_exam(), "glucocorticoid", "2021-01-15"),
        (
            [t("none", "2019-01-01", "2019-12-01", agent="prednisone", gc=True)],
            one_exam(),
            "untreated",
            "2022-01-15",
        ),
        # the therapy active today wins over an older one
        (
            [t("oral_bisphosphonate", "2015-01-01", "2018-01-01"), t("denosumab", "2018-01-02")],
            one_exam(),
            "denosumab",
            "2021-01-15",
        ),
    ],
)
def test_rule_table(therapies: list[Therapy], exams: list[Exam], rule: str, due: str) -> None:
    ev = evaluate_patient(exams, therapies, [], [], CONFIG, D("2020-06-01"))
    assert ev.next_scan.rule_id == rule
    assert ev.next_scan.due == D(due)
    assert ev.next_scan.reason == CONFIG.rule(rule).sentence


def test_zoledronic_sentence_mentions_three_years() -> None:
    assert "3 years" in CONFIG.rule("iv_bisphosphonate").sentence


def test_no_exam_no_date() -> None:
    ev = evaluate_patient([], [t("denosumab", "2019-01-01")], [], [], CONFIG, D("2020-01-01"))
    assert ev.next_scan.due is None
    assert ev.comparisons == ()


@pytest.mark.parametrize(
    ("add", "expected"),
    [
        (("2020-01-31", 1), "2020-02-29"),
        (("2019-01-31", 1), "2019-02-28"),
        (("2020-02-29", 12), "2021-02-28"),
        (("2020-08-31", 24), "2022-08-31"),
        (("2020-03-31", -1), "2020-02-29"),
        (("2020-12-15", 1), "2021-01-15"),
    ],
)
def test_add_months_clamps_to_month_end(add: tuple[str, int], expected: str) -> None:
    assert add_months(D(add[0]), add[1]) == D(expected)


@pytest.mark.parametrize(
    ("therapies", "today", "alerted"),
    [
        (
            [t("denosumab", "2018-05-01", "2019-11-01"), t("iv_bisphosphonate", "2020-05-04", "2020-05-04")],
            "2021-01-01",
            True,
        ),
        (
            [t("denosumab", "2018-05-01", "2019-11-01"), t("iv_bisphosphonate", "2020-05-01", "2020-05-01")],
            "2021-01-01",
            False,
        ),
        (
            [t("denosumab", "2018-05-01", "2019-11-01"), t("oral_bisphosphonate", "2019-12-01")],
            "2021-01-01",
            False,
        ),
        ([t("denosumab", "2018-05-01", "2019-11-01"), t("serm", "2019-12-01")], "2021-01-01", True),
        ([t("denosumab", "2018-05-01", "2019-11-01"), t("denosumab", "2020-02-01")], "2021-01-01", False),
        (
            [t("denosumab", "2018-05-01", "2019-11-01")],
            "2020-01-01",
            True,
        ),  # window still open: still an alert
        ([t("denosumab", "2018-05-01")], "2021-01-01", False),
        ([t("denosumab", "2018-05-01", "2022-11-01")], "2021-01-01", False),  # stop date in the future
    ],
)
def test_denosumab_stopped_alert(therapies: list[Therapy], today: str, alerted: bool) -> None:
    ev = evaluate_patient(one_exam("2018-04-10"), therapies, [], [], CONFIG, D(today))
    codes = [a.code for a in ev.next_scan.alerts]
    assert ("denosumab_stopped" in codes) is alerted
    assert ev.alerts == ev.next_scan.alerts


LSCS = [SiteLsc(HOLOGIC_A, "L1-L4", 0.02, 0.0072)]


def two_exams(new_bmd: float, second: str = "2019-01-15") -> list[Exam]:
    return [exam("1", "2017-01-15", HOLOGIC_A, spine(0.80)), exam("2", second, HOLOGIC_A, spine(new_bmd))]


@pytest.mark.parametrize(
    ("therapies", "new_bmd", "code"),
    [
        ([t("oral_bisphosphonate", "2017-02-01", agent="alendronate")], 0.77, "loss_on_treatment"),
        ([t("denosumab", "2017-02-01")], 0.77, "loss_on_treatment"),
        ([t("iv_bisphosphonate", "2017-02-01", "2018-02-01")], 0.77, "loss_on_treatment"),  # still in effect
        ([t("oral_bisphosphonate", "2017-02-01")], 0.79, None),  # within the LSC
        ([t("oral_bisphosphonate", "2017-02-01")], 0.83, None),  # a gain
        ([], 0.77, None),  # untreated: no treatment to review
        ([t("drug_holiday", "2017-02-01")], 0.77, "loss_on_holiday"),
        ([t("serm", "2017-02-01", "2017-06-01")], 0.77, None),  # stopped long before the scan
    ],
)
def test_loss_alerts(therapies: list[Therapy], new_bmd: float, code: str | None) -> None:
    ev = evaluate_patient(two_exams(new_bmd), therapies, LSCS, [], CONFIG, D("2019-02-01"))
    codes = {a.code for a in ev.alerts} & {"loss_on_treatment", "loss_on_holiday"}
    assert codes == ({code} if code else set())
    if code == "loss_on_treatment":
        message = next(a.message for a in ev.alerts if a.code == code)
        assert "adherence" in message and "secondary causes" in message


@pytest.mark.parametrize(
    ("therapies", "second", "early"),
    [
        ([t("oral_bisphosphonate", "2016-01-01")], "2017-07-15", True),  # 6 months < 12
        ([t("oral_bisphosphonate", "2016-01-01")], "2018-01-15", False),  # exactly 12 months
        ([t("none", "2016-01-01", agent="prednisone", gc=True)], "2017-08-15", False),  # GC: 6 months allowed
        ([], "2019-01-15", True),  # untreated, T -1.5: no sooner than 5 years
        ([], "2022-01-15", False),
    ],
)
def test_scan_too_early_warning(therapies: list[Therapy], second: str, early: bool) -> None:
    exams = [
        exam("1", "2017-01-15", HOLOGIC_A, spine(0.80, t=-1.5)),
        exam("2", second, HOLOGIC_A, spine(0.80, t=-1.5)),
    ]
    ev = evaluate_patient(exams, therapies, [], [], CONFIG, D("2022-02-01"))
    assert ("scan_too_early" in {a.code for a in ev.alerts}) is early


def test_exams_after_today_are_ignored() -> None:
    exams = two_exams(0.8, second="2030-01-01")
    ev = evaluate_patient(exams, [], [], [], CONFIG, D("2020-01-01"))
    assert ev.comparisons == ()


def test_unknown_drug_class_is_refused() -> None:
    with pytest.raises(ValueError, match="drug class"):
        evaluate_patient(one_exam(), [t("vitamin_d", "2019-01-01")], [], [], CONFIG, D("2020-01-01"))
