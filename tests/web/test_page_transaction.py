"""Issue 13: on PostgreSQL a patient page is one connection and three statements: the sign-in
check, the page's reads and its audit event, each committed as it runs (autocommit: no BEGIN and
no COMMIT round trips), so the event is durable before the page is answered."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event, func, select, text
from sqlalchemy.engine import Engine
from sqlalchemy.pool import Pool

from db.models import AuditEvent, Patient
from db.patients import AmbiguousPatient, find_patient
from tests.conftest import create_postgres_database, drop_postgres_database, skip_or_fail
from tests.web.conftest import sign_in
from tests.web.seed import REPLACED, TODAY, Seeded, build
from web import app as web_app
from web.app import create_app
from web.queries import patient as patient_q
from web.queries import patient_list as patient_list_q


@pytest.fixture(scope="module")
def pg_seeded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seeded]:
    try:
        url = create_postgres_database("dxa_web_page_tx")
    except Exception as exc:  # no server: skipped, or failed under DXA_REQUIRE_SERVICES=1
        skip_or_fail(f"no PostgreSQL server ({type(exc).__name__})")
    seeded = build(Path(tmp_path_factory.mktemp("pgpage")), url=url)
    try:
        yield seeded
    finally:
        seeded.ctx.engine.dispose()
        drop_postgres_database(url)


class Watch:
    """Pool checkouts, transactions begun and committed, and statements, of every engine."""

    def __init__(self) -> None:
        self.counts = {"checkout": 0, "begin": 0, "commit": 0, "statement": 0}
        self.autocommit: list[bool] = []

    def _statement(self, *args: Any, **_: Any) -> None:
        self.counts["statement"] += 1
        self.autocommit.append(bool(args[1].connection.autocommit))  # the DBAPI cursor's connection

    def _add(self, key: str) -> Any:
        def listener(*_: Any, **__: Any) -> None:
            self.counts[key] += 1

        return listener

    def __enter__(self) -> Watch:
        self.listeners = [
            (Pool, "checkout", self._add("checkout")),
            (Engine, "begin", self._add("begin")),
            (Engine, "commit", self._add("commit")),
            (Engine, "before_cursor_execute", self._statement),
        ]
        for target, name, fn in self.listeners:
            event.listen(target, name, fn)
        return self

    def __exit__(self, *_: object) -> None:
        for target, name, fn in self.listeners:
            event.remove(target, name, fn)


def _views(seeded: Seeded) -> int:
    with seeded.factory() as session:
        return int(session.scalar(select(func.count()).where(AuditEvent.action == "patient_viewed")) or 0)


def test_patient_page_is_one_connection_and_three_autocommitted_statements(pg_seeded: Seeded) -> None:
    app = create_app(pg_seeded.ctx, today=lambda: TODAY)
    with TestClient(app, follow_redirects=False) as client:
        sign_in(client, "clin")
        assert client.get(f"/patients/{REPLACED}").status_code == 200  # the session's stamp is now fresh
        before = _views(pg_seeded)
        with Watch() as watch:
            html = client.get(f"/patients/{REPLACED}").text
        assert 'class="point refused"' in html
        assert _views(pg_seeded) == before + 1, "the view is audited and committed"
        assert watch.counts["checkout"] == 1 and watch.counts["begin"] == 1 and watch.counts["commit"] == 1
        assert watch.counts["statement"] <= 3  # sign-in, the patient with its five tables, the audit insert
        assert watch.autocommit and all(watch.autocommit), "no BEGIN or COMMIT round trip"


def test_a_page_read_survives_its_pooled_connection_ending(
    pg_seeded: Seeded, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The pages' pool does not ping a connection used a moment ago: one ended meanwhile fails
    the read, which is run again on a fresh connection (the page is answered, audited once)."""
    monkeypatch.setattr(web_app, "READ_PING_IDLE_S", 600.0)  # however slow the machine: no ping
    caplog.set_level(logging.INFO, logger="web.app")
    app = create_app(pg_seeded.ctx, today=lambda: TODAY)
    with TestClient(app, follow_redirects=False) as client:
        sign_in(client, "clin")
        assert client.get(f"/patients/{REPLACED}").status_code == 200
        with pg_seeded.ctx.engine.connect() as admin:
            ended = admin.execute(
                text(
                    "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            ).scalar_one()
        assert ended >= 1
        before = _views(pg_seeded)
        assert client.get(f"/patients/{REPLACED}").status_code == 200
        assert _views(pg_seeded) == before + 1
    assert "read tried again after a database fault" in caplog.text


def test_the_one_statement_read_gives_what_the_per_table_reads_give(pg_seeded: Seeded) -> None:
    """The page's single PostgreSQL statement (JSON per table) against the per-table reads that
    SQLite uses, field by field through `repr` (which tells -0.0 from 0.0 and 1 from 1.0): a
    T-score of -0.0, a whole BMD and an acknowledged alert included, in a transaction rolled back."""
    with pg_seeded.factory() as session:
        session.execute(
            text("UPDATE measurements SET t_score = '-0.0', bmd = 1.0 WHERE id = (SELECT min(id) FROM measurements)")
        )
        session.execute(
            text(
                "UPDATE alerts SET state = 'acknowledged', acknowledged_at = now(), acknowledged_by = 'clin',"
                " ack_comment = 'seen' WHERE id = (SELECT min(id) FROM alerts)"
            )
        )
        shown = 0
        for identifier in pg_seeded.patients:
            patient = find_patient(session, identifier)
            assert patient is not None
            one = patient_q.read_patient(session, f" {identifier} ", None)
            assert repr(one) == repr(patient_q.patient_detail(session, patient))
            assert repr(patient_q.read_patient(session, identifier, patient.issuer)) == repr(one)
            shown += len(one.exams) if one else 0
        assert shown >= 7, "the seed's exams were read"
        assert "t_score=-0.0" in repr([patient_q.read_patient(session, i, None) for i in pg_seeded.patients])
        assert "state='acknowledged'" in repr([patient_q.read_patient(session, i, None) for i in pg_seeded.patients])
        assert patient_q.read_patient(session, "no-such-patient", None) is None
        assert patient_q.read_patient(session, REPLACED, "another issuer") is None
        session.rollback()


def test_the_one_statement_read_refuses_an_identifier_of_several_issuers(pg_seeded: Seeded) -> None:
    with pg_seeded.factory() as session:
        session.execute(
            text(
                "INSERT INTO patients (identifier, issuer, created_at, updated_at)"
                " VALUES (:identifier, 'OTHER-ISSUER', now(), now())"
            ),
            {"identifier": REPLACED},
        )
        with pytest.raises(AmbiguousPatient) as refused:
            patient_q.read_patient(session, REPLACED, None)
        assert refused.value.issuers == sorted(["", "OTHER-ISSUER"])
        assert patient_q.read_patient(session, REPLACED, "OTHER-ISSUER") is not None
        session.rollback()


def test_a_two_letter_search_reads_the_index_and_finds_what_the_scan_finds(
    pg_seeded: Seeded, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 13: "li", "wu" (common family names) were a scan of every patient; the list asks
    the two-letter pieces' index of migration page_0007, whose expression it must write exactly
    as the index does, and answers as the scan does."""
    with pg_seeded.factory() as session:
        names = [name for (name,) in session.execute(select(Patient.name))]
        searches = {n.lower()[i : i + 2] for n in names if n for i in range(0, len(n) - 1, 3)}
        searches |= {i[1:3] for i in pg_seeded.patients} | {"zz", "Zz", "x^", "^a"}
        answers = {q: patient_list_q.list_patients(session, today=TODAY, q=q) for q in sorted(searches)}
        assert any(total for _, total in answers.values()), "some searches find patients"
        monkeypatch.setattr(patient_list_q, "BIGRAM", 99)  # the same searches without the index
        for q, answer in answers.items():
            assert patient_list_q.list_patients(session, today=TODAY, q=q) == answer, q
        monkeypatch.undo()
        count = (
            select(func.count())
            .select_from(Patient)
            .where(*patient_list_q._conditions("li", False, False, TODAY, True))
        )
        session.execute(text("SET LOCAL enable_seqscan = off"))
        compiled = count.compile(session.get_bind())
        plan = "\n".join(
            row[0] for row in session.connection().exec_driver_sql("EXPLAIN " + str(compiled), compiled.params)
        )
        assert "ix_patients_search_bigrams" in plan
        session.rollback()
