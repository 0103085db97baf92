"""A batch of evaluations (the runners' `evaluate_jobs`, the daily refresh's chunks) saves exactly
the rows that evaluating the same patients one by one saves: comparisons, next scans, alerts
(acknowledged ones kept or superseded on the same rules), refusals audited once; and the same
rows again when run twice. On a mix of patients whose lock order is not their id order."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, event, select
from sqlalchemy.orm import Session

import services.evaluation
from db.calibration import save_cross_calibration, save_precision_study
from db.devices import find_or_create_device
from db.history import REFUSED_COMPARISON, acknowledge_alert, load_histories, load_patient_history
from db.models import AlertRow, AuditEvent, ComparisonRow, NextScanRow, Patient
from db.reports import store_report
from db.therapies import add_therapy
from ingest.report import DeviceIdentity
from monitor.model import Therapy
from services.context import Context, build_context
from services.outcomes import ClaimedJob
from settings import Settings
from tests.integration.db.helpers import GE, HOLOGIC, HOLOGIC_OTHER, HOLOGIC_WEAK, report, site

TODAY = date.today()  # `evaluate_jobs` evaluates on the calendar's day; the one-by-one run too
DERIVED = (ComparisonRow, NextScanRow, AlertRow, AuditEvent)


def _spine(patient: str, day: date, bmd: float, device: DeviceIdentity = HOLOGIC) -> Any:
    return report(site("L1-L4", bmd, t_score=-1.8, z_score=-0.6), patient=patient, on=day, device=device)


@pytest.fixture
def ctx(engine: Engine, db_url: str, tmp_path: Path) -> Iterator[Context]:
    context = build_context(Settings(data_dir=tmp_path / "data", database_url=db_url))
    try:
        yield context
    finally:
        context.engine.dispose()


def _ids(session: Session) -> dict[str, int]:
    return {p.identifier: p.id for p in session.scalars(select(Patient))}


def _seed(ctx: Context) -> dict[str, int]:
    """Patients created in an order unlike their lock order (identifier, issuer; one non-ASCII),
    evaluated once, some of their alerts acknowledged, then new facts for some of them."""
    with ctx.sessions.begin() as session:
        for patient, bmds in (("Z-CROSS", (0.90, 0.88)), ("a-lower", (0.90, 0.84)), ("M-ACK", (0.90, 0.84))):
            store_report(session, _spine(patient, date(2015, 3, 2), bmds[0]))
            store_report(session, _spine(patient, date(2017, 3, 6), bmds[1], GE if patient == "Z-CROSS" else HOLOGIC))
        store_report(session, _spine("Ärzte-1", date(2014, 1, 6), 0.95))
        store_report(session, _spine("Ärzte-1", date(2016, 1, 11), 0.88))
        store_report(session, _spine("B-CAL", date(2016, 2, 1), 0.91))
        store_report(session, _spine("B-CAL", date(2018, 2, 5), 0.86, HOLOGIC_OTHER))
        store_report(session, _spine("N-ONE", date(2019, 5, 5), 0.70))
        store_report(session, _spine("G-ONLY", date(2018, 8, 8), 0.80, GE))
        hologic, other = find_or_create_device(session, HOLOGIC), find_or_create_device(session, HOLOGIC_OTHER)
        save_precision_study(session, hologic, "L1-L4", [], rms_sd_g_cm2=0.01, lsc_g_cm2=0.0277)
        save_cross_calibration(
            session, hologic, other, kind="in_vivo", sites=["L1-L4"], lsc_g_cm2={"L1-L4": 0.03}, slope=1.0
        )
        ids = _ids(session)
        add_therapy(session, ids["Ärzte-1"], Therapy("alendronate", "oral_bisphosphonate", date(2014, 6, 1)))
    for patient_id in sorted(ids.values()):
        services.evaluation.evaluate(ctx, patient_id, TODAY)
    with ctx.sessions.begin() as session:
        for patient in ("a-lower", "M-ACK"):
            rows = session.scalars(
                select(AlertRow).where(AlertRow.patient_id == ids[patient], AlertRow.state == "open")
            )
            acked = [
                acknowledge_alert(session, r.patient_id, r.id, actor="clin", user_id=None, comment="seen") for r in rows
            ]
            assert acked, f"the seed meant {patient} to have an open alert"
        # new facts: a further loss (the acknowledged alert's basis changes), a scan on a machine
        # without a serial (a new refusal beside one audited already), a therapy started
        store_report(session, _spine("a-lower", date(2019, 3, 11), 0.78))
        store_report(session, _spine("Z-CROSS", date(2019, 4, 1), 0.86, HOLOGIC_WEAK))
        add_therapy(session, ids["B-CAL"], Therapy("denosumab", "denosumab", date(2018, 3, 1)))
    return ids


def _snapshot(session: Session) -> dict[str, list[dict[str, Any]]]:
    return {
        entity.__tablename__: [dict(r._mapping) for r in session.execute(select(entity.__table__))]
        for entity in DERIVED
    }


def _restore(ctx: Context, snapshot: dict[str, list[dict[str, Any]]]) -> None:
    with ctx.sessions.begin() as session:
        for entity in DERIVED:
            session.execute(entity.__table__.delete())  # type: ignore[attr-defined]
        for entity in DERIVED:
            rows = snapshot[entity.__tablename__]
            if rows:
                session.execute(entity.__table__.insert(), rows)  # type: ignore[attr-defined]


def _rows(ctx: Context, before: dict[str, list[dict[str, Any]]]) -> dict[str, list[str]]:
    """The derived rows, without what differs between two runs of the same evaluation (the time
    of the run, the ids of rows it created); a row kept from before keeps its id."""
    kept_alerts = {r["id"] for r in before["alerts"]}
    out: dict[str, list[str]] = {}
    with ctx.sessions() as session:
        for name, rows in _snapshot(session).items():
            shown = []
            for row in rows:
                row = dict(row)
                for column in ("computed_at", "raised_at", "occurred_at"):
                    row.pop(column, None)
                if name == "alerts":
                    row["resolved_at"] = row["resolved_at"] is not None
                    if row["id"] not in kept_alerts:
                        row["id"] = "new"
                elif name in ("comparisons", "audit_events"):
                    row.pop("id")
                shown.append(json.dumps(row, sort_keys=True, default=str))
            out[name] = sorted(shown)
    return out


def _jobs(ids: dict[str, int]) -> list[ClaimedJob]:
    return [ClaimedJob(n, "evaluate_patient", 1, None, pid) for n, pid in enumerate(sorted(ids.values()), 1)]


def test_a_batch_saves_what_one_by_one_saves_and_the_same_again(ctx: Context, caplog: pytest.LogCaptureFixture) -> None:
    ids = _seed(ctx)
    with ctx.sessions() as session:
        before = _snapshot(session)
    for patient_id in sorted(ids.values()):
        services.evaluation.evaluate(ctx, patient_id, TODAY)
    one_by_one = _rows(ctx, before)

    # what the seed meant to exercise did happen
    alerts = [json.loads(r) for r in one_by_one["alerts"]]
    acked = [a for a in alerts if a["state"] == "acknowledged"]
    assert {a["patient_id"] for a in acked} == {ids["M-ACK"]}  # same basis: stays acknowledged
    superseded = [a for a in alerts if a["patient_id"] == ids["a-lower"]]
    assert {(a["state"], a["id"] == "new") for a in superseded} == {("open", True), ("resolved", False)}
    refusals = [json.loads(r) for r in one_by_one["audit_events"] if REFUSED_COMPARISON in r]
    assert {r["patient_id"] for r in refusals} == {ids["Z-CROSS"]}
    assert {r["detail"]["status"] for r in refusals} == {"rejected_cross_machine", "rejected_unknown_machine"}
    statuses = {json.loads(r)["status"] for r in one_by_one["comparisons"]}
    assert {"rejected_cross_machine", "rejected_unknown_machine"} <= statuses and len(statuses) >= 3

    caplog.set_level(logging.WARNING, logger="services.evaluation")
    _restore(ctx, before)
    statements: list[str] = []
    listen = (ctx.engine, "before_cursor_execute", lambda *a, **k: statements.append(a[2]))
    event.listen(*listen)
    try:
        results = services.evaluation.evaluate_jobs(ctx, _jobs(ids))
    finally:
        event.remove(*listen)
    assert not caplog.records, "the batch fell back to one by one"
    assert sorted(r.patient_id for r in results) == sorted(ids.values())  # type: ignore[type-var]
    assert _rows(ctx, before) == one_by_one
    # a handful of statements for the whole batch, not a dozen per patient
    # a fixed number of statements for the whole batch (one by one: a dozen per patient)
    assert sum(s.startswith("SELECT exams.") for s in statements) == 1 and len(statements) < 5 * len(ids), statements

    _restore(ctx, before)
    assert services.evaluation.evaluate_all(ctx, TODAY, chunk=3) == len(ids)  # chunks of 3, 3 and 2
    assert not caplog.records, "a chunk fell back to one by one"
    assert _rows(ctx, before) == one_by_one
    services.evaluation.evaluate_all(ctx, TODAY, chunk=3)
    assert _rows(ctx, before) == one_by_one  # run twice: the same rows, refusals audited once


def test_a_batch_history_is_each_patients_own(ctx: Context) -> None:
    ids = _seed(ctx)
    with ctx.sessions() as session:
        batch = load_histories(session, [*ids.values(), 10**9])
        assert set(batch) == set(ids.values())  # a patient that does not exist is left out
        for patient_id in ids.values():
            assert batch[patient_id] == load_patient_history(session, patient_id)
        # only the patient's own machines' calibration comes along
        assert batch[ids["N-ONE"]].cross_calibrations == batch[ids["B-CAL"]].cross_calibrations != ()
        assert batch[ids["N-ONE"]].lscs != () and batch[ids["B-CAL"]].lscs == batch[ids["N-ONE"]].lscs
        assert batch[ids["G-ONLY"]].cross_calibrations == () and batch[ids["G-ONLY"]].lscs == ()
        with pytest.raises(LookupError):
            load_patient_history(session, 10**9)


def test_a_batch_with_a_patient_gone_runs_one_by_one(ctx: Context, caplog: pytest.LogCaptureFixture) -> None:
    ids = _seed(ctx)
    jobs = [*_jobs(ids), ClaimedJob(99, "evaluate_patient", 1, None, 10**9)]
    with pytest.raises(LookupError):
        services.evaluation.evaluate_jobs(ctx, jobs)
    assert "running them one by one" in caplog.text
    with ctx.sessions() as session:  # the patients before the missing one were evaluated on their own
        assert session.scalars(select(NextScanRow.patient_id)).all()
