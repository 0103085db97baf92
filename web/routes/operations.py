"""Operations: the QA page and API (queue, jobs by state, oldest queued, stuck jobs, files per
hour, quarantine by reason) and Prometheus `/metrics` for the same snapshot.

`/metrics` needs no session (a Prometheus scraper has none) but is not open to everyone: with
`DXA_METRICS_TOKEN` set it answers a scraper that sends `Authorization: Bearer <token>`; without
one, only the addresses or networks of `DXA_METRICS_ALLOW` (default: this host). It holds counts
only, yet the volume of work of a department is nobody else's business.
"""

from __future__ import annotations

import hmac
import ipaddress
from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from db.operations import STALE_AFTER, Snapshot
from web.auth import client_address
from web.deps import DbSession, QaUser, render, services
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


def metrics_refusal(request: Request) -> Response | None:
    """None when this request may read /metrics; else the answer that says why not."""
    settings = services(request).settings
    if settings.metrics_token:
        header = request.headers.get("authorization", "")
        given = header[7:].strip() if header.lower().startswith("bearer ") else ""
        if given and hmac.compare_digest(given.encode("utf-8"), settings.metrics_token.encode("utf-8")):
            return None
        return PlainTextResponse(
            "metrics: send the scrape token (Authorization: Bearer ...)", 401, {"WWW-Authenticate": "Bearer"}
        )
    try:
        address = ipaddress.ip_address(client_address(request))
    except ValueError:
        address = None
    if address is not None and any(address in network for network in settings.metrics_networks):
        return None
    return PlainTextResponse("metrics: not open to this address (DXA_METRICS_ALLOW, or set DXA_METRICS_TOKEN)", 403)


@router.get("/metrics", include_in_schema=False)
def metrics(request: Request) -> Response:
    refused = metrics_refusal(request)
    if refused is not None:
        return refused
    return Response(generate_latest(request.app.state.metrics_registry), media_type=CONTENT_TYPE_LATEST)
