"""Jinja filters: how numbers, dates and statuses read on screen (always words beside colours)."""

from __future__ import annotations

import re
from collections.abc import MutableMapping
from datetime import date, datetime
from functools import lru_cache
from typing import Any
from urllib.parse import quote, urlencode

from jinja2 import Environment, Template, pass_eval_context
from jinja2.nodes import EvalContext
from markupsafe import Markup, escape

from web import i18n, phrases
from web.phrases import localized_site

N_ = i18n.N_
STATUS_TEXT = {
    "ok": "Compared",
    "ok_cross_calibrated": "Compared (cross-calibrated)",
    "rejected_cross_machine": "Refused: different machine",
    "rejected_unknown_machine": "Refused: machine unknown",
}
WHO_TEXT = {
    "normal": "Normal",
    "low_bone_mass": "Low bone mass",
    "osteoporosis": "Osteoporosis",
    "z_score_only": "Under 50: Z-score only",
}


def fmt_num(value: Any, digits: int = 3, signed: bool = False) -> str:
    """As the request's formatting locale writes numbers (web.i18n.number)."""
    return i18n.number(value, digits, signed)


def fmt_date(value: date | datetime | None) -> str:
    """As the request's locale writes dates (web.i18n.day)."""
    return i18n.day(value)


def person_name(value: str | None) -> str:
    """A DICOM person name as people write it: `TANAKA^JOAN` -> `TANAKA, JOAN`.

    PN is `family^given^middle^prefix^suffix`, up to three `=`-separated groups (alphabetic,
    ideographic, phonetic). Letter case is kept as the scanner sent it (title-casing would
    mangle McAllister or van der Berg); an ideographic group follows in brackets, written without
    separators as CJK names are."""
    if not value:
        return "—"
    groups = value.split("=")

    def western(group: str) -> str:
        family, given, middle, prefix, suffix = ([*group.split("^"), "", "", "", ""])[:5]
        first = " ".join(p for p in (prefix, given, middle) if p)
        name = ", ".join(p for p in (family, first) if p)
        return f"{name} {suffix}".strip() if suffix else name

    alphabetic = western(groups[0])
    ideographic = "".join(groups[1].split("^")) if len(groups) > 1 else ""
    if alphabetic and ideographic:
        return f"{alphabetic} ({ideographic})"
    return alphabetic or ideographic or "—"


def site_title(site: str, side: str | None = None) -> str:
    """A per-site heading: the spine names its analysed set ("Lumbar spine L1-L4", "腰椎 L1-L4")."""
    if site.startswith("L") and "-" in site:
        return i18n.gettext("Lumbar spine") + " " + site
    return localized_site(site, side)


@pass_eval_context
def template_gettext(eval_ctx: EvalContext, message: str, **variables: Any) -> str:
    """`_()` in the templates: what Jinja's new-style gettext returns (the translation, as Markup
    when autoescaping, always %-formatted with the variables so "%%" reads "%"), with the text
    of a call without variables kept per language. A patient page makes several hundred such
    calls (every table cell carries its column's label), and Jinja's own alias goes through
    three context calls and a Markup format for each: a sixth of the page's time (issue 13).
    It takes the evaluation context, not the template context: Jinja hands a function that
    asks for the latter, called inside a block or a loop, a copy of the context made for the
    call (a new context per `_()`, several hundred per patient page)."""
    if eval_ctx.autoescape:
        return template_text(message, **variables)
    if not variables:
        return _constant_text(i18n.current(), message, False)
    return i18n.gettext(message) % variables


def template_text(message: str, **variables: Any) -> Markup:
    """What `_()` gives an HTML template, for HTML written in Python (web.cells): the translation
    as Markup, %-formatted with the variables (escaped)."""
    if not variables:
        return _constant_text(i18n.current(), message, True)  # type: ignore[return-value]
    return Markup(i18n.gettext(message)) % variables


@lru_cache(maxsize=4096)
def _constant_text(locale: str, message: str, autoescape: bool) -> str:
    del locale  # part of the key: the text is the current language's
    text = i18n.gettext(message)
    return (Markup(text) if autoescape else text) % {}


_HTML_SPECIAL = re.compile("[&<>'\"]")


def output_escape(value: object) -> str:
    """What a template writes for `{{ value }}` when autoescaping: markupsafe's escaping (same
    entities), without making a Markup of each value. The compiled templates use it only where
    they write a value out (the page is the concatenation of those pieces; a block or macro
    output is still wrapped in Markup), and a patient page writes several hundred values: the
    Markup made for each was a tenth of its rendering (issue 13)."""
    if type(value) is not str:
        html = getattr(value, "__html__", None)
        if html is not None:
            return str(html())
        value = str(value)
    if _HTML_SPECIAL.search(value) is None:
        return value
    return str(escape(value))


class OutputTemplate(Template):
    """A template whose compiled code writes values with `output_escape`."""

    @classmethod
    def _from_namespace(
        cls, environment: Environment, namespace: MutableMapping[str, Any], globals: MutableMapping[str, Any]
    ) -> Template:
        namespace["escape"] = output_escape
        return super()._from_namespace(environment, namespace, globals)


def install(env: Environment) -> None:
    env.template_class = OutputTemplate
    env.add_extension("jinja2.ext.i18n")
    env.install_gettext_callables(i18n.gettext, i18n.ngettext, newstyle=True)  # type: ignore[attr-defined]
    env.globals["_"] = template_gettext
    env.filters["num"] = fmt_num
    env.filters["day"] = fmt_date
    env.filters["site"] = localized_site
    env.filters["site_title"] = site_title
    env.filters["status_text"] = lambda status: i18n.gettext(STATUS_TEXT[status]) if status in STATUS_TEXT else status
    env.filters["person"] = person_name
    env.filters["who_text"] = lambda who: i18n.gettext(WHO_TEXT[who]) if who in WHO_TEXT else (who or "—")
    env.filters["t"] = lambda text: i18n.gettext(text) if text else text
    env.filters["phrase"] = phrases.render
    env.filters["machine"] = phrases.machine_text
    env.filters["refusal"] = phrases.refusal_html
    env.filters["notes"] = lambda c: phrases.render_all(c.notes, c.reason)
    env.globals["patient_url"] = patient_url


def patient_url(
    identifier: str, issuer: str | None = None, *, prefix: str = "/patients", suffix: str = "", **query: str
) -> str:
    """A patient's page (or, with `prefix`/`suffix`, another of its routes).

    The identifier is one path segment with every "/" escaped as %2F: the patient routes match
    the raw path (see `web.routes.patients.PatientRoute`), so "IPP/123" stays one identifier.
    A given issuer goes in the query even when empty: "" names the patient without an issuer,
    which an identifier alone does not when another issuer uses the same one (409).
    """
    url = f"{prefix}/{quote(identifier, safe='')}{suffix}"
    params = {**query, **({"issuer": issuer} if issuer is not None else {})}
    return f"{url}?{urlencode(params)}" if params else url
