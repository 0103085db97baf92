# ruff: noqa: E501  (EXAM_ROWS and COMPARISON_ROWS below are the replaced template loops, verbatim)
"""Issue 13: the patient page's site tables and comparisons table, written in Python
(`web.cells.exam_rows`, `web.cells.comparison_rows`), write what the template's loops wrote,
whitespace included. The loops are kept here verbatim and rendered beside the functions for rows
of every kind (first exam, new baseline, dissimilar, another analysed set, an OCR exam, both
hips with and without their sides, text that needs escaping), in English and Chinese."""

from __future__ import annotations

import contextvars
from dataclasses import replace
from datetime import date
from itertools import product
from typing import Any

import pytest
from fastapi.templating import Jinja2Templates

from monitor.model import Phrase
from tests.web.test_page_rendering import COMPARISONS, DRUGS
from web import cells, filters, i18n
from web.patient_view import LSC_SOURCE_TEXT, Change, ExamRow, SideValue, SiteTable

LABELS = """{%- set l_site = _('Site') %}
{%- set l_exam = _('Exam') %}
{%- set l_bmd = _('BMD g/cm²') %}
{%- set l_previous = _('vs previous') %}
{%- set l_baseline = _('vs baseline') %}
{%- set l_lsc_unit = _('LSC g/cm²') %}
{%- set l_drug_at = _('Drug at exam') %}
{%- set l_date_machine = _('Date · machine') %}
{%- set l_sides = _('Left / right') %}
{%- set l_drug = _('Drug') %}
{%- set l_against = _('Against') %}
{%- set l_from_to = _('From → to') %}
{%- set l_status = _('Status') %}
{%- set l_delta = _('Δ g/cm²') %}
{%- set l_change = _('Change') %}
{%- set l_lsc = _('LSC') %}
{%- set l_significance = _('Significance') %}
{%- set l_reason = _('Reason') %}
"""
EXAM_ROWS = """      <tbody>
      {% for r in t.rows %}
      <tr data-exam="{{ r.exam_id }}" class="{{ 'new-baseline' if r.new_baseline else '' }}">
        <td data-label="{{ l_date_machine }}">{{ r.date | day }}<br><span class="muted machine">{{ r.machine | machine }}</span>
          {% if r.exam_id in ocr_exams %}<br><span class="tag source-ocr" title="{{ _('Read from a scan by OCR and confirmed by a person') }}">{{ _('source: ocr') }}</span>{% endif %}
          {% if r.first %}<br><span class="tag sig-stable">{{ _('baseline') }}</span>{% endif %}
          {% if r.new_baseline %}<br><span class="tag status-refused">{{ _('new baseline (machine changed)') }}</span>{% endif %}
          {% if r.dissimilar_reason %}<br><span class="tag status-warn">{{ _('dissimilar') }}</span> <span class="note">{{ r.dissimilar_reason | notes }}</span>{% endif %}
          {% if t.family == 'spine' and r.site != t.site %}<br><span class="muted">{{ _('analysed set %(site)s', site=r.site) }}</span>{% endif %}</td>
        <td data-label="{{ l_bmd }}" class="num">{{ r.bmd | num }}{% if r.t_score is not none %}<br><span class="muted">T {{ r.t_score | num(1) }}</span>{% endif %}</td>
        {% if t.side == 'mean' %}<td data-label="{{ l_sides }}" class="sides">{% for sv in r.sides %}<span class="side">{{ 'L' if sv.side == 'left' else 'R' }} {{ sv.bmd | num }}{% if sv.previous and not sv.previous.refused and sv.previous.comparison.percent_change is not none %} <span class="muted">({{ sv.previous.comparison.percent_change | num(2, true) }} %{% if sv.previous.comparison.significance in ('gain', 'loss') %} {{ sv.previous.comparison.significance | t }}{% endif %})</span>{% endif %}</span><br>{% else %}—{% endfor %}</td>{% endif %}
        <td data-label="{{ l_previous }}" class="chg">{{ change(r.previous, r.first) }}</td>
        <td data-label="{{ l_baseline }}" class="chg">{{ change(r.baseline, r.first) }}</td>
        <td data-label="{{ l_lsc_unit }}" class="num">{{ lsc(r, lsc_text) }}</td>
        <td data-label="{{ l_drug }}">{{ drug(r.drug) }}</td>
      </tr>
      {% endfor %}
      </tbody>"""
COMPARISON_ROWS = """    <tbody>
    {% for c in comparisons %}
    <tr class="{{ 'refused' if c.refused else '' }}">
      <td data-label="{{ l_site }}">{{ c.site | site(c.side) }}</td>
      <td data-label="{{ l_against }}">{{ c.reference | t }}</td>
      <td data-label="{{ l_from_to }}">{{ c.from_date | day }} → {{ c.to_date | day }}{% if c.from_device != c.to_device %}<br><span class="muted">{{ c.from_device | machine }} → {{ c.to_device | machine }}</span>{% endif %}</td>
      <td data-label="{{ l_status }}"><span class="tag {{ 'status-refused' if c.refused else 'status-ok' }}">{{ c.status | status_text }}</span></td>
      <td data-label="{{ l_delta }}" class="num">{{ c.delta_g_cm2 | num(3, true) if not c.refused else '—' }}</td>
      <td data-label="{{ l_change }}" class="num">{{ (c.percent_change | num(2, true)) ~ ' %' if c.percent_change is not none and not c.refused else '—' }}</td>
      <td data-label="{{ l_lsc }}" class="num">{% if not c.refused %}{{ c.lsc_g_cm2 | num }}{% if c.lsc_source %} <span class="lsc-source" data-source="{{ c.lsc_source }}">({{ lsc_text[c.lsc_source][0] | t if c.lsc_source in lsc_text else c.lsc_source }})</span>{% endif %}{% else %}—{% endif %}</td>
      <td data-label="{{ l_significance }}">{% if c.significance %}<span class="tag sig-{{ c.significance }}">{{ c.significance | t }}</span>{% else %}—{% endif %}</td>
      <td data-label="{{ l_reason }}" class="note">{% if c.dissimilar %}<span class="tag status-warn">{{ _('dissimilar') }}</span> {% endif %}{{ c | notes }}</td>
    </tr>
    {% else %}
    <tr><td colspan="9" class="empty">{{ _('No comparisons yet (one exam per site so far).') }}</td></tr>
    {% endfor %}
    </tbody>"""


@pytest.fixture(scope="module")
def env() -> Any:
    templates = Jinja2Templates(directory="web/templates")
    filters.install(templates.env)
    return templates.env


def _rows() -> list[ExamRow]:
    rows = []
    changes: list[Change | None] = [None, *(Change(c, v) for c, v in product(COMPARISONS, (None, -3.4)))]
    for k, (previous, drug) in enumerate(zip(changes, DRUGS * 5, strict=False)):
        baseline = changes[-1 - k]
        sides: tuple[SideValue, ...] = ()
        if k % 3 == 1:
            sides = (SideValue("left", 0.8123, previous), SideValue("right", 0.7, baseline))
        rows.append(
            ExamRow(
                exam_id=str(100 + k) if k % 5 else f"<{k}>&",
                date=date(2004, 1, 1).replace(year=2004 + k % 15),
                machine="HOLOGIC Horizon W (S/N 200457)" if k % 4 else "GE <Lunar> & co (no serial)",
                machine_index=k % 3,
                site="L1-L4" if k % 6 else "L2-L4",
                bmd=0.8 + k / 1000,
                t_score=None if k % 7 == 3 else -1.5 + k / 10,
                previous=previous,
                baseline=baseline,
                drug=drug,
                first=k == 0,
                new_baseline=k % 8 == 5,
                sides=sides,
            )
        )
    return rows


@pytest.mark.parametrize("locale", ["en", "en_US", "zh_CN"])
def test_the_tables_written_in_python_are_the_template_loops(env: Any, locale: str) -> None:
    contextvars.copy_context().run(_compare, env, locale)


def _compare(env: Any, locale: str) -> None:
    i18n.activate(locale.split("_")[0] if locale == "en_US" else locale, locale)
    loops = env.from_string(LABELS + EXAM_ROWS + "|" + COMPARISON_ROWS)
    rows = _rows()
    tables = [
        SiteTable("spine", "L1-L4", None, "Lumbar spine L1-L4", tuple(rows)),
        SiteTable("total_hip", "total_hip", "mean", "Total hip", tuple(rows)),
        SiteTable("femoral_neck", "femoral_neck", "left", "Femoral neck", tuple(rows[:3])),
    ]
    notes = (Phrase("different_serials", ()),)
    comparisons = [*COMPARISONS, *(replace(c, side="mean", reference="previous", notes=notes) for c in COMPARISONS)]
    comparisons.append(
        replace(COMPARISONS[0], from_device="HOLOGIC <Discovery> A (S/N 1)", to_device="x & y (no serial)")
    )
    for table, ocr, compared in product(tables, (set(), {"101", "<0>&"}), (comparisons, [])):
        context = {"t": table, "ocr_exams": ocr, "comparisons": compared, "lsc_text": LSC_SOURCE_TEXT}
        context.update(change=cells.change, lsc=cells.lsc, drug=cells.drug)
        expected = loops.render(context)
        written = env.from_string(
            "      <tbody>\n      {{ exam_rows(t, ocr_exams, lsc_text) }}\n      </tbody>|"
            "    <tbody>\n    {% if comparisons %}{{ comparison_rows(comparisons, lsc_text) }}{% else %}\n"
            '    <tr><td colspan="9" class="empty">{{ _(\'No comparisons yet (one exam per site so far).\') }}</td></tr>\n'
            "    {% endif %}\n    </tbody>"
        ).render({**context, "exam_rows": cells.exam_rows, "comparison_rows": cells.comparison_rows})
        assert written == expected.lstrip("\n"), (table.site, table.side, ocr, len(compared))
