"""The dashboard in a real browser: sign in, read a patient's charts, add a therapy, audit."""

from __future__ import annotations

import re
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import shot
from tests.web.seed import PASSWORDS, REPLACED, SAME

pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]


def sign_in(page: Any, user: str, target: str = "/patients") -> None:
    page.goto(target)
    assert "/login" in page.url, "an anonymous visitor must land on the sign-in page"
    page.fill("input[name=username]", user)
    page.fill("input[name=password]", PASSWORDS[user])
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(re.escape(target) + r"$"))


def test_sign_in_and_patient_list(page: Any) -> None:
    page.goto("/login")
    shot(page, "01-login")
    sign_in(page, "clin")
    rows = page.locator("#patients tbody tr")
    assert rows.count() == 3
    text = page.locator("#patients").inner_text()
    assert REPLACED in text and SAME in text
    assert "Overdue" in page.locator("#patients tbody tr", has_text=SAME).inner_text()
    assert "Same, Machine" in text  # DICOM person names read as people write them
    shot(page, "02-patients")
    page.check("input[name=overdue]")
    page.click("form.filters button[type=submit]")
    expect(page.locator("#patients tbody tr")).to_have_count(1)
    # a clinician sees no QA links and may not open QA pages
    assert page.locator("header nav a", has_text="QA").count() == 0
    response = page.goto("/qa/comparisons")
    assert response is not None and response.status == 403


def test_search_follows_typing(page: Any) -> None:
    """htmx: the list narrows while typing, without pressing Search, and the URL follows."""
    sign_in(page, "clin")
    page.fill("input[name=q]", "replaced")
    expect(page.locator("#patients tbody tr")).to_have_count(1)
    expect(page.locator("#patients tbody tr").first).to_contain_text(REPLACED)
    expect(page).to_have_url(re.compile(r"/patients\?q=replaced"))
    page.fill("input[name=q]", "")
    expect(page.locator("#patients tbody tr")).to_have_count(3)


def test_patient_chart_and_cross_machine_points(page: Any) -> None:
    sign_in(page, "clin", f"/patients/{REPLACED}")
    spine = page.locator("figure[data-site='L1-L4']")
    svg = spine.locator("svg.chart")
    assert svg.count() == 1
    assert spine.locator("table tbody tr").count() == 4
    assert spine.locator("svg .point").count() == 4
    # the first exam on the new machine is drawn hollow, with the refusal reason on hover and in the table
    refused = spine.locator("svg .point.refused")
    assert refused.count() == 1
    assert "different models" in refused.locator("title").text_content()
    assert "new baseline (machine changed)" in spine.locator("table tbody tr").nth(2).inner_text()
    assert "different models" in spine.inner_text()
    # never joined: each line holds only points of one machine, and no line spans both machines
    points = spine.locator("svg .point")
    by_machine: dict[str, set[tuple[float, float]]] = {}
    for i in range(points.count()):
        box = points.nth(i).bounding_box()
        machine = points.nth(i).get_attribute("data-machine")
        by_machine.setdefault(machine, set()).add(
            (round(box["x"] + box["width"] / 2), round(box["y"] + box["height"] / 2))
        )
    assert len(by_machine) == 2
    lines = spine.locator("svg polyline.segment")
    assert lines.count() == 2
    for i in range(lines.count()):
        machines = {lines.nth(i).get_attribute("data-machine")}
        coords = lines.nth(i).get_attribute("points").split()
        assert len(coords) == 2
        assert machines <= set(by_machine)
    machine_of_lines = [lines.nth(i).get_attribute("data-machine") for i in range(lines.count())]
    assert len(set(machine_of_lines)) == 2, "one line per machine, none joining the two"
    # T-scores appear per exam in the table, not as a trend
    assert "-2.4" in spine.locator("table").inner_text()
    assert page.locator("#comparisons tr.refused").count() >= 6
    shot(page, "03-patient-machine-replaced")


def test_add_therapy_changes_next_scan(page: Any) -> None:
    sign_in(page, "clin", f"/patients/{SAME}")
    before = page.locator("#next-scan-due").inner_text()
    page.fill("#add-therapy input[name=agent]", "denosumab")
    page.fill("#add-therapy input[name=start_date]", "2017-04-01")
    page.click("#add-therapy button[type=submit]")
    page.wait_for_load_state()
    assert "Therapy saved" in page.locator(".msg-ok").inner_text()
    after = page.locator("#next-scan-due").inner_text()
    assert after != before, f"next scan still {before}"
    assert "denosumab" in page.locator("#therapies table").inner_text()
    shot(page, "04-patient-after-therapy")


def test_qa_audit_finds_refused_comparison(page: Any) -> None:
    sign_in(page, "qa", "/qa/comparisons")
    rows = page.locator("#refused tbody tr", has_text=REPLACED)
    assert rows.count() >= 6
    first = rows.first.inner_text()
    assert "Discovery SL" in first and "Horizon W" in first and "different models" in first
    shot(page, "05-qa-refused")
    page.goto("/qa/devices")
    assert page.locator(".device").count() == 3
    assert "bob" in page.locator(".device", has_text="200457").inner_text()
    shot(page, "06-qa-devices")
    page.goto("/qa/ingest")
    assert "truncated_dicom" in page.locator("#quarantine").inner_text()
    shot(page, "07-qa-ingest")
    page.goto("/worklist")
    assert SAME in page.locator("#worklist").inner_text()
    shot(page, "08-worklist")
