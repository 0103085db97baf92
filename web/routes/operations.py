"""Operations: the QA page and API (queue, jobs by state, oldest queued, stuck jobs, files per
hour, quarantine by reason) and Prometheus `/metrics` for the same snapshot.

`/metrics` is open like `/healthz` (a Prometheus scraper has no session); it holds counts only.
Put it behind the reverse proxy's access rules when the web port is reachable from outside.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from db.operations import STALE_AFTER, Snapshot
from web.deps import DbSession, QaUser, render
from web.metrics import OperationsCollector
from web.qa_files import REASON_TITLES

router = APIRouter()


def _collector(request: Request) -> OperationsCollector:
    found: OperationsCollector = request.app.state.operations
    return found


def _json(snap: Snapshot) -> dict[str, Any]:
    data = asdict(snap)
    data["at"] = snap.at.isoformat()
    data["stale_after_s"] = STALE_AFTER.total_seconds()
    return data


@router.get("/qa/operations", include_in_schema=False)
def operations_page(request: Request, session: DbSession, _: QaUser) -> Response:
    snap = _collector(request).read(session)
    context = {"s": snap, "stale_after_s": STALE_AFTER.total_seconds(), "reason_titles": REASON_TITLES}
    return render(request, "qa_operations.html", context)


@router.get("/api/qa/operations", tags=["qa"])
def operations_api(request: Request, session: DbSession, _: QaUser) -> dict[str, Any]:
    """Queue depth, jobs by state, the oldest queued job, stuck jobs, files finished in the last
    hour and quarantined files by reason."""
    return _json(_collector(request).read(session))


@router.get("/metrics", include_in_schema=False)
def metrics(request: Request) -> Response:
    return Response(generate_latest(request.app.state.metrics_registry), media_type=CONTENT_TYPE_LATEST)
