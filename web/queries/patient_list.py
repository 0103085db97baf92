"""The patients list: one page of patients with their last exam, WHO category, latest comparison
per primary site, next scan and open alerts, chosen so that a deep page stays cheap at 100 000
patients."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from sqlalchemy import ARRAY, ColumnElement, Text, cast, func, literal, or_, select
from sqlalchemy.dialects.postgresql import array
from sqlalchemy.orm import Session

from db.models import AlertRow, Exam, NextScanRow, Patient
from web.latest_change import SiteChange, latest_changes
from web.queries.patient import site_label

PAGE_SIZE = 50
TRIGRAM = 3  # a search this long can use the trigram indexes (migration 0002)
BIGRAM = 2  # a search this long can use the two-letter pieces' index (migration page_0007)
# the expression that index is built on, as the migration writes it (the planner matches it as written)
_BIGRAMS = func.dxa_bigrams(Patient.identifier, Patient.name, type_=ARRAY(Text))
FEW_MATCHES = 2000  # up to this many, a search's matches are read first and then sorted


@dataclass(frozen=True)
class PatientSummary:
    pk: int
    patient_id: str
    issuer: str
    name: str | None
    last_exam: date | None
    who_category: str | None
    latest_change: str | None
    latest_significance: str | None
    next_due: date | None
    overdue: bool
    open_alerts: int
    changes: tuple[SiteChange, ...] = ()  # per primary site, the latest comparison's verdict


def _conditions(q: str, overdue: bool, alerts: bool, today: date, bigrams: bool = False) -> list[ColumnElement[bool]]:
    """The filters of the patients list, as conditions on `Patient`.

    The search is a case-insensitive substring of the identifier or the name. On PostgreSQL,
    migration 0002 adds trigram indexes on exactly these `lower(...)` expressions when pg_trgm is
    available, so the search does not read all patients; elsewhere it is a scan. A two-letter
    search of two letters or digits has no trigram: with `bigrams` (PostgreSQL) it also asks the
    index of migration page_0007 for the patients whose two-letter pieces hold it, which narrows
    the scan to them without changing the answer. (With a space or sign in it, pg_trgm finds
    trigrams at the word boundary: its lossy index would be combined with this one, and the
    pieces then computed again for every row found.)
    """
    conditions: list[ColumnElement[bool]] = []
    text = q.strip()
    if text:
        like = f"%{text.lower()}%"
        conditions.append(or_(func.lower(Patient.identifier).like(like), func.lower(Patient.name).like(like)))
        if bigrams and _bigram_search(text):
            conditions.append(_BIGRAMS.op("@>")(array([cast(literal(text.lower()), Text)])))
    if overdue or alerts:
        # one look at the patient's next scan row: its due date and its open-alert flag
        # (`next_scans.open_alert`, kept with the alerts by db.history; migration page_0008)
        wanted = [NextScanRow.patient_id == Patient.id]
        if overdue:
            wanted.append(NextScanRow.due < today)
        if alerts:
            wanted.append(NextScanRow.open_alert.expression)
        conditions.append(select(NextScanRow.patient_id).where(*wanted).exists())
    return conditions


def _bigram_search(q: str) -> bool:
    """Whether a search is two letters or digits (see `_conditions`)."""
    text = q.strip()
    return len(text) == BIGRAM and text.isalnum()


def _count_patients(session: Session, q: str, overdue: bool, alerts: bool, today: date) -> int:
    """How many patients pass the filters, counted from the table that narrows them most.

    Counting `patients` joined to the filters makes the database hash-join all 100 000 patients
    for an overdue or alerts count; counting the next scans reads only an index: the overdue
    ones that of (due, patient_id), those with an open alert the partial index of migration
    page_0008 (its due dates: "overdue and open alerts" is a range of it). A search narrows
    most, so with one the count starts from the matches.
    """
    bigrams = session.get_bind().dialect.name == "postgresql"
    if (overdue or alerts) and not q.strip():
        stmt = select(func.count()).select_from(NextScanRow)
        if alerts:
            stmt = stmt.where(NextScanRow.open_alert.expression)
        if overdue:
            stmt = stmt.where(NextScanRow.due < today)
    else:
        stmt = select(func.count()).select_from(Patient).where(*_conditions(q, overdue, alerts, today, bigrams))
    return session.scalar(stmt) or 0


def list_patients(
    session: Session,
    *,
    today: date,
    q: str = "",
    overdue: bool = False,
    alerts: bool = False,
    page: int = 1,
    page_size: int = PAGE_SIZE,
) -> tuple[list[PatientSummary], int]:
    """One page of patients (by identifier) with the columns of the patients page, and the total.

    The page is chosen on `patients` alone, walking its (identifier, issuer, id) index, and only
    its rows are then joined to their next scan, last exam and open alerts: joining first would
    make the database join every patient before the OFFSET of a deep page.
    """
    total = _count_patients(session, q, overdue, alerts, today)
    matching = select(Patient.id, Patient.identifier, Patient.issuer).where(*_conditions(q, overdue, alerts, today))
    in_order = matching.order_by(Patient.identifier, Patient.issuer)
    indexed = len(q.strip()) >= TRIGRAM or _bigram_search(q)
    if indexed and total <= FEW_MATCHES and session.get_bind().dialect.name == "postgresql":
        # A search with few matches (the count says how many): the matches first, through the
        # trigram indexes, then sorted. Left to itself the planner, which guesses a substring
        # matches some 2 % of the patients, walks the identifier index in order and filters: for
        # a rarer one ("281": 0.6 %) it read 11 000 patients for 50 (30 ms, 200 ms under load;
        # issue 13), for one with no match all of them. A materialized CTE keeps the two steps
        # apart. With many matches the walk finds a page soon, and reading them all would cost
        # more (3 900 matches: 20 ms against 3.5 ms). A two-letter search reads its matches
        # through the two-letter pieces' index (for "wu": 849 of 100 000 patients).
        if _bigram_search(q):
            matching = select(Patient.id, Patient.identifier, Patient.issuer).where(
                *_conditions(q, overdue, alerts, today, bigrams=True)
            )
        matches = matching.cte("matches").prefix_with("MATERIALIZED", dialect="postgresql")
        in_order = select(matches.c.id, matches.c.identifier, matches.c.issuer).order_by(
            matches.c.identifier, matches.c.issuer
        )
    chosen = in_order.limit(page_size).offset((max(page, 1) - 1) * page_size).subquery()
    last_exam = select(func.max(Exam.exam_date)).where(Exam.patient_id == chosen.c.id).scalar_subquery()
    open_alerts = (
        select(func.count())
        .select_from(AlertRow)
        .where(AlertRow.patient_id == chosen.c.id, AlertRow.state == "open")
        .scalar_subquery()
    )
    rows = session.execute(
        select(
            Patient.id,
            Patient.identifier,
            Patient.issuer,
            Patient.name,
            NextScanRow.due,
            NextScanRow.who_category,
            last_exam,
            open_alerts,
        )
        .select_from(chosen)
        .join(Patient, Patient.id == chosen.c.id)
        .outerjoin(NextScanRow, NextScanRow.patient_id == chosen.c.id)
        .order_by(chosen.c.identifier, chosen.c.issuer)
    ).all()
    if not rows:
        return [], total
    changes = latest_changes(session, [row.id for row in rows])
    result = []
    for pk, identifier, issuer, name, due, who, last, alert_count in rows:
        sites = changes.get(pk, ())
        change = _headline(sites)
        result.append(
            PatientSummary(
                pk=pk,
                patient_id=identifier,
                issuer=issuer,
                name=name,
                last_exam=last,
                who_category=who,
                latest_change=change[0] if change else None,
                latest_significance=change[1] if change else None,
                next_due=due,
                overdue=due is not None and due < today,
                open_alerts=alert_count or 0,
                changes=sites,
            )
        )
    return result, total


def _headline(sites: tuple[SiteChange, ...]) -> tuple[str, str] | None:
    """The first primary site's latest verdict as one text (the `latest_change` of the API)."""
    if not sites:
        return None
    c = sites[0]
    pct = f" {c.percent_change:+.2f} %" if c.percent_change is not None and not c.status.startswith("rejected") else ""
    return f"{site_label(c.site, c.side)}: {c.verdict}{pct} ({c.when.isoformat()})", c.significance or c.verdict
