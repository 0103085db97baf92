"""Loading a history for the monitor, storing its verdict, and the DESIGN.md §6 export."""

from __future__ import annotations

import json
from datetime import date

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from db.accounts import list_audit_events
from db.calibration import PrecisionRepeat, load_site_lscs, save_cross_calibration, save_precision_study
from db.devices import find_or_create_device
from db.export import export_patient, export_patients
from db.history import (
    REFUSED_COMPARISON,
    load_comparisons,
    load_patient_history,
    open_alerts,
    save_evaluation,
)
from db.models import AlertRow, ComparisonRow, NextScanRow
from db.reports import store_report
from db.therapies import add_therapy, replace_therapies
from monitor.model import Alert, Machine, Therapy
from tests.integration.db.helpers import (
    GE,
    HIP,
    HOLOGIC,
    HOLOGIC_OTHER,
    SPINE,
    comparison,
    evaluation,
    report,
    site,
)

REPEATS = [PrecisionRepeat("tech A", f"S{i}", k, 0.9 + 0.001 * ((i + k) % 3)) for i in range(15) for k in range(3)]


def _two_exams(session: Session) -> tuple[int, str, str]:
    a = store_report(session, report(*SPINE, on=date(2018, 1, 5)))
    b = store_report(session, report(*SPINE, *HIP, on=date(2020, 1, 6), device=GE))
    session.commit()
    return a.patient.id, str(a.exam.id), str(b.exam.id)


def test_history_in_monitor_types(session: Session) -> None:
    pid, first, second = _two_exams(session)
    add_therapy(session, pid, Therapy("alendronate", "oral_bisphosphonate", date(2018, 2, 1)), source="csv")
    hologic = find_or_create_device(session, HOLOGIC)
    ge = find_or_create_device(session, GE)
    other = find_or_create_device(session, HOLOGIC_OTHER)
    save_precision_study(session, hologic, "L1-L4", REPEATS, rms_sd_g_cm2=0.01, lsc_g_cm2=0.0277)
    save_precision_study(session, other, "L1-L4", REPEATS, rms_sd_g_cm2=0.02, lsc_g_cm2=0.0554)
    save_cross_calibration(
        session,
        hologic,
        ge,
        kind="in_vivo",
        sites=["L1-L4", "total_hip"],
        lsc_g_cm2={"L1-L4": 0.04},
        slope=1.1,
    )
    session.commit()

    history = load_patient_history(session, pid)
    assert [e.exam_id for e in history.exams] == [first, second]
    assert history.exams[0].machine == Machine("HOLOGIC", "Horizon A", "302081M")
    assert history.exams[0].date == date(2018, 1, 5)
    assert {(m.site, m.side, m.bmd) for m in history.exams[1].measurements} >= {("total_hip", "left", 0.8)}
    assert history.therapies == (Therapy("alendronate", "oral_bisphosphonate", date(2018, 2, 1)),)
    # only the patient's machines' LSCs come along
    assert [(lsc.machine.serial, lsc.site, lsc.lsc_g_cm2) for lsc in history.lscs] == [("302081M", "L1-L4", 0.0277)]
    [cc] = history.cross_calibrations
    assert cc.kind == "in_vivo" and cc.sites == frozenset({"L1-L4", "total_hip"})
    assert cc.lsc_g_cm2 == (("L1-L4", 0.04),) and cc.slope == 1.1


def test_lsc_from_raw_repeats_through_a_calculator(session: Session) -> None:
    device = find_or_create_device(session, HOLOGIC)
    save_precision_study(session, device, "femoral_neck", REPEATS, performed_on=date(2019, 1, 1))
    save_precision_study(session, device, "femoral_neck", REPEATS[:30], performed_on=date(2021, 1, 1))
    session.commit()
    assert load_site_lscs(session) == ()  # nothing computed, nothing stored: the monitor's default applies
    seen: list[int] = []

    def calculator(repeats: object) -> tuple[float, float]:
        seen.append(len(repeats))  # type: ignore[arg-type]
        return 0.01, 0.0277

    [lsc] = load_site_lscs(session, calculator=calculator)
    assert seen == [30]  # the latest study is the one in force
    assert (lsc.site, lsc.rms_sd_g_cm2, lsc.lsc_g_cm2) == ("femoral_neck", 0.01, 0.0277)


def test_therapies_are_validated_before_anything_changes(session: Session) -> None:
    pid, _, _ = _two_exams(session)
    add_therapy(session, pid, Therapy("denosumab", "denosumab", date(2019, 1, 1)))
    session.commit()
    with pytest.raises(ValueError, match="drug class"):
        replace_therapies(session, pid, [Therapy("x", "vitamin_d", date(2019, 1, 1))])
    assert [t.agent for t in load_patient_history(session, pid).therapies] == ["denosumab"]


def test_evaluation_replaces_comparisons_and_audits_refusals_once(session: Session) -> None:
    pid, first, second = _two_exams(session)
    refused = comparison(first, second, status="rejected_cross_machine", reference="baseline")
    ok = comparison(first, second)
    loss = Alert("loss_on_treatment", "Significant loss on treatment: review adherence.")
    save_evaluation(session, pid, evaluation(refused, ok, alerts=(loss,)))
    session.commit()
    save_evaluation(session, pid, evaluation(refused, ok, alerts=(loss,)))  # a re-run changes nothing
    session.commit()

    assert load_comparisons(session, pid) == (refused, ok)
    assert len(session.scalars(select(ComparisonRow)).all()) == 2
    [event] = list_audit_events(session, action=REFUSED_COMPARISON)
    assert event.patient_id == pid and event.actor == "system"
    assert event.detail["status"] == "rejected_cross_machine" and event.detail["to_exam"] == second
    [alert] = open_alerts(session, pid)
    assert alert.code == "loss_on_treatment"

    save_evaluation(session, pid, evaluation(ok, due=None))
    session.commit()
    assert load_comparisons(session, pid) == (ok,)
    assert open_alerts(session, pid) == []
    assert session.scalars(select(AlertRow)).one().state == "resolved"
    next_scan = session.get(NextScanRow, pid)
    assert next_scan is not None and next_scan.due is None


def test_evaluation_naming_another_patients_exam_is_refused(session: Session) -> None:
    pid, first, _ = _two_exams(session)
    stranger = store_report(session, report(*SPINE, patient="OTHER"))
    session.commit()
    with pytest.raises(ValueError, match="not this patient's"):
        save_evaluation(session, pid, evaluation(comparison(first, str(stranger.exam.id))))
    session.rollback()
    assert load_comparisons(session, pid) == ()


def test_export_shape(session: Session) -> None:
    pid, first, second = _two_exams(session)
    alert = Alert("scan_too_early", "Scanned before the minimum interval.")
    save_evaluation(
        session, pid, evaluation(comparison(first, second, status="rejected_cross_machine"), alerts=(alert,))
    )
    store_report(session, report(site("L1-L4", 1.0), patient="EMPTY"))
    session.commit()

    exported = export_patient(session, pid)
    assert list(exported) == ["patient_id", "exams", "comparisons", "next_scan"]
    assert exported["patient_id"] == "P1"
    assert [e["exam_id"] for e in exported["exams"]] == [first, second]
    exam = exported["exams"][0]
    assert exam["date"] == "2018-01-05"
    assert exam["device"] == {"manufacturer": "HOLOGIC", "model": "Horizon A", "serial": "302081M"}
    assert exam["measurements"][0] == {
        "site": "L1",
        "side": None,
        "bmd": 0.85,
        "t_score": None,
        "z_score": None,
    }
    assert {"site": "L1-L4", "side": None, "bmd": 0.9, "t_score": -1.5, "z_score": -0.5} in exam["measurements"]
    [c] = exported["comparisons"]
    assert set(c) == {
        "site", "side", "from_exam", "to_exam", "reference", "status", "delta_g_cm2", "percent_change",
        "lsc_g_cm2", "lsc_source", "significance", "dissimilar", "reason",
    }  # fmt: skip
    assert (c["from_exam"], c["to_exam"], c["status"], c["percent_change"]) == (
        first,
        second,
        "rejected_cross_machine",
        None,
    )
    assert exported["next_scan"] == {
        "due": "2022-01-10",
        "rule_id": "oral_bisphosphonate_followup",
        "reason": "Every 24 months.",
        "alerts": [{"code": "scan_too_early", "message": "Scanned before the minimum interval."}],
    }
    everyone = list(export_patients(session, batch_size=1))
    assert [p["patient_id"] for p in everyone] == ["EMPTY", "P1"]
    assert everyone[0]["comparisons"] == [] and everyone[0]["next_scan"]["due"] is None
    assert [p["patient_id"] for p in export_patients(session, identifier="P1")] == ["P1"]
    json.dumps(everyone)  # plain JSON all the way down


def test_a_next_scan_the_session_holds_is_read_fresh_after_a_save(session: Session) -> None:
    """The next scans are written by one statement for a batch, past the session's objects: one
    the session loaded before must not keep showing the old decision."""
    pid, first, second = _two_exams(session)
    save_evaluation(session, pid, evaluation(comparison(first, second)))
    session.commit()
    held = session.get(NextScanRow, pid)
    assert held is not None and held.due == date(2022, 1, 10)
    save_evaluation(session, pid, evaluation(comparison(first, second), due=date(2023, 2, 3)))
    assert session.get(NextScanRow, pid) is held and held.due == date(2023, 2, 3)
