"""The operations page, its API and Prometheus /metrics show the job table as it is: a job made
to look silent appears as stuck on all three; counts match the database; QA roles only. The
metrics need no session (a scraper has none) but answer only this host, the allowed networks, or
a scraper with the configured token."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from datetime import timedelta

from fastapi.testclient import TestClient
from sqlalchemy import func, select

from db.models import Job, SourceFile, utcnow
from tests.web.seed import TODAY, Seeded
from web.app import create_app


def _metric(text: str, name: str, labels: str = "") -> float:
    pattern = re.escape(name) + (re.escape("{" + labels + "}") if labels else "") + r" ([0-9.e+-]+)"
    found = re.search(pattern, text)
    assert found, f"{name}{{{labels}}} not in /metrics"
    return float(found.group(1))


def test_operations_views_agree_with_the_job_table(
    seeded: Seeded, anon: TestClient, login: Callable[[str], TestClient]
) -> None:
    with seeded.factory.begin() as session:
        session.add_all(
            [
                Job(kind="evaluate_patient", state="queued", attempts=0, created_at=utcnow() - timedelta(minutes=5)),
                Job(
                    kind="evaluate_patient",
                    state="running",
                    attempts=1,
                    worker="another-host:4242",
                    started_at=utcnow() - timedelta(minutes=3),
                    updated_at=utcnow() - timedelta(minutes=3),
                ),
                Job(kind="evaluate_patient", state="running", attempts=1, worker="busy-host:1", updated_at=utcnow()),
            ]
        )
    with seeded.factory() as session:
        queued = session.scalar(select(func.count()).select_from(Job).where(Job.state == "queued"))
        quarantined = session.scalar(
            select(func.count()).select_from(SourceFile).where(SourceFile.status == "quarantined")
        )

    assert anon.get("/metrics").status_code == 403, "the test client's address is not this host"
    with TestClient(anon.app, client=("127.0.0.1", 40000)) as local:
        metrics = local.get("/metrics")
    assert metrics.status_code == 200
    assert _metric(metrics.text, "dxa_jobs", 'state="queued"') == queued
    assert _metric(metrics.text, "dxa_jobs", 'state="running"') == 2
    assert _metric(metrics.text, "dxa_stuck_jobs") == 1
    assert _metric(metrics.text, "dxa_oldest_queued_job_age_seconds") >= 299
    assert sum(float(v) for v in re.findall(r"dxa_quarantined_files\{[^}]*\} ([0-9.]+)", metrics.text)) == quarantined

    assert anon.get("/api/qa/operations").status_code == 401
    assert login("clin").get("/api/qa/operations").status_code == 403
    data = login("qa").get("/api/qa/operations").json()
    assert [j["worker"] for j in data["stuck"]] == ["another-host:4242"]
    assert data["jobs"]["queued"] == queued and data["oldest_queued_s"] >= 299
    page = login("admin").get("/qa/operations")
    assert page.status_code == 200
    assert "another-host:4242" in page.text and "busy-host" not in page.text


def test_metrics_answer_allowed_networks_or_the_token_only(seeded: Seeded) -> None:
    def app_with(**changes: object) -> object:
        settings = seeded.settings.model_copy(update=changes)
        return create_app(dataclasses.replace(seeded.ctx, settings=settings), today=lambda: TODAY)

    def get(app: object, address: str, token: str | None = None) -> int:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        with TestClient(app, client=(address, 40000)) as client:  # type: ignore[arg-type]
            return client.get("/metrics", headers=headers).status_code

    default = app_with()
    assert get(default, "127.0.0.1") == 200 and get(default, "::1") == 200
    assert get(default, "10.1.2.3") == 403
    prometheus_net = app_with(metrics_allow="127.0.0.1, 10.1.0.0/16")
    assert get(prometheus_net, "10.1.2.3") == 200 and get(prometheus_net, "10.2.0.1") == 403
    with_token = app_with(metrics_token="scrape-secret-123")
    assert get(with_token, "10.9.9.9", "scrape-secret-123") == 200
    assert get(with_token, "10.9.9.9", "wrong") == 401 and get(with_token, "127.0.0.1") == 401
