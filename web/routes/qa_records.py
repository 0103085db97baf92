"""QA records: the ingest page (quarantine by reason, stray files apart, duplicates) and the audit
page (who did what, when) with its CSV. Filters read empty boxes as "any" (web.forms)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import Response

from services.audit import record_event
from services.exports import to_csv
from web import audit_log, qa_files
from web.deps import App, DbSession, QaUser, render
from web.deps import actor as actor_of
from web.forms import FilterErrors
from web.queries import qa as qa_q

router = APIRouter()
AUDIT_COLUMNS = ("occurred_at", "actor", "action", "patient_id", "issuer", "detail")


# --------------------------------------------------------------------------- ingest


@router.get("/qa/ingest", include_in_schema=False)
def ingest_page(
    request: Request,
    session: DbSession,
    _: QaUser,
    notice: str | None = None,
    reason: str | None = None,
    name: str = "",
    start: str | None = None,
    end: str | None = None,
    page: str | None = None,
) -> Response:
    errors = FilterErrors()
    chosen = qa_files.FileFilter(
        reason=(reason or "").strip() or None,
        name=name,
        start=errors.day(start, "Received from"),
        end=errors.day(end, "Received to"),
        page=max(errors.integer(page, "Page") or 1, 1),
    )
    files, total = qa_files.quarantined(session, chosen)
    stray_filter = qa_files.FileFilter("stray", "", None, None, 1)
    # the collapsed group of stray files beside the real rejects (a reason filter shows only that)
    stray, stray_total = qa_files.quarantined(session, stray_filter) if chosen.reason is None else ([], 0)
    duplicates, duplicate_total = qa_files.duplicates(session)
    pages = max(1, -(-total // qa_files.PAGE_SIZE))
    query = {"reason": chosen.reason or "", "name": name, "start": start or "", "end": end or ""}
    context = {
        "counts": qa_files.reason_counts(session),
        "files": files,
        "total": total,
        "f": chosen,
        "stray": stray,
        "stray_total": stray_total,
        "duplicates": duplicates,
        "duplicate_total": duplicate_total,
        "page": chosen.page,
        "pages": pages,
        "query": urlencode(query),
        "filter_errors": errors.messages,
        "recent": qa_q.recent_files(session, limit=50),
        "notice": notice,
        "titles": qa_files.REASON_TITLES,
    }
    return render(request, "qa_ingest.html", context)


# --------------------------------------------------------------------------- audit


def _audit_filter(
    kind: str | None,
    action: str | None,
    actor: str,
    patient: str,
    start: str | None,
    end: str | None,
    page: str | None,
) -> tuple[audit_log.AuditFilter, list[str]]:
    errors = FilterErrors()
    chosen = audit_log.AuditFilter(
        kind=errors.choice(kind, tuple(audit_log.KINDS), "What"),
        action=(action or "").strip() or None,
        actor=actor,
        patient=patient,
        start=errors.day(start, "From"),
        end=errors.day(end, "To"),
        page=max(errors.integer(page, "Page") or 1, 1),
    )
    messages: list[str] = list(errors.messages)
    return chosen, messages


def _audit_query(f: audit_log.AuditFilter) -> str:
    return urlencode(
        {
            "kind": f.kind or "",
            "action": f.action or "",
            "actor": f.actor,
            "patient": f.patient,
            "start": f.start.isoformat() if f.start else "",
            "end": f.end.isoformat() if f.end else "",
        }
    )


@router.get("/qa/audit", include_in_schema=False)
def audit_page(
    request: Request,
    session: DbSession,
    _: QaUser,
    kind: str | None = None,
    action: str | None = None,
    actor: str = "",
    patient: str = "",
    start: str | None = None,
    end: str | None = None,
    page: str | None = None,
) -> Response:
    chosen, messages = _audit_filter(kind, action, actor, patient, start, end, page)
    rows, total = audit_log.events(session, chosen)
    context = {
        "rows": rows,
        "total": total,
        "f": chosen,
        "kinds": list(audit_log.KINDS),
        "actions": audit_log.actions(session),
        "query": _audit_query(chosen),
        "page": chosen.page,
        "pages": max(1, -(-total // audit_log.PAGE_SIZE)),
        "filter_errors": messages,
    }
    return render(request, "qa_audit.html", context)


@router.get("/qa/audit.csv", include_in_schema=False)
def audit_csv(
    session: DbSession,
    app: App,
    user: QaUser,
    kind: str | None = None,
    action: str | None = None,
    actor: str = "",
    patient: str = "",
    start: str | None = None,
    end: str | None = None,
) -> Response:
    """Every event matching the page's filters (all pages), in the page's order."""
    chosen, _ = _audit_filter(kind, action, actor, patient, start, end, None)
    rows, _total = audit_log.events(session, chosen, page_size=None)
    record_event(app.ctx, actor_of(user), "audit_exported", None, rows=len(rows), filters=_audit_query(chosen))
    body = to_csv(
        [(r.occurred_at.isoformat(), r.actor, r.action, r.patient_id, r.issuer, r.detail_text) for r in rows],
        AUDIT_COLUMNS,
    )
    stem = "audit" + (f"_{chosen.kind.replace(' ', '-')}" if chosen.kind else "")
    if chosen.start or chosen.end:
        lo = chosen.start.isoformat() if chosen.start else "start"
        stem += f"_{lo}_to_{chosen.end.isoformat() if chosen.end else 'now'}"
    return Response(
        body,
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{stem}.csv"'},
    )


@router.get("/api/qa/audit", tags=["qa"])
def audit_api(
    session: DbSession,
    _: QaUser,
    kind: str | None = None,
    action: str | None = None,
    actor: str = "",
    patient: str = "",
    start: str | None = None,
    end: str | None = None,
    page: str | None = None,
) -> dict[str, Any]:
    """Audit events, newest first, 100 a page: `kind` (sign-ins, views, exports, saved studies,
    re-processing, therapies, alerts, refused comparisons), `action`, `actor`, `patient`
    (identifier), `start`/`end` dates. Empty parameters mean any; unreadable ones answer 422."""
    chosen, messages = _audit_filter(kind, action, actor, patient, start, end, page)
    if messages:
        raise HTTPException(422, " ".join(messages))
    rows, total = audit_log.events(session, chosen)
    return {
        "total": total,
        "page": chosen.page,
        "events": [
            {
                "occurred_at": r.occurred_at.isoformat(),
                "actor": r.actor,
                "action": r.action,
                "patient_id": r.patient_id,
                "issuer": r.issuer,
                "detail": r.detail,
            }
            for r in rows
        ],
    }
