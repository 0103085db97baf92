"""Issue 15's "Done when", in Chromium at 1280×800 and at a 390 px phone:

- a clinician answers from the patient page alone, without scrolling past the first chart: did
  BMD change beyond the LSC at each site since baseline and since the previous scan, on which
  machine, under which drug, what each alert means, and when the next scan is due;
- a QA auditor finds every refused comparison on machine X last year in two clicks and
  downloads it.

Screenshots (the first screen as the user sees it, and the whole page) go to tests/artifacts/."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import date
from typing import Any

import pandas as pd
import pytest

from db.models import Patient
from db.reports import store_report
from db.therapies import add_therapy
from monitor.drugs import therapy_from_agent
from tests.e2e.conftest import ARTIFACTS, signed_in_page
from tests.web.seed import NEW, OLD, PASSWORDS, REPLACED, SAME, TODAY, Seeded, _report, build, evaluate

pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]
SIZES = ((1280, 800), (390, 844))
LAST_YEAR_PATIENT = "7700123"  # machine changed last year: refusals dated last year
LAST_YEAR = TODAY.year - 1
VERDICTS = ("stable", "gain", "loss", "not comparable", "baseline")


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Seeded:
    """The shared seed, the machine-replaced patient's drugs, and a patient whose machine changed
    last year (so machine X has refusals last year and in earlier years)."""
    seeded = build(tmp_path_factory.mktemp("done-when"))
    with seeded.factory() as session:
        pk = seeded.patients[REPLACED]
        add_therapy(session, pk, therapy_from_agent("risedronate", date(2012, 10, 1), date(2017, 10, 1)))
        add_therapy(session, pk, therapy_from_agent("raloxifene", date(2017, 10, 15), None))
        for day, device, bmd in ((date(LAST_YEAR - 2, 4, 3), OLD, 0.901), (date(LAST_YEAR, 5, 2), NEW, 0.912)):
            values = {("L1-L4", None): (bmd, -1.2), ("total_hip", "left"): (bmd - 0.1, -1.0)}
            store_report(session, _report(LAST_YEAR_PATIENT, "Last^Year", day, device, values))
        session.commit()
        seeded.patients[LAST_YEAR_PATIENT] = session.query(Patient).filter_by(identifier=LAST_YEAR_PATIENT).one().id
    for patient in (REPLACED, LAST_YEAR_PATIENT):
        evaluate(seeded.ctx, seeded.patients[patient])
    return seeded


@pytest.fixture(scope="module")
def pages(browser: Any, live_server: str) -> Iterator[dict[tuple[str, int], Any]]:
    contexts: dict[tuple[str, int], Any] = {}
    blocked: list[str] = []

    for user in ("clin", "qa"):
        for width, height in SIZES:
            page = signed_in_page(
                browser, live_server, user, PASSWORDS[user], {"width": width, "height": height}, blocked
            )
            contexts[(user, width)] = page
    yield contexts
    for page in contexts.values():
        page.context.close()
    assert not blocked, f"the pages tried to reach the network: {blocked}"


def _bottom(locator: Any) -> float:
    box = locator.bounding_box()
    assert box is not None, "not rendered"
    return float(box["y"] + box["height"])


def _screens(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}-first-screen.png"))
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def _no_sideways_scroll(page: Any) -> None:
    assert page.evaluate("document.documentElement.scrollWidth") <= page.viewport_size["width"]


@pytest.mark.parametrize(("width", "height"), SIZES)
@pytest.mark.parametrize(
    ("patient", "machine", "drug"),
    [(REPLACED, "Horizon W", "raloxifene"), (SAME, "Horizon W", "none recorded")],
)
def test_clinician_answers_before_the_first_chart(
    pages: Any, width: int, height: int, patient: str, machine: str, drug: str
) -> None:
    page = pages[("clin", width)]
    page.goto(f"/patients/{patient}")
    page.evaluate("window.scrollTo(0, 0)")
    limit = _bottom(page.locator("svg.chart").first)  # nothing the clinician needs lies below it
    # when the next scan is due
    due = page.locator("#next-scan-due")
    assert re.search(r"\d{4}", due.inner_text()), due.inner_text()
    assert _bottom(due) <= limit
    # per site: the change since the previous scan and since baseline, against the LSC; machine; drug
    rows = page.locator("#site-summary tbody tr")
    assert rows.count() >= 2
    for i in range(rows.count()):
        row = rows.nth(i)
        assert _bottom(row) <= limit, f"row {i} lies below the first chart"
        cells = {
            name: row.locator(f"td[data-label='{name}']").inner_text()
            for name in ("Exam", "vs previous", "vs baseline", "LSC g/cm²", "Drug at exam")
        }
        assert machine in cells["Exam"], cells
        assert drug in cells["Drug at exam"], cells
        for reference in ("vs previous", "vs baseline"):
            assert any(v in cells[reference] for v in VERDICTS), (reference, cells)
            if "%" in cells[reference]:
                assert any(v in cells[reference] for v in ("stable", "gain", "loss")), (
                    cells
                )  # a verdict, not a bare number
                assert (
                    re.search(r"\d\.\d{3}", cells["LSC g/cm²"]) and "(" in cells["LSC g/cm²"]
                )  # the LSC and its source
    # each alert: the sentence and what it means
    alerts = page.locator("#alerts li")
    for i in range(alerts.count()):
        alert = alerts.nth(i)
        assert alert.locator(".alert-message").inner_text().strip()
        assert "Why it matters" in alert.locator(".alert-meaning").inner_text()
        assert _bottom(alert.locator(".alert-meaning")) <= limit
    if patient == SAME:
        assert alerts.count() >= 1 and "-5.56 %" in page.locator("#alerts").inner_text()
    _no_sideways_scroll(page)
    _screens(page, f"15-done-clinician-{patient}-{width}x{height}")


@pytest.mark.parametrize(("width", "height"), SIZES)
def test_auditor_finds_last_years_refusals_on_a_machine_in_two_clicks(
    pages: Any, seeded: Seeded, width: int, height: int
) -> None:
    page = pages[("qa", width)]
    page.goto("/patients")
    machine_pk = seeded.device_ids[NEW.serial or ""]
    page.click("nav a[href='/qa/comparisons']")  # click 1
    page.wait_for_url(re.compile(r"/qa/comparisons$"))
    page.click(f"#refused-by-machine li[data-device='{machine_pk}'] a[data-year='{LAST_YEAR}']:not(.tally-csv)")  # 2
    page.wait_for_url(re.compile(rf"device={machine_pk}&year={LAST_YEAR}"))
    shown = page.locator("#refused tbody tr")
    texts = shown.all_inner_texts()
    assert texts and all(LAST_YEAR_PATIENT in t and "200457" in t for t in texts), texts
    expected = [
        c for c in page.request.get(f"/api/qa/comparisons?device={machine_pk}&year={LAST_YEAR}").json()["comparisons"]
    ]
    everything = page.request.get(f"/api/qa/comparisons?device={machine_pk}").json()["comparisons"]
    assert len(texts) == len(expected) == sum(c["to_date"].startswith(str(LAST_YEAR)) for c in everything)
    assert len(everything) > len(expected), "other years exist and are left out"
    _no_sideways_scroll(page)
    _screens(page, f"15-done-auditor-{width}x{height}")
    with page.expect_download() as download:
        page.click("#refused-csv")
    frame = pd.read_csv(download.value.path(), dtype=str)
    assert len(frame) == len(texts)
    assert all(d.startswith(str(LAST_YEAR)) for d in frame["to_date"])
    assert set(frame["patient_id"]) == {LAST_YEAR_PATIENT}
    # the tally's own CSV link downloads the same rows
    with page.expect_download() as tally_download:
        page.click(f"#refused-by-machine li[data-device='{machine_pk}'] a.tally-csv[data-year='{LAST_YEAR}']")
    assert len(pd.read_csv(tally_download.value.path(), dtype=str)) == len(frame)
