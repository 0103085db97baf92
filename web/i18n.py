"""The dashboard in English and 简体中文: Babel catalogs, the user's choice, dates and numbers.

Text people read is written in English in the templates and code, marked for translation
(`_()` in templates, `N_()` here for words chosen at run time), extracted with
`make messages` into `web/locale/messages.pot`, and translated in
`web/locale/<locale>/LC_MESSAGES/messages.po`. The .po files are read directly (compiled in
memory at start), so there is no build step and no binary file in the repository.

The locale of a request: the signed-in user's saved choice, else the browser's Accept-Language,
else English. Chinese clinical terms follow Chinese DXA reports (骨密度, 腰椎, 股骨颈, 全髋,
最小有意义变化 …).
"""

from __future__ import annotations

from contextvars import ContextVar
from datetime import date, datetime
from functools import cache
from io import BytesIO
from pathlib import Path

from babel import Locale, negotiate_locale
from babel.dates import format_date, format_datetime
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import NullTranslations, Translations

LOCALE_DIR = Path(__file__).resolve().parent / "locale"
DEFAULT = "en"
LOCALES = {"en": "English", "zh_CN": "简体中文"}
_current: ContextVar[str] = ContextVar("dxa_locale", default=DEFAULT)


def N_(message: str) -> str:
    """Marks a message chosen at run time (a verdict, a site name) for extraction."""
    return message


@cache
def translations(locale: str) -> NullTranslations:
    path = LOCALE_DIR / locale / "LC_MESSAGES" / "messages.po"
    if locale == DEFAULT or not path.is_file():
        return NullTranslations()
    with path.open("rb") as fh:
        catalog = read_po(fh, locale=locale)
    buf = BytesIO()
    write_mo(buf, catalog)
    buf.seek(0)
    return Translations(buf)


def choose(saved: str | None, accept_language: str | None) -> str:
    """The user's saved choice, else the browser's preference among ours, else English."""
    if saved in LOCALES:
        return saved
    wanted = []
    for part in (accept_language or "").split(","):
        tag = part.split(";")[0].strip().replace("-", "_")
        if tag:
            wanted.append(tag)
    # a bare "zh" or "zh_Hans" browser setting means Simplified Chinese here
    wanted = ["zh_CN" if w.lower() in ("zh", "zh_hans", "zh_hans_cn", "zh_sg") else w for w in wanted]
    found = negotiate_locale(wanted, list(LOCALES), sep="_")
    return found or DEFAULT


def activate(locale: str) -> None:
    _current.set(locale if locale in LOCALES else DEFAULT)


def current() -> str:
    return _current.get()


def gettext(message: str, **variables: object) -> str:
    text = translations(current()).gettext(message)
    return text % variables if variables else text


def ngettext(singular: str, plural: str, n: int, **variables: object) -> str:
    text = translations(current()).ngettext(singular, plural, n)
    return text % {"num": n, **variables}


def day(value: date | datetime | None) -> str:
    """A date as the locale writes it: ISO 8601 in English (unambiguous in a chart), 2018年10月15日
    in Chinese; a time stamp keeps its time and says UTC."""
    if value is None:
        return "—"
    locale = current()
    if isinstance(value, datetime):
        if locale == DEFAULT:
            return value.strftime("%Y-%m-%d %H:%M UTC")
        return format_datetime(value, "yyyy年M月d日 HH:mm", locale=Locale.parse(locale)) + " UTC"
    if locale == DEFAULT:
        return value.isoformat()
    return format_date(value, "yyyy年M月d日", locale=Locale.parse(locale))
