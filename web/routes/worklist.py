"""Scans due and overdue in a date range: page, JSON, CSV and iCalendar."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from services.audit import record_event
from services.exports import to_csv
from web import queries
from web.deps import App, DbSession, User, actor, render
from web.exports import to_ics

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


def _items(
    session: Any, today: date, start: date | None, end: date | None, overdue: bool
) -> tuple[date, date, list[queries.WorklistItem]]:
    lo, hi = _window(today, start, end)
    return lo, hi, queries.worklist(session, today=today, start=lo, end=hi, include_overdue=overdue)


@router.get("/worklist", include_in_schema=False)
def worklist_page(
    request: Request,
    session: DbSession,
    app: App,
    _: User,
    start: date | None = None,
    end: date | None = None,
    overdue: bool = True,
) -> Response:
    lo, hi, items = _items(session, app.today(), start, end, overdue)
    return render(request, "worklist.html", {"items": items, "start": lo, "end": hi, "overdue": overdue})


@router.get("/api/worklist", tags=["worklist"])
def worklist_api(
    session: DbSession,
    app: App,
    _: User,
    start: date | None = None,
    end: date | None = None,
    overdue: bool = True,
) -> dict[str, Any]:
    """Next scans due between `start` (default today) and `end` (default start + 90 days), and
    every overdue one unless `overdue=false`."""
    lo, hi, items = _items(session, app.today(), start, end, overdue)
    return {
        "start": lo.isoformat(),
        "end": hi.isoformat(),
        "items": [_as_row(i) for i in items],
    }


@router.get("/worklist.csv", include_in_schema=False)
def worklist_csv(
    session: DbSession,
    app: App,
    user: User,
    start: date | None = None,
    end: date | None = None,
    overdue: bool = True,
) -> Response:
    lo, hi, items = _items(session, app.today(), start, end, overdue)
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
    start: date | None = None,
    end: date | None = None,
    overdue: bool = True,
) -> Response:
    """One all-day event per patient on the due date (overdue ones on today, so they show up)."""
    today = app.today()
    lo, hi, items = _items(session, today, start, end, overdue)
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
