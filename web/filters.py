"""Jinja filters: how numbers, dates and statuses read on screen (always words beside colours)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any
from urllib.parse import quote, urlencode

from jinja2 import Environment

from web.queries.patient import site_label

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
    if value is None:
        return "—"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def fmt_date(value: date | datetime | None) -> str:
    if value is None:
        return "—"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M UTC")
    return value.isoformat()


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


def install(env: Environment) -> None:
    env.filters["num"] = fmt_num
    env.filters["day"] = fmt_date
    env.filters["site"] = lambda site, side=None: site_label(site, side)
    env.filters["status_text"] = lambda status: STATUS_TEXT.get(status, status)
    env.filters["person"] = person_name
    env.filters["who_text"] = lambda who: WHO_TEXT.get(who, who or "—")
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
