"""The dashboard on the shared samples, loaded through the real pipeline (parse in a child,
store, evaluate, therapies import), exactly as a department would see it after `make run`."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import services.evaluation
import services.intake
import services.recovery
import services.runner
from dxa.wiring import make_app
from ingest.watcher import iter_files
from services.context import build_context
from services.therapies import import_therapies
from settings import Settings
from tests.e2e.conftest import serve_app, shot

pytestmark = [pytest.mark.browser, pytest.mark.timeout(600)]

SAMPLES = Path(__file__).resolve().parents[2].parent / "shared" / "samples"
PASSWORD = "sample-pass-1"


@pytest.fixture(scope="module")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from db.accounts import create_user
    from db.migrate import upgrade

    if not SAMPLES.is_dir():
        pytest.fail("../shared/samples is missing")
    tmp = tmp_path_factory.mktemp("samples-e2e")
    ctx = build_context(Settings(data_dir=tmp / "var"))
    upgrade(ctx.engine)
    staged = tmp / "stage"
    shutil.copytree(SAMPLES, staged)
    for path in sorted(iter_files(staged)):
        if path.name.endswith((".json", ".csv", ".md")):
            continue
        result = services.intake.intake(ctx, path, copy=True)
        assert result.job_id is not None
        services.runner.run_job(ctx, result.job_id)
    with ctx.sessions.begin() as session:
        create_user(session, "clin", PASSWORD, "clinician")
        create_user(session, "qa", PASSWORD, "qa")
    import_therapies(ctx, SAMPLES / "therapies.csv")  # queues the re-evaluation of its patients
    while services.runner.run_next(ctx, kinds=("evaluate_patient",)) is not None:
        pass

    app: Any = make_app(ctx)
    with serve_app(app) as url:
        yield url


def sign_in(page: Any, user: str, target: str) -> None:
    page.goto(target)
    assert "/login" in page.url
    page.fill("input[name=username]", user)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(re.escape(target) + r"$"))


def test_machine_replacement_is_shown_but_never_joined(page: Any) -> None:
    sign_in(page, "clin", "/patients/9891027")
    spine = page.locator("figure[data-site='L1-L4']")
    assert spine.locator("svg.chart").count() == 1
    assert spine.locator("table tbody tr").count() == 4  # four exams, two machines
    lines = spine.locator("svg polyline.segment")
    machines = [lines.nth(i).get_attribute("data-machine") for i in range(lines.count())]
    assert len(machines) == 2 and len(set(machines)) == 2, "one line per machine, none joining the two"
    refused = spine.locator("svg .point.refused")
    assert refused.count() >= 1
    assert "different models" in (refused.first.locator("title").text_content() or "")
    # the clinician can answer "when is the next scan due, and why" from the page
    # (as the browser's locale writes dates: en-US here, "Oct 15, 2020")
    assert re.search(r"\b(19|20)\d{2}\b", page.locator("#next-scan-due").inner_text())
    shot(page, "samples-01-machine-replaced")


def test_significant_changes_and_next_scan_on_one_machine(page: Any) -> None:
    sign_in(page, "clin", "/patients/4555466")
    table = page.locator("figure[data-site='L1-L4'] table.exams").inner_text()
    assert "gain" in table.lower()
    assert "5.73" in table  # L1-L4 2013 -> 2015, the shared truth's percent change
    shot(page, "samples-02-gain-loss")


def test_qa_finds_every_kind_of_refusal(page: Any) -> None:
    sign_in(page, "qa", "/qa/comparisons")
    text = page.locator("#refused").inner_text()
    for reason in ("different manufacturers", "different models", "same model, different serial numbers",
                   "serial number missing"):  # fmt: skip
        assert reason in text, reason
    shot(page, "samples-03-qa-refused")
    page.goto("/qa/ingest")
    quarantine = page.locator("#quarantine").inner_text()
    assert "encrypted" in quarantine.lower() and "truncated" in quarantine.lower()
    shot(page, "samples-04-qa-ingest")
