"""Jinja filters: how numbers, dates and statuses read on screen (always words beside colours)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from jinja2 import Environment

from web.queries import site_label

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


def install(env: Environment) -> None:
    env.filters["num"] = fmt_num
    env.filters["day"] = fmt_date
    env.filters["site"] = lambda site, side=None: site_label(site, side)
    env.filters["status_text"] = lambda status: STATUS_TEXT.get(status, status)
    env.filters["who_text"] = lambda who: WHO_TEXT.get(who, who or "—")
    env.globals["patient_url"] = patient_url


def patient_url(identifier: str, issuer: str | None = None) -> str:
    from urllib.parse import quote, urlencode

    url = f"/patients/{quote(identifier, safe='')}"
    return f"{url}?{urlencode({'issuer': issuer})}" if issuer else url
