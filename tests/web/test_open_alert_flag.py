"""Issue 13: the patients list filters and counts "open alerts" by a flag on the next scan row
(`next_scans.open_alert`, migration page_0008) instead of joining the alerts. The flag must follow
the alert rows wherever they change: an evaluation raising or resolving an alert, a clinician
acknowledging one, new facts opening it again; and the lists must answer what the alert rows say."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date

from fastapi.testclient import TestClient
from sqlalchemy import select

from db.models import AlertRow, NextScanRow
from db.reports import store_report
from services import alerts as alert_use_cases
from services.audit import Actor
from tests.web.seed import NEW, SAME, TODAY, Seeded, _report, evaluate

Login = Callable[[str], TestClient]


def _flags(seeded: Seeded) -> dict[int, bool]:
    with seeded.factory() as session:
        return dict(session.execute(select(NextScanRow.patient_id, NextScanRow.open_alert)).tuples().all())


def _with_open_alerts(seeded: Seeded) -> set[int]:
    with seeded.factory() as session:
        return set(session.scalars(select(AlertRow.patient_id).where(AlertRow.state == "open")))


def _overdue(seeded: Seeded) -> set[int]:
    with seeded.factory() as session:
        return set(session.scalars(select(NextScanRow.patient_id).where(NextScanRow.due < TODAY)))


def _listed(client: TestClient, **filters: str) -> tuple[int, set[str]]:
    answer = client.get("/api/patients", params=filters).json()
    return answer["total"], {p["patient_id"] for p in answer["patients"]}


def _check_lists(client: TestClient, seeded: Seeded) -> None:
    flagged = {pk for pk, flag in _flags(seeded).items() if flag}
    assert flagged == _with_open_alerts(seeded)
    identifiers = {pk: identifier for identifier, pk in seeded.patients.items()}
    total, shown = _listed(client, alerts="true")
    assert total == len(flagged) and shown == {identifiers[pk] for pk in flagged}
    both = flagged & _overdue(seeded)
    total, shown = _listed(client, alerts="true", overdue="true")
    assert total == len(both) and shown == {identifiers[pk] for pk in both}


def test_the_flag_follows_the_alerts_and_the_lists_follow_the_flag(login: Login, seeded: Seeded) -> None:
    client = login("clin")
    pk = seeded.patients[SAME]
    assert _flags(seeded)[pk] is True  # the seed's evaluation raised a loss alert
    _check_lists(client, seeded)

    with seeded.factory() as session:
        open_ids = list(session.scalars(select(AlertRow.id).where(AlertRow.patient_id == pk, AlertRow.state == "open")))
    for alert_id in open_ids:  # the flag stays up while one is still open
        assert _flags(seeded)[pk] is True
        alert_use_cases.acknowledge(seeded.ctx, Actor("clin"), pk, alert_id, "seen")
    assert _flags(seeded)[pk] is False
    _check_lists(client, seeded)

    evaluate(seeded.ctx, pk)  # the same facts: still acknowledged, no open alert
    assert _flags(seeded)[pk] is False

    with seeded.factory() as session:  # a further loss: something new, the alert is open again
        store_report(session, _report(SAME, "Same^Machine", date(2019, 3, 11), NEW, {("L1-L4", None): (0.80, -2.4)}))
        session.commit()
    evaluate(seeded.ctx, pk)
    assert _flags(seeded)[pk] is True
    _check_lists(client, seeded)
