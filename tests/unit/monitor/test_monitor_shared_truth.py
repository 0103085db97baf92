"""The comparisons of every longitudinal patient in ../shared/samples against its truth."""

from __future__ import annotations

import json
import os
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from monitor.comparisons import MONITORED_SITES, compare_history
from monitor.config import is_lumbar_range
from monitor.drugs import therapy_from_agent
from monitor.evaluate import evaluate_patient
from monitor.model import Exam, Machine, Measurement
from tests.unit.monitor.monitor_builders import REPO, load_config


def _shared_patients() -> Path | None:
    candidates = [Path(os.environ["DXA_SHARED_DIR"])] if os.environ.get("DXA_SHARED_DIR") else []
    candidates += [REPO / ".." / "shared", REPO.parent / "shared"]
    for base in candidates:
        patients = base.resolve() / "samples" / "patients"
        if any(patients.glob("*/scenario.truth.json")):
            return patients
    return None


PATIENTS = _shared_patients()
SCENARIOS = sorted(PATIENTS.glob("*/scenario.truth.json")) if PATIENTS else []


def test_shared_samples_present() -> None:
    if PATIENTS is None:
        if os.environ.get("DXA_REQUIRE_SERVICES") == "1":
            pytest.fail("../shared/samples/patients is missing (DXA_REQUIRE_SERVICES=1)")
        pytest.skip("../shared/samples/patients is not available")
    assert len(SCENARIOS) >= 9


def _exams(truth: dict[str, Any]) -> list[Exam]:
    return [
        Exam(
            exam_id=e["date"],
            date=date.fromisoformat(e["date"]),
            machine=Machine(e["device"]["manufacturer"], e["device"]["model"], e["device"]["serial"]),
            measurements=tuple(
                Measurement(m["site"], m["side"], m["bmd"], m.get("t_score"), m.get("z_score"))
                for m in e["measurements"]
            ),
        )
        for e in truth["exams"]
    ]


def _is_primary(site: str) -> bool:
    return is_lumbar_range(site) or site in MONITORED_SITES


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda p: p.parent.name)
def test_comparisons_match_truth(scenario: Path) -> None:
    truth = json.loads(scenario.read_text(encoding="utf-8"))
    got = {
        (c.site, c.side, c.from_exam, c.to_exam, c.reference): c
        for c in compare_history(_exams(truth), [], [], load_config())
        if _is_primary(c.site)
    }
    expected = {(c["site"], c["side"], c["from_exam"], c["to_exam"], c["reference"]): c for c in truth["comparisons"]}
    assert set(got) == set(expected), "missing or extra comparisons"
    for key, want in expected.items():
        c = got[key]
        assert c.status == want["status"], key
        if want["percent_change"] is None:
            assert c.percent_change is None and c.delta_g_cm2 is None, key
        else:
            assert c.percent_change is not None
            assert abs(c.percent_change - want["percent_change"]) <= 0.01, key
            assert c.delta_g_cm2 == pytest.approx(want["delta_g_cm2"], abs=0.0011), key
        if want.get("why"):
            assert want["why"] in (c.reason or ""), key


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda p: p.parent.name)
def test_therapies_classify_as_truth(scenario: Path) -> None:
    truth = json.loads(scenario.read_text(encoding="utf-8"))
    for t in truth["therapies"]:
        stop = date.fromisoformat(t["stop"]) if t["stop"] else None
        assert therapy_from_agent(t["agent"], date.fromisoformat(t["start"]), stop).drug_class == t["drug_class"]


def _evaluate(name: str, today: date) -> Any:
    assert PATIENTS is not None
    truth = json.loads((PATIENTS / name / "scenario.truth.json").read_text(encoding="utf-8"))
    therapies = [
        therapy_from_agent(
            t["agent"], date.fromisoformat(t["start"]), date.fromisoformat(t["stop"]) if t["stop"] else None
        )
        for t in truth["therapies"]
    ]
    return evaluate_patient(_exams(truth), therapies, [], [], load_config(), today)


@pytest.mark.skipif(PATIENTS is None, reason="shared samples not available")
def test_late_ge_patient_gets_denosumab_alert() -> None:
    ev = _evaluate("1713644_late_ge_sr", date(2021, 1, 1))
    assert [a.code for a in ev.alerts] == ["denosumab_stopped"]
    assert ev.next_scan.rule_id == "iv_bisphosphonate"
    assert ev.next_scan.due == date(2022, 5, 4)  # 24 months after the zoledronic acid infusion


@pytest.mark.skipif(PATIENTS is None, reason="shared samples not available")
def test_drug_holiday_patient() -> None:
    ev = _evaluate("4555466_same_machine_gain_loss", date(2023, 1, 1))
    assert ev.next_scan.rule_id == "drug_holiday"
    assert ev.next_scan.due == date(2024, 6, 7)
    assert ev.who_category == "osteoporosis"  # reached at the first exam (L1-L4 T -2.7) and kept


@pytest.mark.skipif(PATIENTS is None, reason="shared samples not available")
def test_untreated_norland_patient_waits_five_years() -> None:
    ev = _evaluate("1272586_norland_untreated", date(2020, 1, 1))
    assert ev.next_scan.rule_id == "untreated_high_t"
    assert ev.next_scan.due == date(2024, 8, 20)
    assert ev.who_category == "low_bone_mass"
