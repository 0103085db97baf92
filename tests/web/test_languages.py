"""简体中文 and English: the browser's language by default, the user's saved choice above it,
Chinese clinical terms and dates, and no message left untranslated in the Chinese catalog."""

from __future__ import annotations

from collections.abc import Callable

from babel.messages.pofile import read_po
from fastapi.testclient import TestClient

from tests.web.conftest import csrf_of
from tests.web.seed import REPLACED
from web import i18n

Login = Callable[[str], TestClient]


def test_browser_language_is_the_default(anon: TestClient) -> None:
    assert "登录" in anon.get("/login", headers={"Accept-Language": "zh-CN,zh;q=0.9"}).text
    assert "登录" in anon.get("/login", headers={"Accept-Language": "zh"}).text
    english = anon.get("/login", headers={"Accept-Language": "fr-FR,en;q=0.5"}).text
    assert "Sign in" in english and "登录" not in english


def test_users_choice_is_saved_and_used_everywhere(login: Login) -> None:
    client = login("clin")
    page = client.get(f"/patients/{REPLACED}").text
    assert "Latest exam per site" in page and 'lang="en"' in page
    chosen = client.post(
        "/settings/language", data={"locale": "zh_CN", "next": f"/patients/{REPLACED}", "csrf_token": csrf_of(page)}
    )
    assert chosen.status_code == 303
    page = client.get(f"/patients/{REPLACED}", headers={"Accept-Language": "en"}).text  # the choice wins
    assert 'lang="zh-Hans"' in page
    for term in (
        "各部位最近一次检查",
        "腰椎 L1-L4",
        "全髋",
        "股骨颈",
        "最小有意义变化",
        "新基线（更换设备）",
        "2018年10月15日",
    ):
        assert term in page, term
    assert "不可比较：更换了设备" in page
    listed = client.get("/patients").text
    assert "各部位最近变化" in listed and "稳定" in listed
    # back to following the browser
    client.post("/settings/language", data={"locale": "", "next": "/patients", "csrf_token": csrf_of(listed)})
    assert "Patients" in client.get("/patients", headers={"Accept-Language": "en-GB"}).text


def test_chinese_catalog_is_complete() -> None:
    with (i18n.LOCALE_DIR / "messages.pot").open("rb") as fh:
        template = {m.id if isinstance(m.id, str) else m.id[0] for m in read_po(fh) if m.id}
    with (i18n.LOCALE_DIR / "zh_CN" / "LC_MESSAGES" / "messages.po").open("rb") as fh:
        zh = read_po(fh)
    translated = {m.id if isinstance(m.id, str) else m.id[0] for m in zh if m.id and m.string and not m.fuzzy}
    assert template <= translated, sorted(template - translated)[:10]
