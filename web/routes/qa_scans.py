"""The verification queue (issue 14; qa and admin roles): scans read by OCR, each value beside the
image it was read from, confirmed or rejected here. The decisions are `services.scans` use cases."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import quote_plus

from fastapi import APIRouter, Form, HTTPException, Request, UploadFile
from fastapi.responses import RedirectResponse, Response

from services.scans import ScanDecisionError, confirm_scan, reject_scan, upload_scan
from web.auth import check_csrf
from web.deps import App, DbSession, QaUser, actor, render
from web.i18n import N_
from web.queries import scans as scans_q

router = APIRouter()


@router.get("/qa/scans", include_in_schema=False)
def scans_page(request: Request, session: DbSession, _: QaUser, notice: str | None = None) -> Response:
    return render(request, "qa_scans.html", {"scans": scans_q.pending_scans(session), "notice": notice, "error": None})


@router.post("/qa/scans/upload", include_in_schema=False)
async def upload_form(
    request: Request, app: App, user: QaUser, file: UploadFile | None = None, csrf_token: Annotated[str, Form()] = ""
) -> Response:
    check_csrf(request, csrf_token)
    if file is None:
        raise HTTPException(422, "no file")
    data = await file.read(app.ctx.settings.max_file_bytes + 1)
    try:
        upload_scan(app.ctx, actor(user), file.filename or "upload", data)
    except ScanDecisionError as exc:
        return RedirectResponse(f"/qa/scans?notice={quote_plus(str(exc))}", status_code=303)
    return RedirectResponse(
        "/qa/scans?notice=" + quote_plus(N_("File received; it appears here once read.")), status_code=303
    )


@router.get("/qa/scans/{scan_pk}", include_in_schema=False)
def scan_page(request: Request, session: DbSession, _: QaUser, scan_pk: int, error: str | None = None) -> Response:
    detail = scans_q.scan_detail(session, scan_pk)
    if detail is None:
        raise HTTPException(404, "no such scan")
    return render(request, "qa_scan.html", {"s": detail, "error": error, "notice": None})


@router.get("/qa/scans/{scan_pk}/crop/{key:path}", include_in_schema=False)
def crop(session: DbSession, _: QaUser, scan_pk: int, key: str) -> Response:
    png = scans_q.crop_png(session, scan_pk, key)
    if png is None:
        raise HTTPException(404, "no such image")
    return Response(png, media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})


@router.post("/qa/scans/{scan_pk}/confirm", include_in_schema=False)
async def confirm_form(request: Request, app: App, user: QaUser, scan_pk: int) -> Response:
    form = await request.form()
    check_csrf(request, str(form.get("csrf_token", "")))
    edits = {str(k)[2:]: str(v) for k, v in form.items() if str(k).startswith("v:")}
    try:
        confirm_scan(app.ctx, actor(user), scan_pk, edits, app.today())
    except ScanDecisionError as exc:
        return RedirectResponse(f"/qa/scans/{scan_pk}?error={quote_plus(str(exc))}", status_code=303)
    except LookupError:
        raise HTTPException(404, "no such scan") from None
    return RedirectResponse(
        "/qa/scans?notice=" + quote_plus(N_("Scan confirmed: its exam is stored.")), status_code=303
    )


@router.post("/qa/scans/{scan_pk}/reject", include_in_schema=False)
def reject_form(
    request: Request,
    app: App,
    user: QaUser,
    scan_pk: int,
    reason: Annotated[str, Form()] = "",
    csrf_token: Annotated[str, Form()] = "",
) -> Response:
    check_csrf(request, csrf_token)
    try:
        reject_scan(app.ctx, actor(user), scan_pk, reason)
    except ScanDecisionError as exc:
        return RedirectResponse(f"/qa/scans/{scan_pk}?error={quote_plus(str(exc))}", status_code=303)
    except LookupError:
        raise HTTPException(404, "no such scan") from None
    return RedirectResponse(
        "/qa/scans?notice=" + quote_plus(N_("Scan rejected: the file is in quarantine.")), status_code=303
    )
