"""The patient page's repeated table cells (a change, an LSC, the drug at an exam), written here
rather than as Jinja macros: a page calls them a few dozen times, and each macro call costs Jinja
an argument binding, a frame and a Markup of its output, which made them a large share of the
page's rendering (issue 13). They write exactly what those macros wrote: values escaped as Jinja
escapes them (markupsafe), translations as the templates' `_()` gives them.
"""

from __future__ import annotations

from markupsafe import Markup, escape

from web import i18n, phrases
from web.filters import fmt_date, fmt_num
from web.filters import template_text as _  # `_`: the messages are extracted from here (make messages)
from web.patient_view import Change, DrugAt, ExamRow


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
