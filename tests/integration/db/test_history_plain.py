"""The evaluation's cheap paths (issue 13) give what the plain ORM paths give.

- A batch's histories read as plain rows by one query (provenance JSON decoded only where the
  machine printed something) equal each patient's history read through the ORM, row objects and
  decoded JSON: many exams, several machines (one without a serial), a cross-calibration, a
  precision study recomputed from its repeats, therapies, printed LSCs and vendor verdicts, an
  exam left without measurements.
- Re-evaluating a patient whose verdict comes out as stored writes nothing (its rows keep their
  ids and times); a patient whose verdict changed gets exactly the rows a first evaluation gives.
- The driver's executemany writes what a Core insert writes (the JSON text too).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, Table, Text, cast, delete, event, insert, select, update
from sqlalchemy.orm import Session

import services.evaluation
from db.calibration import (
    PrecisionRepeat,
    latest_studies,
    load_site_lscs,
    save_cross_calibration,
    save_precision_study,
    study_repeats,
)
from db.converters import exam_to_domain
from db.devices import find_or_create_device
from db.history import acknowledge_alert, exam_rows, insert_many, load_histories, save_evaluation
from db.models import AlertRow, AuditEvent, ComparisonRow, Measurement, NextScanRow, Patient
from db.reports import store_report
from db.therapies import add_therapy, load_therapies
from monitor.evaluate import evaluate_patient
from monitor.model import Alert, Phrase, SiteLsc, Therapy
from services.context import Context, build_context
from services.outcomes import ClaimedJob
from settings import Settings
from tests.integration.db.helpers import GE, HIP, HOLOGIC, HOLOGIC_OTHER, HOLOGIC_WEAK, evaluation, report, site

TODAY = date.today()
REPEATS = [
    PrecisionRepeat(f"tech {i % 2}", f"S{i}", k, 0.9 + 0.001 * ((i * 7 + k) % 5)) for i in range(15) for k in range(3)
]


@pytest.fixture
def ctx(engine: Engine, db_url: str, tmp_path: Path) -> Iterator[Context]:
    context = build_context(Settings(data_dir=tmp_path / "data", database_url=db_url))
    try:
        yield context
    finally:
        context.engine.dispose()


def _spine_and_hip(patient: str, day: date, bmd: float, device: Any = HOLOGIC) -> Any:
    return report(
        site("L1-L4", bmd, t_score=-2.1, z_score=-1.0, area_cm2=40.0 + 100 * bmd),
        site("L2-L4", bmd + 0.01, t_score=-2.0),
        site("L1", bmd - 0.05),
        *HIP,
        site("femoral_neck", bmd - 0.2, "right", t_score=-2.6),
        patient=patient,
        on=day,
        device=device,
    )


def _seed(ctx: Context) -> dict[str, int]:
    """MANY: ten exams over four machines (machine changes, a unit without a serial, a
    cross-calibrated pair); PRINTED: printed LSCs and vendor verdicts in its provenance (one with
    text JSON writes escaped); EMPTY: an exam whose measurements are gone; ONE: a single exam."""
    with ctx.sessions.begin() as session:
        machines = [HOLOGIC, HOLOGIC, HOLOGIC_OTHER, HOLOGIC_OTHER, GE, HOLOGIC_WEAK, HOLOGIC, GE, HOLOGIC, HOLOGIC]
        for n, device in enumerate(machines):
            store_report(session, _spine_and_hip("MANY", date(2010 + n, 3, 1 + n), 0.95 - 0.01 * n, device))
        for n in range(3):
            store_report(session, _spine_and_hip("PRINTED", date(2015 + n, 6, 1), 0.90 - 0.02 * n))
        stored = [store_report(session, _spine_and_hip("EMPTY", date(2016 + n, 2, 2), 0.80)) for n in range(3)]
        session.execute(delete(Measurement).where(Measurement.exam_id == stored[1].exam.id))
        store_report(session, _spine_and_hip("ONE", date(2019, 9, 9), 0.70, GE))
        hologic, other = find_or_create_device(session, HOLOGIC), find_or_create_device(session, HOLOGIC_OTHER)
        save_precision_study(session, hologic, "L1-L4", REPEATS, rms_sd_g_cm2=0.5, lsc_g_cm2=1.0)  # recomputed
        save_precision_study(session, other, "total_hip", [], rms_sd_g_cm2=0.01, lsc_g_cm2=0.0277)
        save_cross_calibration(
            session, hologic, other, kind="in_vivo", sites=["L1-L4"], lsc_g_cm2={"L1-L4": 0.03}, slope=1.01
        )
        ids = {p.identifier: p.id for p in session.scalars(select(Patient))}
        add_therapy(session, ids["MANY"], Therapy("alendronate", "oral_bisphosphonate", date(2011, 1, 1)))
        add_therapy(session, ids["MANY"], Therapy("denosumab", "denosumab", date(2014, 1, 1), date(2016, 1, 1)))
        add_therapy(session, ids["ONE"], Therapy("prednisone", "none", date(2019, 1, 1), glucocorticoid=True))
        printed = session.scalars(
            select(Measurement)
            .join(Measurement.exam)
            .where(Measurement.exam.has(patient_id=ids["PRINTED"]), Measurement.site.in_(("L1-L4", "total_hip")))
        ).all()
        for n, m in enumerate(printed):
            provenance = dict(m.provenance)
            provenance["vendor_lsc"] = {"g_cm2": 0.02 + 0.001 * n, "file": 40 + n}
            if n % 2:
                provenance["vendor_significant"] = {"previous": True, "baseline": False}
                provenance["bmd"] = {"file": None, "at": "Tabelle ÄÖÜ 骨密度"}  # written as \\u escapes
            session.execute(update(Measurement).where(Measurement.id == m.id).values(provenance=provenance))
    return ids


def _reference_lscs(session: Session, device_ids: list[int]) -> tuple[SiteLsc, ...]:
    """What loading the studies through the ORM (rows, their repeats by relationship) gives."""
    from db.converters import machine_from_device

    out = []
    for study in latest_studies(session, device_ids=device_ids):
        repeats = study_repeats(study)
        if repeats:
            rms_sd, lsc = services.evaluation._precision(repeats)
        else:
            assert study.rms_sd_g_cm2 is not None and study.lsc_g_cm2 is not None
            rms_sd, lsc = study.rms_sd_g_cm2, study.lsc_g_cm2
        out.append(SiteLsc(machine_from_device(study.device), study.site, lsc, rms_sd))
    return tuple(out)


def test_a_batch_read_as_plain_rows_is_the_orm_history(ctx: Context) -> None:
    ids = _seed(ctx)
    with ctx.sessions() as session:
        batch = load_histories(session, list(ids.values()), precision_calculator=services.evaluation._precision)
        devices: set[int] = set()
        for name, pid in ids.items():
            rows = exam_rows(session, pid)
            devices |= {r.device_id for r in rows}
            orm_exams = tuple(exam_to_domain(r) for r in rows)  # every provenance decoded
            assert batch[pid].exams == orm_exams, name
            assert batch[pid].therapies == load_therapies(session, pid), name
        # what the seed meant to cover did reach the history
        many, printed, empty = batch[ids["MANY"]], batch[ids["PRINTED"]], batch[ids["EMPTY"]]
        assert len(many.exams) == 10 and len({e.machine for e in many.exams}) == 4 and len(many.therapies) == 2
        assert [len(e.measurements) for e in empty.exams] == [6, 0, 6]
        marked = [m for e in printed.exams for m in e.measurements if m.vendor_lsc_g_cm2 is not None]
        assert len(marked) == 6 and {m.vendor_lsc_file for m in marked} == {str(40 + n) for n in range(6)}
        assert sum(bool(m.vendor_significant) for m in marked) == 3
        assert many.cross_calibrations and many.cross_calibrations[0].regressions == ()
        lscs = _reference_lscs(session, sorted(devices))
        assert set(many.lscs) == set(lscs) and len(lscs) == 2
        assert {lsc.lsc_g_cm2 for lsc in lscs} != {1.0, 0.0277}  # the first study recomputed from its repeats
        assert load_site_lscs(session, calculator=services.evaluation._precision) == lscs
        # and the monitor says the same of both
        for pid in ids.values():
            history = batch[pid]
            orm = tuple(exam_to_domain(r) for r in exam_rows(session, pid))

            def verdict(exams: Any, history: Any = history) -> Any:
                return evaluate_patient(
                    exams,
                    history.therapies,
                    history.lscs,
                    history.cross_calibrations,
                    ctx.monitoring,
                    TODAY,
                    birth_date=history.birth_date,
                    vendor_lscs=history.vendor_lscs,
                )

            assert verdict(history.exams) == verdict(orm)


DERIVED = (ComparisonRow, NextScanRow, AlertRow, AuditEvent)


def _all_rows(ctx: Context) -> dict[str, list[str]]:
    out = {}
    with ctx.sessions() as session:
        for entity in DERIVED:
            table: Table = entity.__table__  # type: ignore[assignment]
            rows = session.execute(select(table))
            out[entity.__tablename__] = sorted(json.dumps(dict(r._mapping), sort_keys=True, default=str) for r in rows)
    return out


def _without_ids_and_times(rows: dict[str, list[str]]) -> dict[str, list[str]]:
    out = {}
    for name, shown in rows.items():
        kept = []
        for text in shown:
            row = json.loads(text)
            for column in ("id", "computed_at", "raised_at", "occurred_at", "resolved_at"):
                row.pop(column, None)
            kept.append(json.dumps(row, sort_keys=True))
        out[name] = sorted(kept)
    return out


def _evaluate_batch(ctx: Context, ids: dict[str, int]) -> list[str]:
    statements: list[str] = []
    listen = (ctx.engine, "before_cursor_execute", lambda *a, **k: statements.append(a[2]))
    event.listen(*listen)
    try:
        jobs = [ClaimedJob(0, "evaluate_patient", 1, None, pid) for pid in sorted(ids.values())]
        with ctx.sessions.begin() as session:
            services.evaluation._evaluate_in_batch(ctx, session, [j.patient_id or 0 for j in jobs], TODAY)
    finally:
        event.remove(*listen)
    return statements


def _writes(statements: list[str]) -> list[str]:
    return [s for s in statements if s.lstrip().upper().startswith(("INSERT", "DELETE", "UPDATE"))]


def test_an_unchanged_verdict_writes_nothing_and_a_changed_one_what_a_first_evaluation_writes(ctx: Context) -> None:
    ids = _seed(ctx)
    first = _writes(_evaluate_batch(ctx, ids))
    assert any("INSERT INTO comparisons" in s for s in first)
    before = _all_rows(ctx)
    assert len(before["comparisons"]) > 40 and before["audit_events"]  # refusals were audited

    assert _writes(_evaluate_batch(ctx, ids)) == []  # the same verdicts: nothing written
    assert _all_rows(ctx) == before  # ids and times too

    # new facts for one patient: a scan on a new machine (a refusal), a therapy stopped
    with ctx.sessions.begin() as session:
        store_report(session, _spine_and_hip("ONE", date(2021, 9, 9), 0.68, HOLOGIC))
        add_therapy(session, ids["MANY"], Therapy("zoledronate", "iv_bisphosphonate", date(2020, 1, 1)))
    second = _writes(_evaluate_batch(ctx, ids))
    after = _all_rows(ctx)
    changed = {json.loads(r)["patient_id"] for r in set(after["comparisons"]) - set(before["comparisons"])}
    assert changed == {ids["ONE"]}  # MANY's comparisons did not change: its rows are the same rows
    assert sum("DELETE FROM comparisons" in s for s in second) == 1
    assert any("next_scans" in s for s in second)  # MANY's next scan did change with its therapy

    # what a first evaluation of the same data writes (ids and times aside)
    with ctx.sessions.begin() as session:
        for entity in DERIVED:
            session.execute(delete(entity))
    _evaluate_batch(ctx, ids)
    assert _without_ids_and_times(_all_rows(ctx)) == _without_ids_and_times(after)


def test_the_driver_executemany_writes_what_a_core_insert_writes(ctx: Context) -> None:
    ids = _seed(ctx)
    _evaluate_batch(ctx, ids)
    table: Table = ComparisonRow.__table__  # type: ignore[assignment]
    columns = [c.name for c in table.columns if c.name != "id"]
    with ctx.sessions.begin() as session:
        rows = [dict(r._mapping) for r in session.execute(select(*(table.c[c] for c in columns)))]
        notes = [r for r in rows if r["notes"]]
        assert notes and any(r["dissimilar"] for r in rows) and any(r["delta_g_cm2"] is None for r in rows)
        moment = datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
        session.execute(delete(ComparisonRow))
        session.execute(insert(table), [{**r, "computed_at": moment, "position": 2 * n} for n, r in enumerate(rows)])
        insert_many(
            session.connection(),
            table,
            columns,
            [
                tuple(
                    {**r, "computed_at": moment, "position": 2 * n + 1, "notes": json.dumps(r["notes"])}[c]
                    for c in columns
                )
                for n, r in enumerate(rows)
            ],
            as_text=("notes",),
        )
        stored = session.execute(
            select(*(table.c[c] for c in columns), cast(table.c.notes, Text).label("text")).order_by(table.c.position)
        ).all()
    assert len(stored) == 2 * len(rows)
    for core, plain in zip(stored[0::2], stored[1::2], strict=True):
        one, other = dict(core._mapping), dict(plain._mapping)
        assert other.pop("position") == one.pop("position") + 1
        assert one == other  # every value, the JSON's text included


def test_a_live_alert_is_reworded_in_place_and_a_held_row_reads_it(session: Session) -> None:
    """The live alerts are written as plain rows: a reworded alert keeps its row (and its state,
    acknowledged included), only what changed is written, and a row the session holds shows it."""
    stored = store_report(session, _spine_and_hip("ALERTS", date(2019, 1, 1), 0.8))
    pid = stored.patient.id
    session.commit()
    loss = Alert("loss_on_treatment", "Loss.", basis="exam 1", phrase=Phrase.of("alert_loss"))
    early = Alert("scan_too_early", "Early.", basis="exam 1")
    save_evaluation(session, pid, evaluation(alerts=(loss, early)))
    session.commit()
    rows = {r.code: r for r in session.scalars(select(AlertRow).where(AlertRow.patient_id == pid))}
    acknowledge_alert(session, pid, rows["scan_too_early"].id, actor="clin", user_id=None, comment="seen")
    session.commit()
    held = {code: (row.id, row) for code, row in rows.items()}

    reworded = (replace(loss, message="Loss again."), replace(early, message="Early again.", phrase=Phrase.of("x")))
    save_evaluation(session, pid, evaluation(alerts=reworded))
    after = {r.code: r for r in session.scalars(select(AlertRow).where(AlertRow.patient_id == pid))}
    assert {code: (r.id, r.state, r.message) for code, r in after.items()} == {
        "loss_on_treatment": (held["loss_on_treatment"][0], "open", "Loss again."),
        "scan_too_early": (held["scan_too_early"][0], "acknowledged", "Early again."),
    }
    assert after["scan_too_early"].phrase == {"code": "x", "args": {}}
    assert after["loss_on_treatment"] is held["loss_on_treatment"][1]  # the object held, read afresh

    save_evaluation(session, pid, evaluation(alerts=(replace(reworded[0], basis="exam 2"),)))  # early: no more
    states = sorted((r.code, r.state) for r in session.scalars(select(AlertRow).where(AlertRow.patient_id == pid)))
    assert states == [("loss_on_treatment", "open"), ("scan_too_early", "resolved")]
