"""The dashboard in English and 简体中文: Babel catalogs, the user's choice, dates and numbers.

Text people read is written in English in the templates and code, marked for translation
(`_()` in templates, `N_()` here for words chosen at run time), extracted with
`make messages` into `web/locale/messages.pot`, and translated in
`web/locale/<locale>/LC_MESSAGES/messages.po`. The .po files are read directly (compiled in
memory at start), so there is no build step and no binary file in the repository.

The locale of a request: the signed-in user's saved choice, else the browser's Accept-Language,
else English. Chinese clinical terms follow Chinese DXA reports (骨密度, 腰椎, 股骨颈, 全髋,
最小有意义变化 …).

Dates and numbers follow the *formatting* locale: the language chosen, with the browser's region
when the browser asks for that language with one (en-US writes "Oct 15, 2018", en-GB
"15 Oct 2018", zh-CN "2018年10月15日"); English without a region writes ISO 8601 dates, which no
reader misreads. The region also chooses the report's paper (Letter in North America, A4
elsewhere).
"""

from __future__ import annotations

from contextvars import ContextVar
from datetime import date, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from functools import cache
from io import BytesIO
from pathlib import Path

from babel import Locale, UnknownLocaleError, negotiate_locale
from babel.dates import format_date, format_datetime
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.numbers import format_decimal
from babel.support import NullTranslations, Translations

LOCALE_DIR = Path(__file__).resolve().parent / "locale"
DEFAULT = "en"
LOCALES = {"en": "English", "zh_CN": "简体中文"}
_current: ContextVar[str] = ContextVar("dxa_locale", default=DEFAULT)
_formats: ContextVar[str] = ContextVar("dxa_format_locale", default=DEFAULT)
# Regions whose paper is US Letter (CLDR paperSize); A4 everywhere else
LETTER_REGIONS = frozenset({"US", "CA", "MX", "PH", "CL", "CO", "VE", "GT", "PA", "PR", "CR", "SV", "DO", "BZ"})


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
    wanted = _tags(accept_language)
    # a bare "zh" or "zh_Hans" browser setting means Simplified Chinese here
    wanted = ["zh_CN" if w.lower() in ("zh", "zh_hans", "zh_hans_cn", "zh_sg") else w for w in wanted]
    found = negotiate_locale(wanted, list(LOCALES), sep="_")
    return found or DEFAULT


def _tags(accept_language: str | None) -> list[str]:
    return [t for part in (accept_language or "").split(",") if (t := part.split(";")[0].strip().replace("-", "_"))]


def format_locale(language: str, accept_language: str | None) -> str:
    """How dates and numbers are written for `language`: with the browser's region when the
    browser asks for that language with one (en-GB, en-US, zh-CN …), else the language alone."""
    base = language.split("_")[0].lower()
    for tag in _tags(accept_language):
        parts = tag.split("_")
        if parts[0].lower() != base or len(parts) < 2:
            continue
        region = parts[-1]
        if len(region) == 2 and region.isalpha():
            try:
                return str(Locale.parse(f"{base}_{region.upper()}"))
            except (UnknownLocaleError, ValueError):
                continue
    return language


def activate(locale: str, formats: str | None = None) -> None:
    _current.set(locale if locale in LOCALES else DEFAULT)
    _formats.set(formats or _current.get())


def current() -> str:
    return _current.get()


def current_formats() -> str:
    """The formatting locale of the request (`format_locale`)."""
    return _formats.get()


def paper() -> str:
    """The paper a printed report defaults to for the formatting locale: "letter" or "a4"."""
    region = Locale.parse(current_formats()).territory
    if region is None and current() == "zh_CN":
        region = "CN"
    return "letter" if region in LETTER_REGIONS else "a4"


def number(value: float | int | None, digits: int = 3, signed: bool = False) -> str:
    """A number as the formatting locale writes it, with exactly `digits` decimals ("—" for none).

    Babel's formatting is the rule; a patient page writes a few hundred numbers, and Babel's
    general pattern machinery was a seventh of the page's time (issue 13). For a locale whose
    symbols are exactly "." "," "-" "+" (English and Chinese, most regions) the same result is
    written by the decimal module: the value read as Babel reads it (`Decimal(str(value))`),
    rounded half to even as Babel rounds, grouped by three. tests/web/test_i18n_numbers.py holds
    the two to the same output."""
    if value is None:
        return "—"
    locale = current_formats()
    if _plain_symbols(locale):
        if type(value) is float and -1e9 < value < 1e9:
            # A float whose shortest form has no more decimals than asked is written exactly by
            # float formatting (no rounding, no Decimal): most stored values (BMD, T-scores).
            text = repr(value)
            dot = text.find(".")
            if dot > 0 and "e" not in text and len(text) - dot - 1 <= digits:
                return format(value, f"{'+' if signed else ''},.{digits}f")
        exact = Decimal(str(value)) if isinstance(value, float) else Decimal(value)
        rounded = exact.quantize(_STEPS[digits], rounding=ROUND_HALF_EVEN)
        return format(rounded, f"{'+' if signed else ''},.{digits}f")
    return babel_number(value, digits, signed, locale)


def babel_number(value: float | int, digits: int, signed: bool, locale: str) -> str:
    """`number` as Babel writes it, for any locale."""
    pattern = "#,##0." + "0" * digits if digits else "#,##0"
    if signed:
        pattern = f"+{pattern};-{pattern}"
    return format_decimal(value, pattern, locale=_locale(locale))


_STEPS = {digits: Decimal(1).scaleb(-digits) for digits in range(10)}


@cache
def _locale(name: str) -> Locale:
    return Locale.parse(name)


@cache
def _plain_symbols(locale: str) -> bool:
    """Whether Babel writes this locale's numbers with the plain symbols the fast path writes."""
    probes = ((-1234567.5, 3, False, "-1,234,567.500"), (1234.25, 2, True, "+1,234.25"), (-3.0, 0, True, "-3"))
    return all(babel_number(value, digits, signed, locale) == text for value, digits, signed, text in probes)


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
    locale = current_formats()
    if isinstance(value, datetime):
        if locale == DEFAULT:
            return value.strftime("%Y-%m-%d %H:%M UTC")
        if locale.startswith("zh"):
            return format_datetime(value, "yyyy年M月d日 HH:mm", locale=_locale(locale)) + " UTC"
        return format_date(value.date(), "medium", locale=_locale(locale)) + value.strftime(" %H:%M UTC")
    if locale == DEFAULT:
        return value.isoformat()
    if locale.startswith("zh"):
        return format_date(value, "yyyy年M月d日", locale=_locale(locale))
    return format_date(value, "medium", locale=_locale(locale))


# Words the templates translate at run time (`| t`): listed so extraction finds them.
RUNTIME_WORDS = (
    N_("gain"),
    N_("loss"),
    N_("stable"),
    N_("baseline"),
    N_("previous"),
    N_("not assessed"),
    N_("left"),
    N_("right"),
    N_("mean of both sides"),
    N_("Lumbar spine"),
    N_("Femoral neck"),
    N_("Total hip"),
    N_("Trochanter"),
    N_("Intertrochanter"),
    N_("Ward's triangle"),
    N_("1/3 radius"),
    N_("Ultradistal radius"),
    N_("Total radius"),
    N_("Total body"),
    N_("Compared"),
    N_("Compared (cross-calibrated)"),
    N_("Refused: different machine"),
    N_("Refused: machine unknown"),
    N_("Normal"),
    N_("Low bone mass"),
    N_("Osteoporosis"),
    N_("Under 50: Z-score only"),
    N_("oral bisphosphonate"),
    N_("iv bisphosphonate"),
    N_("denosumab"),
    N_("anabolic pth"),
    N_("romosozumab"),
    N_("serm"),
    N_("hrt"),
    N_("calcitonin"),
    N_("drug holiday"),
    N_("none"),
    N_("Wrong user name or password."),
    N_("Alert acknowledged; it returns if something new happens."),
    N_("Therapy saved; the next scan date has been recalculated."),
    N_("Therapy stopped; the next scan date has been recalculated."),
    N_("File queued for re-processing."),
    N_("The change was saved but re-evaluation failed; it has been queued and will be retried."),
    # filter fields named in a sentence about a value that could not be read (web.forms)
    N_("Page"),
    N_("Machine"),
    N_("Year"),
    N_("From"),
    N_("To"),
    N_("Reason"),
    N_("What"),
    N_("Received from"),
    N_("Received to"),
    # the audit page's kinds of event (web.audit_log.KINDS)
    N_("Sign-ins"),
    N_("Views"),
    N_("Exports"),
    N_("Saved studies"),
    N_("Re-processing"),
    N_("Therapies"),
    N_("Alerts"),
    N_("Refused comparisons"),
    # states of files and jobs (QA pages)
    N_("ingested"),
    N_("duplicate"),
    N_("quarantined"),
    N_("pending"),
    N_("processing"),
    N_("queued"),
    N_("running"),
    N_("done"),
    N_("failed"),
    # the error page
    N_("Not found"),
    N_("Not allowed"),
    N_("Which patient?"),
    N_("Too large"),
    N_("Error"),
    N_("Form expired"),
    N_("Your role may not open this page."),
    N_("The form had expired. Go back, reload the page and try again."),
    N_("no such patient"),
    N_("No DXA exam on record: a baseline scan is needed."),
)

# The repeat-scan sentences of settings/monitoring.toml, as shipped: a site that rewrites one sees
# its own sentence in English until it is added to the catalogs.
RULE_SENTENCES = (
    N_("Untreated, lowest T-score above -2.0: repeat DXA no sooner than 5 years."),
    N_("Untreated with a T-score of -2.0 or lower: repeat DXA in 2 years (sooner if treatment starts)."),
    N_("Oral bisphosphonate: first follow-up DXA 2 years after starting treatment."),
    N_("Oral bisphosphonate: repeat DXA every 2 years."),
    N_("Zoledronic acid: repeat DXA in 2 to 3 years (due at 2 years; 3 years is acceptable once stable)."),
    N_(
        "Denosumab: repeat DXA in 1 to 2 years (due at 1 year). "
        "Never stop denosumab without a follow-on antiresorptive."
    ),
    N_(
        "Teriparatide/abaloparatide: scan at the end of the course (at most 2 years) "
        "to set a new baseline before the follow-on antiresorptive."
    ),
    N_(
        "Romosozumab: scan at the end of the 12-month course to set a new baseline before the follow-on antiresorptive."
    ),
    N_("Raloxifene/bazedoxifene: repeat DXA every 2 years."),
    N_("Hormone replacement therapy: repeat DXA every 2 years."),
    N_("Calcitonin: repeat DXA every 2 years."),
    N_("Bisphosphonate drug holiday: repeat DXA every 2 years; resume treatment if BMD falls significantly."),
    N_("Glucocorticoid user: repeat DXA every 12 months (bone loss is fastest in the first months)."),
)
