"""Scans due and overdue in a date range: page, JSON, CSV and iCalendar."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import Response

from services.audit import record_event
from services.exports import to_csv
from web.deps import App, DbSession, User, actor, render
from web.exports import to_ics
from web.forms import FilterErrors
from web.queries import worklist as worklist_q

router = APIRouter()
DEFAULT_WINDOW_DAYS = 90
COLUMNS = ("patient_id", "name", "due", "overdue", "rule_id", "reason", "last_exam")


def _as_row(item: Any) -> dict[str, Any]:
    """One worklist entry in COLUMNS order: the JSON item and the CSV row are the same data."""
    row = {
        "patient_id": item.patient_id,
        "name": item.name,
        "due": item.due.isoformat(),
        "overdue": item.overdue,
        "rule_id": item.rule_id,
        "reason": item.reason,
        "last_exam": item.last_exam.isoformat() if item.last_exam else None,
    }
    assert tuple(row) == COLUMNS
    return row


def _window(today: date, start: date | None, end: date | None) -> tuple[date, date]:
    start = start or today
    return start, end or start + timedelta(days=DEFAULT_WINDOW_DAYS)


@dataclass(frozen=True)
class Chosen:
    """The worklist filters as read (empty boxes take the defaults) and what could not be read."""

    start: date
    end: date
    overdue: bool
    errors: tuple[str, ...]


def _read(today: date, start: str | None, end: str | None, overdue: str | None) -> Chosen:
    errors = FilterErrors()
    lo, hi = _window(today, errors.day(start, "From"), errors.day(end, "To"))
    return Chosen(lo, hi, errors.flag(overdue, True), tuple(errors.messages))


def _items(
    session: Any, today: date, start: str | None, end: str | None, overdue: str | None
) -> tuple[Chosen, list[worklist_q.WorklistItem]]:
    chosen = _read(today, start, end, overdue)
    items = worklist_q.worklist(
        session, today=today, start=chosen.start, end=chosen.end, include_overdue=chosen.overdue
    )
    return chosen, items


@router.get("/worklist", include_in_schema=False)
def worklist_page(
    request: Request,
    session: DbSession,
    app: App,
    _: User,
    start: str | None = None,
    end: str | None = None,
    overdue: str | None = None,
) -> Response:
    chosen, items = _items(session, app.today(), start, end, overdue)
    context = {
        "items": items,
        "start": chosen.start,
        "end": chosen.end,
        "overdue": chosen.overdue,
        "filter_errors": chosen.errors,
    }
    return render(request, "worklist.html", context)


@router.get("/api/worklist", tags=["worklist"])
def worklist_api(
    session: DbSession,
    app: App,
    _: User,
    start: str | None = None,
    end: str | None = None,
    overdue: str | None = None,
) -> dict[str, Any]:
    """Next scans due between `start` (default today) and `end` (default start + 90 days), and
    every overdue one unless `overdue=false`. Empty parameters take the defaults; unreadable
    ones answer 422."""
    chosen, items = _items(session, app.today(), start, end, overdue)
    if chosen.errors:
        raise HTTPException(422, " ".join(chosen.errors))
    return {
        "start": chosen.start.isoformat(),
        "end": chosen.end.isoformat(),
        "items": [_as_row(i) for i in items],
    }


@router.get("/worklist.csv", include_in_schema=False)
def worklist_csv(
    session: DbSession,
    app: App,
    user: User,
    start: str | None = None,
    end: str | None = None,
    overdue: str | None = None,
) -> Response:
    chosen, items = _items(session, app.today(), start, end, overdue)
    lo, hi = chosen.start, chosen.end
    record_event(app.ctx, actor(user), "worklist_exported", None, format="csv", patients=len(items))
    rows = [tuple(_as_row(i).values()) for i in items]
    return Response(
        to_csv(rows, COLUMNS),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="worklist-{lo}-{hi}.csv"'},
    )


@router.get("/worklist.ics", include_in_schema=False)
def worklist_ics(
    session: DbSession,
    app: App,
    user: User,
    start: str | None = None,
    end: str | None = None,
    overdue: str | None = None,
) -> Response:
    """One all-day event per patient on the due date (overdue ones on today, so they show up)."""
    today = app.today()
    chosen, items = _items(session, today, start, end, overdue)
    lo, hi = chosen.start, chosen.end
    record_event(app.ctx, actor(user), "worklist_exported", None, format="ics", patients=len(items))
    events = [
        (
            f"dxa-due-{i.patient_id}-{i.due.isoformat()}@dxa-monitor",
            max(i.due, today) if i.overdue else i.due,
            f"DXA scan {'overdue' if i.overdue else 'due'}: {i.patient_id}",
            f"Due {i.due.isoformat()} ({i.rule_id or 'no rule'}). {i.reason}",
        )
        for i in items
    ]
    return Response(
        to_ics(events),
        media_type="text/calendar; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="worklist-{lo}-{hi}.ics"'},
    )
