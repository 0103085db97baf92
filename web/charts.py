"""BMD-over-time charts per monitoring site, drawn as SVG on the server.

Only exams on the very same machine are joined by a line: a machine change (or an exam whose
machine has no serial) starts a new segment, because BMD from two machines is not comparable
without a cross-calibration (docs/architecture.md, "Monitoring rules"). Each segment has its own LSC band around its
baseline. T-scores are never trended: they only appear in the table beside each point.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from functools import lru_cache
from html import escape

from web import i18n, phrases, svg
from web.queries.patient import ComparisonView, ExamView, PatientDetail, TherapyView, site_label

# Okabe-Ito colours (distinguishable with colour-vision deficiencies), each with its own marker shape.
MACHINE_COLOURS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000")
MACHINE_SHAPES = ("circle", "square", "diamond", "triangle")
_LUMBAR_RANGE = re.compile(r"^L[1-5]-L[1-5]$")
_SITE_ORDER = {"spine": 0, "total_hip": 1, "femoral_neck": 2, "radius_33": 3}


@dataclass(frozen=True)
class ChartPoint:
    exam_id: str
    date: date
    bmd: float
    t_score: float | None
    z_score: float | None
    machine_key: str
    machine_label: str
    machine_index: int
    segment: int
    baseline: ComparisonView | None
    previous: ComparisonView | None

    @property
    def significance(self) -> str | None:
        return self.baseline.significance if self.baseline else None

    @property
    def note(self) -> str:
        """Why this point is not compared (or how it compares), in words for the table and hover."""
        notes = []
        for comp in (self.baseline, self.previous):
            if comp is None:
                continue
            text = phrases.render_all(comp.notes, comp.reason)
            if comp.refused and text and text not in notes:
                notes.append(text)
            elif comp.dissimilar and text:
                text = i18n.gettext("Not comparable: %(why)s", why=text)
                if text not in notes:
                    notes.append(text)
        return "; ".join(notes)


@dataclass(frozen=True)
class Chart:
    site: str
    side: str | None
    title: str
    points: tuple[ChartPoint, ...]
    svg: str

    @property
    def key(self) -> str:
        return f"{self.site}-{self.side or 'none'}"


def monitoring_sites(exams: tuple[ExamView, ...]) -> list[tuple[str, str | None]]:
    """The (site, side) pairs charted: the analysed lumbar range(s), total hip and femoral neck
    (the mean when any exam has both hips, otherwise each side alone), and the 1/3 radius."""
    present = {(m.site, m.side) for exam in exams for m in exam.measurements}
    keys: list[tuple[str, str | None]] = sorted(
        {(site, side) for site, side in present if _LUMBAR_RANGE.match(site)}, key=lambda k: k[0]
    )
    for site in ("total_hip", "femoral_neck"):
        sides = {side for s, side in present if s == site}
        if "mean" in sides:
            keys.append((site, "mean"))
        else:
            keys.extend((site, side) for side in sorted(s for s in sides if s))
    keys.extend(sorted(((s, side) for s, side in present if s == "radius_33"), key=lambda k: k[1] or ""))
    return keys


def build_charts(
    detail: PatientDetail,
    width: int = 640,
    height: int = 260,
    *,
    draw: bool = True,
    keys: list[tuple[str, str | None]] | None = None,
    span: tuple[date, date] | None = None,
) -> list[Chart]:
    """One chart per monitoring site (or per given `keys`); `draw=False` leaves the SVG empty (the
    trend API only needs the points and segments). `span` is the time axis shared with the
    therapy timeline, so a drug and a change line up vertically."""
    machine_order: dict[str, int] = {}
    for exam in detail.exams:
        # weak identities each get their own index too; colour cycles after seven
        machine_order.setdefault(exam.machine_key, len(machine_order))
    comps = {(c.site, c.side, c.to_exam, c.reference): c for c in detail.comparisons}
    charts = []
    for site, side in monitoring_sites(detail.exams) if keys is None else keys:
        points: list[ChartPoint] = []
        segment, last_key = -1, None
        for exam in detail.exams:
            m = exam.measurement(site, side)
            if m is None:
                continue
            if exam.machine_key != last_key or exam.machine_key.startswith("weak-"):
                segment += 1
                last_key = exam.machine_key
            points.append(
                ChartPoint(
                    exam_id=exam.exam_id,
                    date=exam.date,
                    bmd=m.bmd,
                    t_score=m.t_score,
                    z_score=m.z_score,
                    machine_key=exam.machine_key,
                    machine_label=exam.device.label,
                    machine_index=machine_order[exam.machine_key],
                    segment=segment,
                    baseline=comps.get((site, side, exam.exam_id, "baseline")),
                    previous=comps.get((site, side, exam.exam_id, "previous")),
                )
            )
        title = site_label(site, side)
        drawn = render_chart(phrases.localized_site(site, side), points, width, height, span) if draw else ""
        charts.append(Chart(site, side, title, tuple(points), drawn))
    return charts


def _marker(shape: str, x: float, y: float, colour: str, hollow: bool, title: str, attrs: str) -> str:
    """A point's marker with its hover title: what `svg.element` writes for it (`attrs`: the
    marker's own attributes, already written), spelt out since a chart has one per exam."""
    fill = "#ffffff" if hollow else colour
    common = f'fill="{fill}" stroke="{colour}" stroke-width="2" {attrs}'
    r = 5.5
    if shape == "square":
        return f'<rect x="{_n(x - r)}" y="{_n(y - r)}" width="11" height="11" {common}>{title}</rect>'
    if shape == "diamond":
        pts = f"{x:.1f},{y - r - 1:.1f} {x + r + 1:.1f},{y:.1f} {x:.1f},{y + r + 1:.1f} {x - r - 1:.1f},{y:.1f}"
        return f'<polygon points="{pts}" {common}>{title}</polygon>'
    if shape == "triangle":
        pts = f"{x:.1f},{y - r - 1:.1f} {x + r + 1:.1f},{y + r:.1f} {x - r - 1:.1f},{y + r:.1f}"
        return f'<polygon points="{pts}" {common}>{title}</polygon>'
    return f'<circle cx="{_n(x)}" cy="{_n(y)}" r="5.5" {common}>{title}</circle>'


def _n(value: float) -> str:
    """A float attribute as `svg.element` writes it (two decimals, trailing zeros dropped)."""
    return f"{value:.2f}".rstrip("0").rstrip(".")


def _title(text: str) -> str:
    """`svg.title(text)`."""
    return f"<title>{escape(text, quote=False)}</title>" if text else "<title/>"


def _attr(text: str) -> str:
    """A text attribute value as `svg.element` writes it."""
    return escape(text, quote=True) if _NEEDS_ESCAPE.search(text) else text


_NEEDS_ESCAPE = re.compile("[&<>\"']")


def _hover(point: ChartPoint) -> str:
    text = i18n.gettext(
        "%(day)s: %(bmd)s g/cm² on %(machine)s",
        day=i18n.day(point.date),
        bmd=i18n.number(point.bmd),
        machine=point.machine_label,
    )
    comp = point.baseline
    if comp and comp.percent_change is not None and not comp.refused:
        text += "; " + i18n.gettext(
            "vs baseline %(pct)s %% (%(verdict)s)",
            pct=i18n.number(comp.percent_change, 2, signed=True),
            verdict=i18n.gettext(comp.significance or "not assessed"),
        )
    if point.note:
        text += f"; {point.note}"
    return text


LEFT, RIGHT = 64, 16  # the charts and the therapy timeline share these margins and the time axis


def time_span(detail: PatientDetail) -> tuple[date, date] | None:
    """The dates every chart and the therapy timeline of one patient share: exams and therapy
    starts and stops (an ongoing therapy runs to the axis end)."""
    days = [e.date for e in detail.exams] + [t.start for t in detail.therapies]
    days += [t.stop for t in detail.therapies if t.stop is not None]
    if not days:
        return None
    return min(days), max(days)


def _time_scale(span: tuple[date, date], width: int) -> svg.LinearScale:
    lo, hi = span[0].toordinal(), span[1].toordinal()
    pad = max((hi - lo) * 0.04, 60)
    return svg.LinearScale((lo - pad, hi + pad), (LEFT, width - RIGHT))


def render_chart(
    title: str, points: list[ChartPoint], width: int, height: int, span: tuple[date, date] | None = None
) -> str:
    """One site's chart. Written as f-strings rather than through `svg.element` (the same
    markup, byte for byte: tests/web/test_chart_markup.py): a patient page draws several charts
    of dozens of elements each, and the generic writer was most of the page's drawing (issue 13).
    The grid of years is the same for every chart of a patient (one time axis) and is written
    once."""
    left, right, top, bottom = LEFT, RIGHT, 16, 40
    if not points:
        return svg.svg(width, height, [], i18n.gettext("%(site)s: no measurements", site=title))
    bands = _lsc_bands(points)
    values = [p.bmd for p in points] + [b for _, _, lo, hi in bands for b in (lo, hi)]
    pad = max((max(values) - min(values)) * 0.15, 0.02)
    y = svg.LinearScale((min(values) - pad, max(values) + pad), (height - bottom, top))
    span = span or (min(p.date for p in points), max(p.date for p in points))
    x = _time_scale(span, width)
    parts: list[str] = []
    grid_x2 = width - right
    for tick in y.ticks(5):
        ty = _n(y(tick))
        parts.append(f'<line x1="{left}" x2="{grid_x2}" y1="{ty}" y2="{ty}" class="grid"/>')
        label = escape(i18n.number(tick), quote=False)
        parts.append(f'<text x="{left - 6}" y="{_n(y(tick) + 4)}" text-anchor="end" class="tick">{label}</text>')
    parts.append(_year_grid(span, width, top, height - bottom))
    middle = (top + height - bottom) / 2
    axis = escape(i18n.gettext("BMD g/cm²"), quote=False)
    parts.append(
        f'<text x="14" y="{_n(middle)}" class="axis-label" text-anchor="middle"'
        f' transform="rotate(-90 14 {middle:.1f})">{axis}</text>'
    )
    for seg, base, lo, hi in bands:
        seg_days = [p.date.toordinal() for p in points if p.segment == seg]
        x0, x1 = x(min(seg_days)) - 8, x(max(seg_days)) + 8
        band = _title(
            i18n.gettext(
                "LSC band: baseline %(base)s ± %(lsc)s g/cm²", base=i18n.number(base), lsc=i18n.number(hi - base)
            )
        )
        parts.append(
            f'<rect x="{_n(x0)}" y="{_n(y(hi))}" width="{_n(x1 - x0)}" height="{_n(y(lo) - y(hi))}"'
            f' class="lsc-band" data-segment="{seg}">{band}</rect>'
        )
        yb = _n(y(base))
        parts.append(f'<line x1="{_n(x0)}" x2="{_n(x1)}" y1="{yb}" y2="{yb}" class="baseline"/>')
    for seg in sorted({p.segment for p in points}):
        members = [p for p in points if p.segment == seg]
        if len(members) < 2:
            continue
        colour = MACHINE_COLOURS[members[0].machine_index % len(MACHINE_COLOURS)]
        parts.append(
            svg.polyline(
                [(x(p.date.toordinal()), y(p.bmd)) for p in members],
                stroke=colour,
                stroke_width=2,
                class_="segment",
                data_segment=seg,
                data_machine=members[0].machine_key,
            )
        )
    for p in points:
        colour = MACHINE_COLOURS[p.machine_index % len(MACHINE_COLOURS)]
        shape = MACHINE_SHAPES[p.machine_index % len(MACHINE_SHAPES)]
        px, py = x(p.date.toordinal()), y(p.bmd)
        refused = bool(p.baseline and p.baseline.refused)
        attrs = (
            f'class="{"point refused" if refused else "point"}" data-exam="{_attr(p.exam_id)}"'
            f' data-machine="{_attr(p.machine_key)}" data-segment="{p.segment}" data-bmd="{p.bmd:.3f}"'
        )
        parts.append(_marker(shape, px, py, colour, refused, _title(_hover(p)), attrs))
        if p.significance in ("gain", "loss"):
            glyph, dy = ("▲", -11) if p.significance == "gain" else ("▼", 19)
            hover = _title(
                i18n.gettext("Significant gain vs baseline (beyond the LSC)")
                if p.significance == "gain"
                else i18n.gettext("Significant loss vs baseline (beyond the LSC)")
            )
            parts.append(
                f'<text x="{_n(px)}" y="{_n(py + dy)}" text-anchor="middle" class="sig sig-{p.significance}">'
                f"{glyph}{hover}</text>"
            )
    return svg.svg(width, height, parts, i18n.gettext("%(site)s: BMD over time", site=title), class_="chart")


@lru_cache(maxsize=256)
def _year_grid(span: tuple[date, date], width: int, top: int, axis_y: int) -> str:
    """A chart's vertical line and label for each new year of the time axis: one string for all
    the charts of a patient (and of every patient seen over the same years)."""
    x = _time_scale(span, width)
    parts = []
    for year in range(date.fromordinal(int(x.lo)).year + 1, date.fromordinal(int(x.hi)).year + 1):
        tx = _n(x(date(year, 1, 1).toordinal()))
        parts.append(f'<line x1="{tx}" x2="{tx}" y1="{top}" y2="{axis_y}" class="grid"/>')
        parts.append(f'<text x="{tx}" y="{axis_y + 16}" text-anchor="middle" class="tick">{year}</text>')
    return "".join(parts)


def _lsc_bands(points: list[ChartPoint]) -> list[tuple[int, float, float, float]]:
    """(segment, baseline BMD, low, high) for each segment whose LSC is known."""
    bands = []
    for seg in sorted({p.segment for p in points}):
        members = [p for p in points if p.segment == seg]
        lsc = next(
            (
                p.baseline.lsc_g_cm2
                for p in members[1:]
                if p.baseline and not p.baseline.refused and p.baseline.lsc_g_cm2
            ),
            None,
        )
        if lsc is None:
            continue
        base = members[0].bmd
        bands.append((seg, base, base - lsc, base + lsc))
    return bands


def legend(detail: PatientDetail) -> list[tuple[int, str, str]]:
    """(colour index, shape, machine label) per machine in order of first use; the stylesheet
    has one class per colour index (m0…m6), as the CSP forbids inline styles."""
    seen: dict[str, tuple[int, str, str]] = {}
    for exam in detail.exams:
        if exam.machine_key not in seen:
            i = len(seen)
            seen[exam.machine_key] = (
                i % len(MACHINE_COLOURS),
                MACHINE_SHAPES[i % len(MACHINE_SHAPES)],
                exam.device.label,
            )
    return list(seen.values())


def render_timeline(
    therapies: tuple[TherapyView, ...],
    exams: tuple[ExamView, ...],
    today: date,
    width: int = 640,
    span: tuple[date, date] | None = None,
) -> str:
    """Therapies as bars on the charts' time axis (same margins, same dates), exam dates as
    ticks. Each label is written whole above its bar, never clipped into a margin."""
    del today  # an ongoing therapy runs to the end of the shared axis
    row_h, top = 30, 6
    height = top + row_h * max(len(therapies), 1) + 26
    if span is None:
        days = [e.date for e in exams] + [t.start for t in therapies] + [t.stop for t in therapies if t.stop]
        if not days:
            return svg.svg(width, height, [], i18n.gettext("Therapy timeline: no therapies or exams"))
        span = (min(days), max(days))
    x = _time_scale(span, width)
    parts: list[str] = []
    axis_y = height - 22
    for year in range(date.fromordinal(int(x.lo)).year + 1, date.fromordinal(int(x.hi)).year + 1):
        tx = x(date(year, 1, 1).toordinal())
        parts.append(svg.element("line", {"x1": tx, "x2": tx, "y1": top, "y2": axis_y, "class": "grid"}))
        attrs = {"x": tx, "y": axis_y + 16, "text-anchor": "middle", "class": "tick"}
        parts.append(svg.element("text", attrs, text=str(year)))
    for exam in exams:
        ex = x(exam.date.toordinal())
        parts.append(
            svg.element(
                "line",
                {"x1": ex, "x2": ex, "y1": top, "y2": axis_y, "class": "exam-mark"},
                [
                    svg.title(
                        i18n.gettext("Exam %(day)s on %(machine)s", day=i18n.day(exam.date), machine=exam.device.label)
                    )
                ],
            )
        )
    for i, therapy in enumerate(therapies):
        y0 = top + i * row_h
        ongoing = therapy.stop is None
        x0 = x(therapy.start.toordinal())
        x1 = x.p1 if ongoing or therapy.stop is None else x(therapy.stop.toordinal())
        drug_class = i18n.gettext(therapy.drug_class.replace("_", " "))
        label = f"{therapy.agent} ({drug_class})" + (" → " + i18n.gettext("ongoing") if ongoing else "")
        period = f"{i18n.day(therapy.start)} – {i18n.day(therapy.stop) if therapy.stop else i18n.gettext('ongoing')}"
        parts.append(svg.element("text", _label_position(label, x0, x1, y0 + 11, width), text=label))
        parts.append(
            svg.element(
                "rect",
                {
                    "x": x0,
                    "y": y0 + 14,
                    "width": max(x1 - x0, 3),
                    "height": row_h - 18,
                    "rx": 3,
                    "class": f"therapy therapy-{therapy.drug_class}" + (" ongoing" if ongoing else ""),
                },
                [svg.title(f"{label}: {period}")],
            )
        )
    return svg.svg(width, height, parts, i18n.gettext("Therapy timeline"), class_="timeline")


def _label_position(label: str, x0: float, x1: float, y: float, width: int) -> dict[str, object]:
    """Start the label at its bar; when the whole label would not fit before the right edge, end
    it there instead (widths estimated: ~6.2 px a Latin character, 11 px a CJK one, at 11 px)."""
    estimate = sum(11.0 if ord(ch) > 0x2E80 else 6.2 for ch in label)
    if x0 + estimate <= width - 2:
        return {"x": max(x0, 2), "y": y, "text-anchor": "start", "class": "tick therapy-label"}
    return {"x": max(min(x1, width - 2), estimate + 2), "y": y, "text-anchor": "end", "class": "tick therapy-label"}
