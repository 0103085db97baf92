"""The patient page's repeated table cells (a change, an LSC, the drug at an exam), written here
rather than as Jinja macros: a page calls them a few dozen times, and each macro call costs Jinja
an argument binding, a frame and a Markup of its output, which made them a large share of the
page's rendering (issue 13). They write exactly what those macros wrote: values escaped as Jinja
escapes them (markupsafe), translations as the templates' `_()` gives them.
"""

from __future__ import annotations

from markupsafe import Markup, escape

from web import i18n, phrases
from web.filters import STATUS_TEXT, fmt_date, fmt_num, output_escape
from web.filters import template_text as _  # `_`: the messages are extracted from here (make messages)
from web.patient_view import Change, DrugAt, ExamRow, SiteTable
from web.phrases import localized_site
from web.queries.patient import ComparisonView


def _t(text: str | None) -> str | None:
    """The templates' `| t` filter."""
    return i18n.gettext(text) if text else text


def change(ch: Change | None, first: bool = False) -> Markup:
    """One comparison as a cell: numbers only for an allowed comparison; a refusal says why."""
    if ch is None:
        return Markup(f'<span class="muted">{_("baseline")}</span>' if first else "—")
    c = ch.comparison
    if c.refused:
        notes = escape(phrases.render_all(c.notes, c.reason))
        return Markup(f'<span class="tag status-refused" title="{notes}">{escape(_t(ch.verdict))}</span>')
    parts = [
        f'\n<span class="delta">{escape(fmt_num(c.delta_g_cm2, 3, True))}</span>'
        f' <span class="pct">{escape(fmt_num(c.percent_change, 2, True))} %</span>\n'
    ]
    if c.dissimilar:
        notes = escape(phrases.render_all(c.notes, c.reason))
        parts.append(f'<span class="tag status-warn" title="{notes}">{_("dissimilar")}</span>')
    elif c.significance:
        arrow = "▲ " if c.significance == "gain" else ("▼ " if c.significance == "loss" else "")
        parts.append(f'<span class="tag sig-{escape(c.significance)}">{arrow}{escape(_t(c.significance))}</span>')
    parts.append("\n")
    if c.status == "ok_cross_calibrated":
        parts.append(f'<span class="tag status-ok">{_("cross-calibrated")}</span>')
    parts.append(f'\n<br><span class="muted since">{_("since %(day)s", day=fmt_date(c.from_date))}</span>\n')
    if ch.vendor_percent is not None:
        printed = _("machine printed %(pct)s %%", pct=fmt_num(ch.vendor_percent, 1, True))
        parts.append(f'<br><span class="vendor muted">{printed}')
        if c.percent_change is not None and abs(ch.vendor_percent - c.percent_change) >= 0.15:
            parts.append(f' <span class="tag status-warn">{_("differs")}</span>')
        parts.append("</span>")
    return Markup("".join(parts))


def lsc(row: ExamRow, lsc_text: dict[str, tuple[str, str]]) -> Markup:
    """The LSC a row's change was judged against, and where it came from."""
    c = row.lsc
    if c is None:
        return Markup("—")
    out = str(escape(fmt_num(c.lsc_g_cm2)))
    if c.lsc_source:
        known = lsc_text.get(c.lsc_source)
        title = escape(_t(known[1])) if known else ""
        name = escape(_t(known[0]) if known else c.lsc_source)
        out += f' <span class="lsc-source" data-source="{escape(c.lsc_source)}" title="{title}">({name})</span>'
    return Markup(out)


def drug(d: DrugAt) -> Markup:
    """The drug in effect at an exam, in the user's language."""
    if d.agent is None:
        return _("glucocorticoid only") if d.glucocorticoid else _("none recorded")
    out = str(escape(d.agent))
    if d.stopped:
        out += f" ({_('stopped %(day)s', day=fmt_date(d.stopped))}"
        if d.still_acting:
            out += f", {_('still acting')}"
        out += ")"
    if d.glucocorticoid:
        out += f" + {_('glucocorticoid')}"
    return Markup(out)


def _e(value: object) -> str:
    """`{{ value }}` as the templates write it (autoescaped)."""
    return output_escape(value)


def exam_rows(table: SiteTable, ocr_exams: set[str], lsc_text: dict[str, tuple[str, str]]) -> Markup:
    """A site table's rows, one per exam, as the template's loop wrote them (the same text,
    whitespace included): a patient followed for years has a hundred such rows, and Jinja's
    attribute lookups, filter and function calls for each cell were the largest share of the
    page's rendering (issue 13)."""
    l_date_machine, l_bmd, l_sides = _("Date · machine"), _("BMD g/cm²"), _("Left / right")
    l_previous, l_baseline, l_lsc_unit, l_drug = _("vs previous"), _("vs baseline"), _("LSC g/cm²"), _("Drug")
    mean, spine, site = table.side == "mean", table.family == "spine", table.site
    out: list[str] = []
    for r in table.rows:
        first = r.first
        out.append(
            f'\n      <tr data-exam="{_e(r.exam_id)}" class="{"new-baseline" if r.new_baseline else ""}">\n'
            f'        <td data-label="{l_date_machine}">{_e(fmt_date(r.date))}<br><span class="muted machine">'
            f"{_e(phrases.machine_text(r.machine))}</span>\n          "
        )
        if r.exam_id in ocr_exams:
            out.append(
                f'<br><span class="tag source-ocr" title="{_("Read from a scan by OCR and confirmed by a person")}">'
                f"{_('source: ocr')}</span>"
            )
        out.append("\n          ")
        if first:
            out.append(f'<br><span class="tag sig-stable">{_("baseline")}</span>')
        out.append("\n          ")
        if r.new_baseline:
            out.append(f'<br><span class="tag status-refused">{_("new baseline (machine changed)")}</span>')
        out.append("\n          ")
        dissimilar = r.dissimilar_reason
        if dissimilar:
            notes = _e(phrases.render_all(dissimilar.notes, dissimilar.reason))
            out.append(f'<br><span class="tag status-warn">{_("dissimilar")}</span> <span class="note">{notes}</span>')
        out.append("\n          ")
        if spine and r.site != site:
            out.append(f'<br><span class="muted">{_("analysed set %(site)s", site=r.site)}</span>')
        out.append(f'</td>\n        <td data-label="{l_bmd}" class="num">{_e(fmt_num(r.bmd))}')
        if r.t_score is not None:
            out.append(f'<br><span class="muted">T {_e(fmt_num(r.t_score, 1))}</span>')
        out.append("</td>\n        ")
        if mean:
            out.append(f'<td data-label="{l_sides}" class="sides">')
            for sv in r.sides:
                out.append(f'<span class="side">{"L" if sv.side == "left" else "R"} {_e(fmt_num(sv.bmd))}')
                previous = sv.previous
                if previous and not previous.refused and previous.comparison.percent_change is not None:
                    c = previous.comparison
                    out.append(f' <span class="muted">({_e(fmt_num(c.percent_change, 2, True))} %')
                    if c.significance in ("gain", "loss"):
                        out.append(f" {_e(_t(c.significance))}")
                    out.append(")</span>")
                out.append("</span><br>")
            if not r.sides:
                out.append("—")
            out.append("</td>")
        out.append(
            f'\n        <td data-label="{l_previous}" class="chg">{change(r.previous, first)}</td>\n'
            f'        <td data-label="{l_baseline}" class="chg">{change(r.baseline, first)}</td>\n'
            f'        <td data-label="{l_lsc_unit}" class="num">{lsc(r, lsc_text)}</td>\n'
            f'        <td data-label="{l_drug}">{drug(r.drug)}</td>\n      </tr>\n      '
        )
    return Markup("".join(out))


def comparison_rows(comparisons: list[ComparisonView], lsc_text: dict[str, tuple[str, str]]) -> Markup:
    """The "every comparison" table's rows as the template's loop wrote them (see `exam_rows`);
    empty for none (the template then writes its "no comparisons yet" row)."""
    l_site, l_against, l_from_to, l_status = _("Site"), _("Against"), _("From → to"), _("Status")
    l_delta, l_change, l_lsc = _("Δ g/cm²"), _("Change"), _("LSC")
    l_significance, l_reason = _("Significance"), _("Reason")
    out: list[str] = []
    for c in comparisons:
        refused = c.refused
        out.append(
            f'\n    <tr class="{"refused" if refused else ""}">\n'
            f'      <td data-label="{l_site}">{_e(localized_site(c.site, c.side))}</td>\n'
            f'      <td data-label="{l_against}">{_e(_t(c.reference))}</td>\n'
            f'      <td data-label="{l_from_to}">{_e(fmt_date(c.from_date))} → {_e(fmt_date(c.to_date))}'
        )
        if c.from_device != c.to_device:
            out.append(
                f'<br><span class="muted">{_e(phrases.machine_text(c.from_device))} → '
                f"{_e(phrases.machine_text(c.to_device))}</span>"
            )
        status = i18n.gettext(STATUS_TEXT[c.status]) if c.status in STATUS_TEXT else c.status
        delta = "—" if refused else _e(fmt_num(c.delta_g_cm2, 3, True))
        pct = _e(fmt_num(c.percent_change, 2, True) + " %") if c.percent_change is not None and not refused else "—"
        tone = "status-refused" if refused else "status-ok"
        out.append(
            f'</td>\n      <td data-label="{l_status}"><span class="tag {tone}">{_e(status)}</span></td>\n'
            f'      <td data-label="{l_delta}" class="num">{delta}</td>\n'
            f'      <td data-label="{l_change}" class="num">{pct}</td>\n'
            f'      <td data-label="{l_lsc}" class="num">'
        )
        if not refused:
            out.append(_e(fmt_num(c.lsc_g_cm2)))
            source = c.lsc_source
            if source:
                name = _t(lsc_text[source][0]) if source in lsc_text else source
                out.append(f' <span class="lsc-source" data-source="{_e(source)}">({_e(name)})</span>')
        else:
            out.append("—")
        out.append(f'</td>\n      <td data-label="{l_significance}">')
        if c.significance:
            out.append(f'<span class="tag sig-{_e(c.significance)}">{_e(_t(c.significance))}</span>')
        else:
            out.append("—")
        out.append(f'</td>\n      <td data-label="{l_reason}" class="note">')
        if c.dissimilar:
            out.append(f'<span class="tag status-warn">{_("dissimilar")}</span> ')
        out.append(f"{_e(phrases.render_all(c.notes, c.reason))}</td>\n    </tr>\n    ")
    return Markup("".join(out))
