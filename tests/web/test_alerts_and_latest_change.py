"""Alerts from the stored evaluation, acknowledged with a comment (audited) and back only on new
facts; the patients list's latest verdict per primary site, refused comparisons included."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date

from fastapi.testclient import TestClient
from sqlalchemy import select

from db.models import AlertRow, AuditEvent, Patient
from db.reports import store_report
from tests.web.conftest import csrf_of
from tests.web.seed import NEW, OLD, SAME, Seeded, _report, evaluate

Login = Callable[[str], TestClient]
MOVED = "7700001"  # two exams, the second on another machine: nothing comparable


def _alerts(seeded: Seeded, code: str) -> list[AlertRow]:
    with seeded.factory() as session:
        pk = seeded.patients[SAME]
        return list(session.scalars(select(AlertRow).where(AlertRow.patient_id == pk, AlertRow.code == code)))


def test_real_loss_alert_acknowledged_then_back_on_new_facts(login: Login, seeded: Seeded) -> None:
    client = login("clin")
    page = client.get(f"/patients/{SAME}").text
    assert 'data-code="loss_untreated"' in page and "Why it matters" in page
    [alert] = _alerts(seeded, "loss_untreated")
    assert alert.state == "open" and "-5.56 %" in alert.message
    action = f"/patients/{SAME}/alerts/{alert.id}/acknowledge"
    token = csrf_of(page)
    refused = client.post(action, data={"comment": "  ", "csrf_token": token})
    assert refused.status_code == 422
    done = client.post(action, data={"comment": "Discussed; DXA of the hip requested", "csrf_token": token})
    assert done.status_code == 303
    page = client.get(f"/patients/{SAME}").text
    assert "acknowledged by clin" in page and "Discussed; DXA of the hip requested" in page
    listed = client.get("/api/patients", params={"q": SAME}).json()["patients"][0]
    with seeded.factory() as session:
        audit = session.scalars(select(AuditEvent).where(AuditEvent.action == "alert_acknowledged")).one()
        assert audit.actor == "clin" and audit.detail["comment"] == "Discussed; DXA of the hip requested"
        assert (
            listed["open_alerts"]
            == session.query(AlertRow).filter_by(patient_id=alert.patient_id, state="open").count()
        )

    # re-evaluating the same facts keeps it acknowledged
    evaluate(seeded.ctx, seeded.patients[SAME])
    assert [a.state for a in _alerts(seeded, "loss_untreated")] == ["acknowledged"]

    # a new exam with a further loss is something new: the alert is open again
    with seeded.factory() as session:
        store_report(
            session,
            _report(SAME, "Same^Machine", date(2019, 3, 11), NEW, {("L1-L4", None): (0.80, -2.4)}),
        )
        session.commit()
    evaluate(seeded.ctx, seeded.patients[SAME])
    states = sorted(a.state for a in _alerts(seeded, "loss_untreated"))
    assert states == ["open", "resolved"]
    assert 'data-state="open"' in client.get(f"/patients/{SAME}").text


def test_latest_change_per_site_says_not_comparable_after_a_machine_change(login: Login, seeded: Seeded) -> None:
    with seeded.factory() as session:
        for day, device, bmd in ((date(2015, 5, 1), OLD, 0.90), (date(2018, 5, 2), NEW, 0.95)):
            values = {("L1-L4", None): (bmd, -1.8), ("total_hip", "left"): (bmd - 0.1, -1.5)}
            store_report(session, _report(MOVED, "Moved^Machine", day, device, values))
        session.commit()
        pk = session.scalars(select(Patient.id).where(Patient.identifier == MOVED)).one()
    evaluate(seeded.ctx, pk)
    client = login("clin")
    row = client.get("/api/patients", params={"q": MOVED}).json()["patients"][0]
    assert [(c["site"], c["verdict"], c["date"]) for c in row["changes"]] == [
        ("L1-L4", "not comparable: machine changed", "2018-05-02"),
        ("total_hip", "not comparable: machine changed", "2018-05-02"),
    ]
    assert all(c["percent_change"] is None for c in row["changes"])
    assert "none beyond LSC" not in client.get("/patients", params={"q": MOVED}).text
    same = client.get("/api/patients", params={"q": SAME}).json()["patients"][0]
    spine = same["changes"][0]
    assert spine["verdict"] == "loss" and spine["date"] == same["last_exam"] and spine["reference"] == "baseline"
