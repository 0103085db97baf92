"""The printable patient report (PDF, A4 or US Letter) for the paper chart, as DXA software prints it:
who the patient is, when the next scan is due and why, the alerts, then per monitoring site a
trend chart and the table of every exam (machine, BMD, change vs previous and vs baseline, the
LSC, the drug at the exam), and the therapies.

It is drawn from the same view models as the patient page (`web.patient_view`, `web.charts`),
never recomputed, in the request's language (`web.i18n`, `web.phrases`). Chinese needs a CJK
font: reportlab's built-in CID font STSong-Light (Adobe's Asian font pack metrics; the PDF
viewer supplies the glyphs), so no font file ships with the project.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from io import BytesIO
from typing import Any
from xml.sax.saxutils import escape

from reportlab.graphics.shapes import Circle, Drawing, Line, PolyLine, Rect, String
from reportlab.lib import colors
from reportlab.lib.pagesizes import A4, LETTER
from reportlab.lib.styles import ParagraphStyle
from reportlab.lib.units import mm
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.cidfonts import UnicodeCIDFont
from reportlab.platypus import KeepTogether, Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

from monitor.config import MonitoringConfig
from web import charts, i18n, patient_view, phrases
from web.alerts import AlertView
from web.filters import person_name
from web.queries.patient import PatientDetail

PAPERS = {"a4": A4, "letter": LETTER}
CJK_FONT = "STSong-Light"
LATIN_FONT, LATIN_BOLD = "Helvetica", "Helvetica-Bold"
_WHO = {
    "normal": "Normal",
    "low_bone_mass": "Low bone mass",
    "osteoporosis": "Osteoporosis",
    "z_score_only": "Under 50: Z-score only",
}


def _cjk_font() -> str:
    if CJK_FONT not in pdfmetrics.getRegisteredFontNames():
        pdfmetrics.registerFont(UnicodeCIDFont(CJK_FONT))
    return CJK_FONT


def _needs_cjk(text: str) -> bool:
    return any(ord(ch) >= 0x2E80 for ch in text)


class _Styles:
    """Paragraph styles in a Latin font, switched to the CJK font for text that needs it."""

    def __init__(self, chinese: bool) -> None:
        self.chinese = chinese
        self.cjk = _cjk_font()
        base = self.cjk if chinese else LATIN_FONT
        bold = self.cjk if chinese else LATIN_BOLD
        self.body = ParagraphStyle("body", fontName=base, fontSize=8.5, leading=11)
        self.small = ParagraphStyle(
            "small", fontName=base, fontSize=7.5, leading=9.5, textColor=colors.HexColor("#444444")
        )
        self.title = ParagraphStyle("title", fontName=bold, fontSize=15, leading=19, spaceAfter=4)
        self.h2 = ParagraphStyle("h2", fontName=bold, fontSize=11, leading=14, spaceBefore=8, spaceAfter=3)
        self.alert = ParagraphStyle("alert", parent=self.body, textColor=colors.HexColor("#8B0000"))

    def p(self, text: str, style: ParagraphStyle | None = None) -> Paragraph:
        chosen = style or self.body
        if _needs_cjk(text) and chosen.fontName != self.cjk:
            chosen = ParagraphStyle(chosen.name + "-cjk", parent=chosen, fontName=self.cjk)
        markup = escape(text).replace("\n", "<br/>")
        if chosen.fontName == self.cjk:
            # not in the CID font's Latin range: ² as a superscript, the middle dot as a comma
            markup = markup.replace("²", "<super>2</super>").replace(" · ", "，").replace("·", "，")
        return Paragraph(markup, chosen)


def _change_text(change: patient_view.Change | None, first: bool) -> str:
    if change is None:
        return i18n.gettext("baseline") if first else "—"
    c = change.comparison
    if change.refused or c.dissimilar:
        return i18n.gettext(change.verdict)
    text = f"{i18n.number(c.delta_g_cm2, 3, signed=True)} ({i18n.number(c.percent_change, 2, signed=True)} %)"
    if c.significance:
        marks = {"gain": "▲ ", "loss": "▼ "}
        text += f"\n{marks.get(c.significance, '')}{i18n.gettext(c.significance)}"
    if c.status == "ok_cross_calibrated":
        text += "\n" + i18n.gettext("cross-calibrated")
    return text


def _drug_text(drug: patient_view.DrugAt) -> str:
    if drug.agent is None:
        return i18n.gettext("glucocorticoid only") if drug.glucocorticoid else i18n.gettext("none recorded")
    text = drug.agent
    if drug.stopped:
        text += " (" + i18n.gettext("stopped %(day)s", day=i18n.day(drug.stopped))
        text += (", " + i18n.gettext("still acting") if drug.still_acting else "") + ")"
    if drug.glucocorticoid:
        text += " + " + i18n.gettext("glucocorticoid")
    return text


def _lsc_text(row: patient_view.ExamRow) -> str:
    c = row.lsc
    if c is None or c.lsc_g_cm2 is None:
        return "—"
    source = patient_view.LSC_SOURCE_TEXT.get(c.lsc_source or "")
    return i18n.number(c.lsc_g_cm2) + (f"\n({i18n.gettext(source[0])})" if source else "")


_COLOURS = [colors.HexColor(c) for c in charts.MACHINE_COLOURS]


def _chart(chart: charts.Chart, span: tuple[date, date] | None, width: float, font: str) -> Drawing:
    """The site's BMD over time: one line per machine segment (never joined across machines),
    the LSC band around each segment's baseline, ▲/▼ beside changes beyond it."""
    height = 46 * mm
    left, right, top, bottom = 14 * mm, 3 * mm, 3 * mm, 7 * mm
    drawing = Drawing(width, height)
    points = list(chart.points)
    if not points:
        return drawing
    bands = []
    for seg in sorted({p.segment for p in points}):
        members = [p for p in points if p.segment == seg]
        lsc = next((p.baseline.lsc_g_cm2 for p in members[1:] if p.baseline and not p.baseline.refused), None)
        if lsc:
            bands.append((seg, members[0].bmd, lsc))
    values = [p.bmd for p in points] + [b + s * lsc for _, b, lsc in bands for s in (-1, 1)]
    lo_v, hi_v = min(values), max(values)
    pad = max((hi_v - lo_v) * 0.15, 0.02)
    lo_v, hi_v = lo_v - pad, hi_v + pad
    first, last = span or (min(p.date for p in points), max(p.date for p in points))
    d0, d1 = float(first.toordinal()), float(last.toordinal())
    dpad = max((d1 - d0) * 0.04, 60)
    d0, d1 = d0 - dpad, d1 + dpad

    def x(day: date) -> float:
        return float(left + (day.toordinal() - d0) / (d1 - d0) * (width - left - right))

    def y(value: float) -> float:
        return float(bottom + (value - lo_v) / (hi_v - lo_v) * (height - top - bottom))

    grey = colors.HexColor("#BBBBBB")
    for i in range(5):
        v = lo_v + (hi_v - lo_v) * i / 4
        drawing.add(Line(left, y(v), width - right, y(v), strokeColor=grey, strokeWidth=0.3))
        drawing.add(String(left - 2, y(v) - 2.5, i18n.number(v), fontName=font, fontSize=6, textAnchor="end"))
    for year in range(date.fromordinal(int(d0)).year + 1, date.fromordinal(int(d1)).year + 1):
        tx = x(date(year, 1, 1))
        drawing.add(Line(tx, bottom, tx, height - top, strokeColor=grey, strokeWidth=0.3))
        drawing.add(String(tx, 1.5 * mm, str(year), fontName=font, fontSize=6, textAnchor="middle"))
    for seg, base, lsc in bands:
        days = [p.date for p in points if p.segment == seg]
        x0, x1 = x(min(days)) - 4, x(max(days)) + 4
        drawing.add(
            Rect(
                x0,
                y(base - lsc),
                x1 - x0,
                y(base + lsc) - y(base - lsc),
                fillColor=colors.HexColor("#E8F0F8"),
                strokeColor=None,
            )
        )
    for seg in sorted({p.segment for p in points}):
        members = [p for p in points if p.segment == seg]
        colour = _COLOURS[members[0].machine_index % len(_COLOURS)]
        if len(members) > 1:
            coords: list[float] = []
            for p in members:
                coords.extend((x(p.date), y(p.bmd)))
            drawing.add(PolyLine(coords, strokeColor=colour, strokeWidth=1.2))
    for p in points:
        colour = _COLOURS[p.machine_index % len(_COLOURS)]
        refused = bool(p.baseline and p.baseline.refused)
        drawing.add(
            Circle(
                x(p.date),
                y(p.bmd),
                2.2,
                fillColor=colors.white if refused else colour,
                strokeColor=colour,
                strokeWidth=1,
            )
        )
        if p.significance in ("gain", "loss"):
            glyph, dy = ("▲", 3.5) if p.significance == "gain" else ("▼", -8)
            drawing.add(String(x(p.date), y(p.bmd) + dy, glyph, fontName=_cjk_font(), fontSize=6, textAnchor="middle"))
    return drawing


def _site_table(table: patient_view.SiteTable, styles: _Styles, width: float) -> Table:
    header = [
        i18n.gettext("Date · machine"),
        i18n.gettext("BMD g/cm²"),
        i18n.gettext("vs previous"),
        i18n.gettext("vs baseline"),
        i18n.gettext("LSC g/cm²"),
        i18n.gettext("Drug at exam"),
    ]
    rows: list[list[Any]] = [[styles.p(h, styles.small) for h in header]]
    for r in table.rows:
        when = f"{i18n.day(r.date)}\n{phrases.machine_text(r.machine)}"
        if r.new_baseline:
            when += "\n" + i18n.gettext("new baseline (machine changed)")
        bmd = i18n.number(r.bmd)
        if r.t_score is not None:
            bmd += f"\nT {i18n.number(r.t_score, 1)}"
        if r.sides:
            bmd += "\n" + " ".join(
                f"{i18n.gettext('left') if s.side == 'left' else i18n.gettext('right')} {i18n.number(s.bmd)}"
                for s in r.sides
            )
        rows.append(
            [
                styles.p(when, styles.small),
                styles.p(bmd),
                styles.p(_change_text(r.previous, r.first)),
                styles.p(_change_text(r.baseline, r.first)),
                styles.p(_lsc_text(r), styles.small),
                styles.p(_drug_text(r.drug), styles.small),
            ]
        )
    fractions = (0.24, 0.13, 0.17, 0.17, 0.13, 0.16)
    out = Table(rows, colWidths=[width * f for f in fractions], repeatRows=1)
    out.setStyle(
        TableStyle(
            [
                ("GRID", (0, 0), (-1, -1), 0.3, colors.HexColor("#999999")),
                ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#EEEEEE")),
                ("VALIGN", (0, 0), (-1, -1), "TOP"),
                ("LEFTPADDING", (0, 0), (-1, -1), 2),
                ("RIGHTPADDING", (0, 0), (-1, -1), 2),
            ]
        )
    )
    return out


def render_report(
    detail: PatientDetail,
    alerts: Sequence[AlertView],
    config: MonitoringConfig,
    today: date,
    paper: str,
) -> bytes:
    """The report as PDF bytes, in the active language (`web.i18n.activate`)."""
    chinese = i18n.current() == "zh_CN"
    styles = _Styles(chinese)
    font = styles.cjk if chinese else LATIN_FONT
    pagesize = PAPERS[paper]
    buf = BytesIO()
    margin = 14 * mm
    doc = SimpleDocTemplate(
        buf,
        pagesize=pagesize,
        leftMargin=margin,
        rightMargin=margin,
        topMargin=margin,
        bottomMargin=margin + 4 * mm,
        title=i18n.gettext("Bone densitometry (DXA) follow-up report"),
        author=i18n.gettext("DXA monitor"),
    )
    width = pagesize[0] - 2 * margin
    story: list[Any] = [styles.p(i18n.gettext("Bone densitometry (DXA) follow-up report"), styles.title)]
    who = [i18n.gettext("Patient %(id)s", id=detail.patient_id)]
    who.append(person_name(detail.name) if detail.name else i18n.gettext("No name on file"))
    if detail.birth_date:
        who.append(i18n.gettext("born %(day)s", day=i18n.day(detail.birth_date)))
    if detail.sex:
        who.append(i18n.gettext("sex %(sex)s", sex=detail.sex))
    nxt = detail.next_scan
    if nxt and nxt.who_category in _WHO:
        who.append(i18n.gettext("WHO category") + " " + i18n.gettext(_WHO[nxt.who_category]))
    story.append(styles.p(" · ".join(who)))
    story.append(styles.p(i18n.gettext("Printed %(day)s", day=i18n.day(today)), styles.small))

    story.append(styles.p(i18n.gettext("Next scan"), styles.h2))
    if nxt:
        due = i18n.day(nxt.due) if nxt.due else i18n.gettext("no date (see alerts)")
        line = i18n.gettext("Due:") + " " + due
        if nxt.due and nxt.due < today:
            line += " · " + i18n.gettext("Overdue")
        story.append(styles.p(line))
        story.append(styles.p(i18n.gettext(nxt.reason) if nxt.reason else ""))
    else:
        story.append(styles.p(i18n.gettext("Not evaluated yet.")))
    for alert in alerts:
        mark = i18n.gettext("Alert") if alert.state == "open" else i18n.gettext("Acknowledged")
        story.append(styles.p(f"{mark}: {alert.text}", styles.alert))
        if alert.meaning:
            story.append(styles.p(i18n.gettext("Why it matters:") + " " + i18n.gettext(alert.meaning), styles.small))

    tables = patient_view.site_tables(detail, config)
    span = charts.time_span(detail)
    drawn = {
        c.key: c for c in charts.build_charts(detail, keys=[(t.site, t.side) for t in tables], span=span, draw=False)
    }
    story.append(styles.p(i18n.gettext("Bone density by site"), styles.h2))
    if not tables:
        story.append(styles.p(i18n.gettext("No monitoring-site measurements yet.")))
    for t in tables:
        block: list[Any] = [
            styles.p(
                phrases.localized_site(t.site, t.side)
                if t.family != "spine"
                else i18n.gettext("Lumbar spine") + " " + t.site,
                styles.h2,
            )
        ]
        chart = drawn.get(t.key)
        if chart is not None:
            block.append(_chart(chart, span, width, font))
        block.append(_site_table(t, styles, width))
        sources = t.lsc_sources
        for src in sources:
            short, long = patient_view.LSC_SOURCE_TEXT[src]
            block.append(styles.p(f"LSC {i18n.gettext(short)}: {i18n.gettext(long)}", styles.small))
        refusal = next((r.refusal_reason for r in t.rows if r.refusal_reason is not None), None)
        if refusal is not None:
            block.append(
                styles.p(
                    i18n.gettext("Not comparable:") + " " + phrases.render_all(refusal.notes, refusal.reason),
                    styles.small,
                )
            )
        story.append(KeepTogether(block))
        story.append(Spacer(1, 3 * mm))

    story.append(styles.p(i18n.gettext("Therapy"), styles.h2))
    rows: list[list[Any]] = [
        [
            styles.p(h, styles.small)
            for h in (i18n.gettext("Agent"), i18n.gettext("Drug class"), i18n.gettext("Start"), i18n.gettext("Stop"))
        ]
    ]
    for therapy in detail.therapies:
        agent = therapy.agent + (" + " + i18n.gettext("glucocorticoid") if therapy.glucocorticoid else "")
        rows.append(
            [
                styles.p(agent),
                styles.p(i18n.gettext(therapy.drug_class.replace("_", " "))),
                styles.p(i18n.day(therapy.start)),
                styles.p(i18n.day(therapy.stop) if therapy.stop else i18n.gettext("ongoing")),
            ]
        )
    if not detail.therapies:
        rows.append([styles.p(i18n.gettext("No therapy recorded.")), "", "", ""])
    therapy_table = Table(rows, colWidths=[width * f for f in (0.4, 0.26, 0.17, 0.17)])
    therapy_table.setStyle(
        TableStyle(
            [
                ("GRID", (0, 0), (-1, -1), 0.3, colors.HexColor("#999999")),
                ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#EEEEEE")),
                ("VALIGN", (0, 0), (-1, -1), "TOP"),
            ]
        )
    )
    story.append(therapy_table)
    footer = i18n.gettext("DXA monitor")

    def on_page(canvas: Any, document: Any) -> None:
        canvas.saveState()
        canvas.setFont(font, 6.5)
        canvas.drawString(margin, 8 * mm, footer)
        label = f"{detail.patient_id}  {document.page}"
        canvas.setFont(CJK_FONT if _needs_cjk(label) else font, 6.5)
        canvas.drawRightString(pagesize[0] - margin, 8 * mm, label)
        canvas.restoreState()

    doc.build(story, onFirstPage=on_page, onLaterPages=on_page)
    return buf.getvalue()
