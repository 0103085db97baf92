# ruff: noqa: E501  (MACROS below is the replaced template, verbatim)
"""Issue 13: the patient page's rendering made cheaper without changing a byte of it. The cells
written in Python (web.cells) against the Jinja macros they replace (kept here verbatim), the
values written by `output_escape` against markupsafe's escaping, and the page's route (a plain
Starlette route, one worker thread) still signed-in, role-checked, GET only and audited."""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import date
from itertools import product
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.templating import Jinja2Templates
from fastapi.testclient import TestClient
from markupsafe import Markup, escape
from sqlalchemy import func, select

from db.models import AuditEvent
from monitor.model import Phrase
from tests.web.seed import REPLACED, Seeded
from web import cells, filters, i18n
from web.patient_view import LSC_SOURCE_TEXT, Change, DrugAt, ExamRow
from web.queries.patient import ComparisonView

# web/templates/_change.html as it was before web.cells replaced it
MACROS = """{# One comparison as a cell: numbers only for an allowed comparison; a refusal says why. #}
{% macro change(ch, first=false) -%}
{%- if ch is none -%}{% if first %}<span class="muted">{{ _('baseline') }}</span>{% else %}—{% endif %}
{%- elif ch.refused -%}<span class="tag status-refused" title="{{ ch.comparison | notes }}">{{ ch.verdict | t }}</span>
{%- else -%}{% set c = ch.comparison %}
<span class="delta">{{ c.delta_g_cm2 | num(3, true) }}</span> <span class="pct">{{ c.percent_change | num(2, true) }} %</span>
{% if c.dissimilar %}<span class="tag status-warn" title="{{ c | notes }}">{{ _('dissimilar') }}</span>{% elif c.significance %}<span class="tag sig-{{ c.significance }}">{{ '▲ ' if c.significance == 'gain' else ('▼ ' if c.significance == 'loss' else '') }}{{ c.significance | t }}</span>{% endif %}
{% if c.status == 'ok_cross_calibrated' %}<span class="tag status-ok">{{ _('cross-calibrated') }}</span>{% endif %}
<br><span class="muted since">{{ _('since %(day)s', day=c.from_date | day) }}</span>
{% if ch.vendor_percent is not none %}<br><span class="vendor muted">{{ _('machine printed %(pct)s %%', pct=ch.vendor_percent | num(1, true)) }}{% if c.percent_change is not none and (ch.vendor_percent - c.percent_change) | abs >= 0.15 %} <span class="tag status-warn">{{ _('differs') }}</span>{% endif %}</span>{% endif %}
{%- endif -%}
{%- endmacro %}
{% macro lsc(row, lsc_text) -%}
{%- set c = row.lsc -%}
{%- if c is none -%}—{%- else -%}{{ c.lsc_g_cm2 | num }}{% if c.lsc_source %} <span class="lsc-source" data-source="{{ c.lsc_source }}" title="{{ lsc_text[c.lsc_source][1] | t if c.lsc_source in lsc_text else '' }}">({{ lsc_text[c.lsc_source][0] | t if c.lsc_source in lsc_text else c.lsc_source }})</span>{% endif %}{%- endif -%}
{%- endmacro %}
{# The drug in effect at an exam, in the user's language. #}
{% macro drug(d) -%}
{%- if d.agent is none -%}{{ _('glucocorticoid only') if d.glucocorticoid else _('none recorded') }}
{%- else -%}{{ d.agent }}{% if d.stopped %} ({{ _('stopped %(day)s', day=d.stopped | day) }}{% if d.still_acting %}, {{ _('still acting') }}{% endif %}){% endif %}{% if d.glucocorticoid %} + {{ _('glucocorticoid') }}{% endif %}
{%- endif -%}
{%- endmacro %}
"""


@pytest.fixture(scope="module")
def macros() -> Any:
    templates = Jinja2Templates(directory="web/templates")
    filters.install(templates.env)
    return templates.env.from_string(MACROS).module


def _comparison(**changes: Any) -> ComparisonView:
    base = ComparisonView(
        site="total_hip",
        side="left",
        from_exam="1",
        to_exam="2",
        from_date=date(2016, 3, 2),
        to_date=date(2018, 3, 2),
        from_device="HOLOGIC Discovery A (S/N 1)",
        to_device="HOLOGIC Discovery A (S/N 1)",
        reference="baseline",
        status="ok",
        delta_g_cm2=-0.0345,
        percent_change=-3.456,
        lsc_g_cm2=0.022,
        lsc_source="study",
        significance="loss",
        dissimilar=False,
        reason=None,
    )
    return replace(base, **changes)


REFUSAL = (Phrase("different_serials", ()),)
COMPARISONS = [
    _comparison(),
    _comparison(significance="gain", delta_g_cm2=0.04, percent_change=4.0),
    _comparison(significance="stable", delta_g_cm2=0.0, percent_change=-0.0),
    _comparison(significance=None, lsc_source=None, lsc_g_cm2=None),
    _comparison(status="ok_cross_calibrated", lsc_source="crosscal"),
    _comparison(dissimilar=True, reason="scan area differs by 12 % <&> \"quoted\" 'single'"),
    _comparison(status="rejected_cross_machine", reason="machine changed", notes=REFUSAL),
    _comparison(status="rejected_unknown_machine", reason="no serial <b>"),
    _comparison(lsc_source="a <custom> source"),
    _comparison(lsc_source="vendor", percent_change=None),
]
DRUGS = [
    DrugAt(None),
    DrugAt(None, glucocorticoid=True),
    DrugAt("Alendronate 70 mg <weekly>"),
    DrugAt("denosumab", stopped=date(2019, 1, 2), still_acting=True),
    DrugAt("risedronate", stopped=date(2017, 5, 6), glucocorticoid=True),
    DrugAt("zoledronic acid", glucocorticoid=True),
]


def _row(comparison: ComparisonView | None) -> ExamRow:
    change = Change(comparison, None) if comparison is not None else None
    return ExamRow("2", date(2018, 3, 2), "m", 0, "total_hip", 0.9, -1.0, None, change, DrugAt(None), False, False)


@pytest.mark.parametrize("locale", ["en", "en_US", "zh_CN"])
def test_the_python_cells_write_what_the_macros_wrote(macros: Any, locale: str) -> None:
    # in a context of its own: the language set here must not stay the test process's
    contextvars.copy_context().run(_cells_and_macros, macros, locale)


def _cells_and_macros(macros: Any, locale: str) -> None:
    i18n.activate(locale.split("_")[0] if locale == "en_US" else locale, locale)
    changes: list[Change | None] = [None]
    for comparison, vendor in product(COMPARISONS, (None, -3.4, -3.1, 2.0)):
        changes.append(Change(comparison, vendor))
    for ch, first in product(changes, (False, True)):
        assert str(cells.change(ch, first)) == str(macros.change(ch, first)), (ch, first)
    for comparison in [None, *COMPARISONS]:
        row = _row(comparison)
        assert str(cells.lsc(row, LSC_SOURCE_TEXT)) == str(macros.lsc(row, LSC_SOURCE_TEXT))
    for d in DRUGS:
        assert str(cells.drug(d)) == str(macros.drug(d))
    assert isinstance(cells.change(None), Markup) and isinstance(cells.drug(DRUGS[0]), Markup)


class Html:
    def __html__(self) -> str:
        return "<i>safe</i>"


@pytest.mark.parametrize(
    "value", ["plain", "", "<&>\"'", "a & b", Markup("<b>kept</b>"), Html(), 3, -0.0, 1.5, None, date(2020, 1, 2)]
)
def test_output_escape_writes_what_markupsafe_writes(value: object) -> None:
    assert filters.output_escape(value) == str(escape(value))


def test_the_templates_write_values_with_output_escape() -> None:
    templates = Jinja2Templates(directory="web/templates")
    filters.install(templates.env)
    template = templates.env.from_string("{{ a }}|{{ b }}|{% set x %}<{{ a }}>{% endset %}{{ x }}")
    assert template.root_render_func.__globals__["escape"] is filters.output_escape  # type: ignore[attr-defined]
    assert template.render(a="<&\"'>", b=Markup("<b>")) == "&lt;&amp;&#34;&#39;&gt;|<b>|<&lt;&amp;&#34;&#39;&gt;>"


def _views(seeded: Seeded) -> int:
    with seeded.factory() as session:
        return int(session.scalar(select(func.count()).where(AuditEvent.action == "patient_viewed")) or 0)


@pytest.fixture
def clin(login: Callable[[str], TestClient]) -> Iterator[TestClient]:
    yield login("clin")


def test_the_patient_page_is_signed_in_audited_and_get_only(
    app: FastAPI, anon: TestClient, clin: TestClient, seeded: Seeded
) -> None:
    before = _views(seeded)
    assert anon.get(f"/patients/{REPLACED}").headers["location"] == f"/login?next=/patients/{REPLACED}"
    page = clin.get(f"/patients/{REPLACED}?notice=Saved")
    assert page.status_code == 200 and 'class="point refused"' in page.text and "Saved" in page.text
    assert _views(seeded) == before + 1
    assert clin.head(f"/patients/{REPLACED}").status_code == 405, "a HEAD would audit a view nobody saw"
    assert clin.post(f"/patients/{REPLACED}").status_code == 405
    missing = clin.get("/patients/no-such-patient")
    assert missing.status_code == 404 and "no such patient" in missing.text
    assert _views(seeded) == before + 1
