"""Every page in 简体中文 with nothing left in English: the alert and refusal sentences of the
monitoring core (phrases) worded through the catalogs, dates and numbers per locale, and a scan of
each rendered page for any English message of the catalog."""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from datetime import date

import pytest
from babel.messages.pofile import read_po
from fastapi.testclient import TestClient

from monitor.model import Machine, Phrase, SiteRef
from monitor.phrases import ENGLISH, english
from tests.web.conftest import csrf_of
from tests.web.seed import REPLACED, SAME, Seeded
from web import i18n, phrases

Login = Callable[[str], TestClient]
ZH = {"Accept-Language": "zh-CN,zh;q=0.9"}
PAGES = (
    "/patients",
    f"/patients/{REPLACED}",
    f"/patients/{SAME}",
    "/worklist?start=&end=",
    "/qa/comparisons?start=&end=&device=",
    "/qa/comparisons?start=not-a-date",
    "/qa/devices",
    "/qa/ingest",
    "/qa/audit",
    "/qa/operations",
    "/qa/scans",
)


def _english_messages() -> set[str]:
    """The catalog's English sentences worth finding on a page: several words, no placeholder
    (a placeholder's text varies), not a term Chinese pages keep as is."""
    with (i18n.LOCALE_DIR / "messages.pot").open("rb") as fh:
        ids = {m.id if isinstance(m.id, str) else m.id[0] for m in read_po(fh) if m.id}
    return {m for m in ids if "%(" not in m and len(m.split()) >= 3 and re.search(r"[a-z]{3}", m)}


def _visible_text(page: str) -> str:
    page = re.sub(r"<(script|style)\b.*?</\1>", " ", page, flags=re.S)
    page = re.sub(r'<[^>]*\blang="en"[^>]*>.*?</[a-z0-9]+>', " ", page, flags=re.S)  # data quoted as received
    text = re.sub(r"<[^>]+>", " ", page)
    return " ".join(html.unescape(text).split())


@pytest.mark.parametrize("path", PAGES)
def test_every_page_in_chinese_has_no_english_sentence(login: Login, path: str) -> None:
    client = login("admin")
    page = client.get(path, headers=ZH)
    assert page.status_code == 200, page.text[:300]
    assert 'lang="zh-Hans"' in page.text
    text = _visible_text(page.text)
    left = sorted(m for m in _english_messages() if m in text)
    assert not left, f"{path}: English left: {left[:5]}"


def test_alerts_and_refusals_are_worded_in_chinese(login: Login) -> None:
    client = login("clin")
    replaced = _visible_text(client.get(f"/patients/{REPLACED}", headers=ZH).text)
    assert "型号不同" in replaced and "没有覆盖" in replaced, "the refusal reason in Chinese"
    assert "no cross-calibration between them" not in replaced
    same = client.get(f"/patients/{SAME}", headers=ZH).text
    assert 'id="alerts"' in same
    alerts = _visible_text(same.split('id="alerts"', 1)[1].split("</ul>", 1)[0])
    assert "骨密度显著下降" in alerts, alerts[:300]
    assert "Significant BMD loss" not in alerts
    english_page = client.get(f"/patients/{SAME}", headers={"Accept-Language": "en"}).text
    assert "Significant BMD loss" in english_page


def test_phrase_tables_name_the_same_codes_and_arguments() -> None:
    assert set(phrases.MESSAGES) == set(ENGLISH)
    for code, sentence in ENGLISH.items():
        english_args = set(re.findall(r"\{(\w+)", sentence))
        catalog_args = set(re.findall(r"%\((\w+)\)s", phrases.MESSAGES[code]))
        assert english_args == catalog_args, code


def test_a_phrase_reads_in_each_language_and_keeps_the_export_english() -> None:
    loss = Phrase.of("loss_on_treatment", agent="阿仑膦酸钠", sites=(SiteRef("L1-L4"), SiteRef("total_hip", "mean")))
    assert english(loss).startswith("Significant BMD loss on 阿仑膦酸钠 (L1-L4, total hip (mean))")
    refusal = Phrase.of(
        "refused_cross_machine",
        why=Phrase.of("different_models"),
        machine_a=Machine("HOLOGIC", "Discovery SL", "45678"),
        machine_b=Machine("GE", "Prodigy", None),
        site="femoral_neck",
    )
    i18n.activate("zh_CN", "zh_CN")
    try:
        zh_loss = phrases.render(loss)
        assert "阿仑膦酸钠" in zh_loss and "腰椎 L1-L4、全髋（双侧平均）" in zh_loss, zh_loss
        zh_refusal = phrases.render(refusal)
        assert zh_refusal.startswith("型号不同：HOLOGIC Discovery SL (序列号 45678)"), zh_refusal
        assert "无序列号" in zh_refusal and "股骨颈" in zh_refusal, zh_refusal
        early = Phrase.of(
            "scan_too_early", scan_date=date(2019, 3, 1), months=12, previous_date=date(2018, 9, 3), rule="x"
        )
        assert "2019年3月1日" in phrases.render(early)
    finally:
        i18n.activate("en")
    # on screen in English the sites read as the dashboard names them; the export keeps its words
    assert phrases.render(loss).startswith("Significant BMD loss on 阿仑膦酸钠 (L1-L4, Total hip (mean of both sides))")


@pytest.mark.parametrize(
    ("accept", "language", "day", "number", "paper"),
    [
        ("", "en", "2018-10-15", "1,234.568", "a4"),
        ("en-US,en;q=0.8", "en", "Oct 15, 2018", "1,234.568", "letter"),
        ("en-GB", "en", "15 Oct 2018", "1,234.568", "a4"),
        ("de-DE,en;q=0.5", "en", "2018-10-15", "1,234.568", "a4"),
        ("zh-CN,zh;q=0.9", "zh_CN", "2018年10月15日", "1,234.568", "a4"),
    ],
)
def test_dates_numbers_and_paper_follow_the_locale(
    accept: str, language: str, day: str, number: str, paper: str
) -> None:
    chosen = i18n.choose(None, accept)
    assert chosen == language
    i18n.activate(chosen, i18n.format_locale(chosen, accept))
    try:
        assert i18n.day(date(2018, 10, 15)) == day
        assert i18n.number(1234.5678) == number
        assert i18n.number(-5.6349, 2, signed=True) == "-5.63"
        assert i18n.number(4.2, 2, signed=True) == "+4.20"
        assert i18n.paper() == paper
    finally:
        i18n.activate("en")


def test_language_menu_offers_the_browser_language(login: Login) -> None:
    client = login("clin")
    page = client.get("/patients", headers=ZH).text
    menu = page.split('id="locale-choice"', 1)[1].split("</select>", 1)[0]
    assert re.search(r'<option value="" selected>', menu), "following the browser until a choice is saved"
    client.post("/settings/language", data={"locale": "zh_CN", "next": "/patients", "csrf_token": csrf_of(page)})
    menu = client.get("/patients").text.split('id="locale-choice"', 1)[1].split("</select>", 1)[0]
    assert re.search(r'<option value="zh_CN"[^>]*selected', menu)
    client.post("/settings/language", data={"locale": "", "next": "/patients", "csrf_token": csrf_of(page)})


def test_therapy_form_refusal_in_chinese(login: Login) -> None:
    client = login("clin")
    token = csrf_of(client.get(f"/patients/{SAME}", headers=ZH).text)
    bad = client.post(
        f"/patients/{SAME}/therapies",
        data={"agent": "water", "start_date": "2018-01-01", "csrf_token": token},
        headers=ZH,
    )
    assert bad.status_code == 422
    assert "“water”不是已知的抗骨质疏松药物" in bad.text and "not an osteoporosis agent" not in bad.text


def test_precision_and_phantom_sentences_in_chinese() -> None:
    from monitor.precision import PrecisionResult, check_technologist
    from tests.unit.monitor.monitor_builders import load_config

    result = PrecisionResult("L1-L4", 30, 60, 30, 0.02, 2.5, 0.055, 6.9, "30x2")
    check = check_technologist(result, load_config())
    assert check.acceptable is False and check.phrase is not None
    assert phrases.render(check.phrase) == check.message  # English on screen is the core's own
    i18n.activate("zh_CN", "zh_CN")
    try:
        zh = phrases.render(check.phrase)
    finally:
        i18n.activate("en")
    assert "腰椎 L1-L4" in zh and "2.50" in zh and "重新培训" in zh, zh


def test_precision_upload_pages_in_chinese(login: Login, seeded: Seeded) -> None:
    """The calculator's preview and its refusals in Chinese (the file's line and field named); a
    refusal nobody worded for the catalogs is quoted in English, marked as such."""
    client = login("qa")
    token = csrf_of(client.get("/qa/devices", headers=ZH).text)
    rows = ["technologist,patient,bmd"]
    rows += [f"carol,p{i},{1.0 + i * 0.01 + 0.01 * (-1) ** k:.3f}" for i in range(30) for k in (1, 2)]
    form = {"device": str(seeded.device_ids["45678"]), "site": "total_hip", "csrf_token": token}
    preview = client.post("/qa/devices/precision", data={**form, "csv_text": "\n".join(rows)}, headers=ZH)
    assert preview.status_code == 200, preview.text[:300]
    assert "保存研究" in preview.text and ("合格" in preview.text or "超限" in preview.text)
    left = sorted(m for m in _english_messages() if m in _visible_text(preview.text))
    assert not left, left[:5]
    bad = client.post("/qa/devices/precision", data={**form, "csv_text": "a,b\n1,2"}, headers=ZH)
    assert bad.status_code == 422
    assert "无法使用该文件" in bad.text and "CSV：第 1 行：缺少列" in bad.text, bad.text[-2000:]
    assert "missing column" not in bad.text
    english = client.post("/qa/devices/precision", data={**form, "csv_text": "a,b\n1,2"}).text
    assert "CSV: line 1: missing column(s)" in english
    # a refusal the core words only in English is quoted as such
    dates = client.post(
        "/qa/devices/precision", data={**form, "csv_text": "\n".join(rows), "performed_on": "nope"}, headers=ZH
    )
    assert dates.status_code == 422 and re.search(r'<span lang="en">[^<]*nope', dates.text)
