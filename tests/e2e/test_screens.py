"""Issue 15 in a real browser, at a desktop (1366 px) and a phone (390 px) width: each screen
that misled now says the truth, and nothing scrolls sideways. Screenshots: tests/artifacts/."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import date
from typing import Any

import pandas as pd
import pytest

from db.therapies import add_therapy
from monitor.drugs import therapy_from_agent
from tests.e2e.conftest import shot, signed_in_page
from tests.web.seed import PASSWORDS, REPLACED, SAME, Seeded, build, evaluate

pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]
WIDTHS = (1366, 390)


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Seeded:
    """The shared seed plus the drug history of the machine-replaced patient (the samples')."""
    seeded = build(tmp_path_factory.mktemp("screens"))
    with seeded.factory() as session:
        pk = seeded.patients[REPLACED]
        add_therapy(session, pk, therapy_from_agent("risedronate", date(2012, 10, 1), date(2017, 10, 1)))
        add_therapy(session, pk, therapy_from_agent("raloxifene", date(2017, 10, 15), None))
        session.commit()
    evaluate(seeded.ctx, seeded.patients[REPLACED])
    return seeded


@pytest.fixture(scope="module")
def signed_in(browser: Any, live_server: str) -> Iterator[dict[str, dict[int, Any]]]:
    """One signed-in context per user and width, shared by the module's tests."""
    contexts: dict[str, dict[int, Any]] = {}
    blocked: list[str] = []

    for user in ("clin", "qa"):
        for width in WIDTHS:
            page = signed_in_page(browser, live_server, user, PASSWORDS[user], {"width": width, "height": 900}, blocked)
            contexts.setdefault(user, {})[width] = page
    yield contexts
    for by_width in contexts.values():
        for page in by_width.values():
            page.context.close()
    assert not blocked, f"the pages tried to reach the network: {blocked}"


def no_sideways_scroll(page: Any) -> None:
    width = page.evaluate("document.documentElement.scrollWidth")
    viewport = page.viewport_size["width"]
    assert width <= viewport, f"{page.url} scrolls sideways at {viewport} px ({width} px wide)"


@pytest.mark.parametrize("width", WIDTHS)
def test_refused_comparisons_with_empty_dates_and_csv_of_what_is_shown(signed_in: Any, width: int) -> None:
    page = signed_in["qa"][width]
    page.goto("/qa/comparisons")
    page.select_option(
        "select[name=device]",
        label=next(o for o in page.locator("select[name=device] option").all_inner_texts() if "200457" in o),
    )
    page.select_option("select[name=year]", "2016")
    page.click("#refused-filters button[type=submit]")
    page.wait_for_load_state()
    assert "detail" not in page.content()[:200]  # not a raw JSON error
    shown = page.locator("#refused tbody tr", has_text=REPLACED)
    assert shown.count() == 6
    no_sideways_scroll(page)
    shot(page, f"15-qa-refused-filtered-{width}")
    with page.expect_download() as download:
        page.click("#refused-csv")
    path = download.value.path()
    frame = pd.read_csv(path, dtype=str)
    assert len(frame) == shown.count() and set(frame["to_date"]) == {"2016-10-03"}
    assert "200457" in download.value.suggested_filename and REPLACED not in download.value.suggested_filename
    # both date boxes left empty, no year: every refused comparison, no error
    page.goto("/qa/comparisons?device=&start=&end=&status=&year=")
    assert page.locator("#refused tbody tr", has_text=REPLACED).count() == 6


@pytest.mark.parametrize("width", WIDTHS)
def test_worklist_with_empty_dates(signed_in: Any, width: int) -> None:
    page = signed_in["clin"][width]
    page.goto("/worklist")
    page.fill("input[name=start]", "")
    page.fill("input[name=end]", "")
    page.click("form.filters button[type=submit]")
    page.wait_for_load_state()
    assert page.locator("#worklist").count() == 1 and SAME in page.locator("#worklist").inner_text()
    no_sideways_scroll(page)


@pytest.mark.parametrize("width", WIDTHS)
def test_patient_page_answers_before_the_first_chart(signed_in: Any, width: int) -> None:
    page = signed_in["clin"][width]
    page.goto(f"/patients/{REPLACED}")
    summary = page.locator("#site-summary")
    first_chart = page.locator("svg.chart").first
    assert summary.bounding_box()["y"] < first_chart.bounding_box()["y"]
    spine = summary.locator("tr[data-site='L1-L4']").inner_text()
    assert "15 Oct 2018" in spine and "Horizon W" in spine and "raloxifene" in spine  # en-GB dates
    assert "+0.74 %" in spine and "stable" in spine and "(machine's precision study)" in spine
    # the first exam on the new machine: a new baseline, no number, no vendor figure
    table = page.locator("figure[data-site='L1-L4'] table.exams")
    moved = table.locator("tbody tr").nth(2)
    text = moved.inner_text()
    assert "new baseline (machine changed)" in text and "not comparable: machine changed" in text
    assert "%" not in text and "machine printed" not in text
    assert table.locator("tbody tr").count() == 4
    assert "risedronate" in table.locator("tbody tr").nth(1).inner_text()  # the drug at that exam
    # one spine chart, the therapy timeline on the same axis with whole labels
    assert page.locator("figure[data-site^='L'] svg.chart").count() == 1
    labels = page.locator("#therapy-timeline text.therapy-label").all_text_contents()
    assert any(label.startswith("risedronate (oral bisphosphonate)") for label in labels)
    assert any(label.startswith("raloxifene (serm)") for label in labels)
    box = page.locator("#therapy-timeline svg").bounding_box()
    for i in range(page.locator("#therapy-timeline text.therapy-label").count()):
        label_box = page.locator("#therapy-timeline text.therapy-label").nth(i).bounding_box()
        assert label_box["x"] >= box["x"] - 1 and label_box["x"] + label_box["width"] <= box["x"] + box["width"] + 1
    no_sideways_scroll(page)
    shot(page, f"15-patient-machine-replaced-{width}")


@pytest.mark.parametrize("width", WIDTHS)
def test_alert_acknowledged_with_a_comment(signed_in: Any, width: int) -> None:
    page = signed_in["clin"][width]
    page.goto(f"/patients/{SAME}")
    alert = page.locator("#alerts li[data-code='loss_untreated']")
    assert "-5.56 %" in alert.inner_text() and "Why it matters" in alert.inner_text()
    no_sideways_scroll(page)
    if alert.get_attribute("data-state") == "open":
        alert.locator("summary").click()
        alert.locator("textarea[name=comment]").fill(f"Seen at {width} px; treatment discussed")
        alert.locator("button[type=submit]").click()
        page.wait_for_load_state()
    alert = page.locator("#alerts li[data-code='loss_untreated']")
    assert alert.get_attribute("data-state") == "acknowledged"
    assert "acknowledged by clin" in alert.inner_text()
    shot(page, f"15-patient-alert-acknowledged-{width}")


@pytest.mark.parametrize("width", WIDTHS)
def test_patients_list_latest_change_per_site(signed_in: Any, width: int) -> None:
    page = signed_in["clin"][width]
    page.goto("/patients")
    row = page.locator("#patients tbody tr", has_text=REPLACED).inner_text()
    assert "stable" in row and "15 Oct 2018" in row
    assert "none beyond LSC" not in page.content()
    no_sideways_scroll(page)
    shot(page, f"15-patients-{width}")


@pytest.mark.parametrize("width", WIDTHS)
def test_quarantine_by_reason_and_audit_trail(signed_in: Any, width: int) -> None:
    page = signed_in["qa"][width]
    page.goto("/qa/ingest")
    counts = page.locator("#reason-counts").inner_text()
    assert "truncated" in counts.lower()
    main = page.locator("#quarantine").inner_text()
    assert "broken.dcm" in main and "abababababab" in main  # original name, sha prefix
    no_sideways_scroll(page)
    shot(page, f"15-qa-ingest-{width}")
    page.goto("/qa/audit")
    page.select_option("select[name=kind]", "sign-ins")
    page.click("#audit-filters button[type=submit]")
    page.wait_for_load_state()
    actions = page.locator("#audit tbody tr").all_inner_texts()
    assert actions and all("login" in a for a in actions)
    no_sideways_scroll(page)
    with page.expect_download() as download:
        page.click("#audit-csv")
    frame = pd.read_csv(download.value.path(), dtype=str)
    assert len(frame) == len(actions) and set(frame["action"]) <= {"login", "login_failed", "signout"}
    shot(page, f"15-qa-audit-{width}")


@pytest.mark.parametrize("width", WIDTHS)
def test_chinese_from_the_browser_language(browser: Any, live_server: str, width: int) -> None:
    ctx = browser.new_context(base_url=live_server, viewport={"width": width, "height": 900}, locale="zh-CN")
    try:
        page = ctx.new_page()
        page.goto("/login")
        assert page.locator("h1").inner_text() == "登录"
        page.fill("input[name=username]", "clin")
        page.fill("input[name=password]", PASSWORDS["clin"])
        page.click("button[type=submit]")
        page.wait_for_url(re.compile(r"/patients$"))
        assert "各部位最近变化" in page.locator("#patients thead").inner_text()
        page.goto(f"/patients/{REPLACED}")
        summary = page.locator("#site-summary").inner_text()
        for term in ("腰椎 L1-L4", "全髋", "股骨颈", "最小有意义变化", "2018年10月15日"):
            assert term in summary, term
        moved = page.locator("figure[data-site='L1-L4'] table.exams tbody tr").nth(2).inner_text()
        assert "新基线（更换设备）" in moved and "%" not in moved
        no_sideways_scroll(page)
        shot(page, f"15-patient-zh-{width}")
    finally:
        ctx.close()
