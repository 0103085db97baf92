"""Issue 13: the charts written as f-strings write what `svg.element` wrote, byte for byte. The
former `render_chart` and `_marker` are kept here verbatim and drawn beside the new ones for
points of every shape, refused and significant points, LSC bands, machines whose keys need
escaping, and in English and Chinese."""

from __future__ import annotations

import random
from datetime import date, timedelta

import pytest

from web import charts, i18n, svg
from web.charts import LEFT, MACHINE_COLOURS, MACHINE_SHAPES, RIGHT, ChartPoint, _hover, _lsc_bands, _time_scale
from web.queries.patient import ComparisonView


def _old_marker(
    shape: str, x: float, y: float, colour: str, hollow: bool, children: list[str], attrs: dict[str, object]
) -> str:
    fill = "#ffffff" if hollow else colour
    common = {"fill": fill, "stroke": colour, "stroke-width": 2, **attrs}
    r = 5.5
    if shape == "square":
        return svg.element("rect", {"x": x - r, "y": y - r, "width": 2 * r, "height": 2 * r, **common}, children)
    if shape == "diamond":
        pts = f"{x:.1f},{y - r - 1:.1f} {x + r + 1:.1f},{y:.1f} {x:.1f},{y + r + 1:.1f} {x - r - 1:.1f},{y:.1f}"
        return svg.element("polygon", {"points": pts, **common}, children)
    if shape == "triangle":
        pts = f"{x:.1f},{y - r - 1:.1f} {x + r + 1:.1f},{y + r:.1f} {x - r - 1:.1f},{y + r:.1f}"
        return svg.element("polygon", {"points": pts, **common}, children)
    return svg.element("circle", {"cx": x, "cy": y, "r": r, **common}, children)


def _old_render_chart(
    title: str, points: list[ChartPoint], width: int, height: int, span: tuple[date, date] | None = None
) -> str:
    left, right, top, bottom = LEFT, RIGHT, 16, 40
    if not points:
        return svg.svg(width, height, [], i18n.gettext("%(site)s: no measurements", site=title))
    bands = _lsc_bands(points)
    values = [p.bmd for p in points] + [b for _, _, lo, hi in bands for b in (lo, hi)]
    pad = max((max(values) - min(values)) * 0.15, 0.02)
    y = svg.LinearScale((min(values) - pad, max(values) + pad), (height - bottom, top))
    x = _time_scale(span or (min(p.date for p in points), max(p.date for p in points)), width)
    parts: list[str] = []
    for tick in y.ticks(5):
        ty = y(tick)
        parts.append(svg.element("line", {"x1": left, "x2": width - right, "y1": ty, "y2": ty, "class": "grid"}))
        parts.append(
            svg.element(
                "text",
                {"x": left - 6, "y": ty + 4, "text-anchor": "end", "class": "tick"},
                text=i18n.number(tick),
            )
        )
    for year in range(date.fromordinal(int(x.lo)).year + 1, date.fromordinal(int(x.hi)).year + 1):
        tx = x(date(year, 1, 1).toordinal())
        parts.append(svg.element("line", {"x1": tx, "x2": tx, "y1": top, "y2": height - bottom, "class": "grid"}))
        parts.append(
            svg.element(
                "text",
                {"x": tx, "y": height - bottom + 16, "text-anchor": "middle", "class": "tick"},
                text=str(year),
            )
        )
    parts.append(
        svg.element(
            "text",
            {
                "x": 14,
                "y": (top + height - bottom) / 2,
                "class": "axis-label",
                "text-anchor": "middle",
                "transform": f"rotate(-90 14 {(top + height - bottom) / 2:.1f})",
            },
            text=i18n.gettext("BMD g/cm²"),
        )
    )
    for seg, base, lo, hi in bands:
        seg_days = [p.date.toordinal() for p in points if p.segment == seg]
        x0, x1 = x(min(seg_days)) - 8, x(max(seg_days)) + 8
        parts.append(
            svg.element(
                "rect",
                {
                    "x": x0,
                    "y": y(hi),
                    "width": x1 - x0,
                    "height": y(lo) - y(hi),
                    "class": "lsc-band",
                    "data-segment": seg,
                },
                [
                    svg.title(
                        i18n.gettext(
                            "LSC band: baseline %(base)s ± %(lsc)s g/cm²",
                            base=i18n.number(base),
                            lsc=i18n.number(hi - base),
                        )
                    )
                ],
            )
        )
        parts.append(svg.element("line", {"x1": x0, "x2": x1, "y1": y(base), "y2": y(base), "class": "baseline"}))
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
        parts.append(
            _old_marker(
                shape,
                px,
                py,
                colour,
                refused,
                [svg.title(_hover(p))],
                {
                    "class": "point refused" if refused else "point",
                    "data-exam": p.exam_id,
                    "data-machine": p.machine_key,
                    "data-segment": p.segment,
                    "data-bmd": f"{p.bmd:.3f}",
                },
            )
        )
        if p.significance in ("gain", "loss"):
            glyph, dy = ("▲", -11) if p.significance == "gain" else ("▼", 19)
            parts.append(
                svg.element(
                    "text",
                    {"x": px, "y": py + dy, "text-anchor": "middle", "class": f"sig sig-{p.significance}"},
                    [
                        svg.title(
                            i18n.gettext("Significant gain vs baseline (beyond the LSC)")
                            if p.significance == "gain"
                            else i18n.gettext("Significant loss vs baseline (beyond the LSC)")
                        )
                    ],
                    text=glyph,
                )
            )
    return svg.svg(width, height, parts, i18n.gettext("%(site)s: BMD over time", site=title), class_="chart")


def _comparison(status: str, significance: str | None, lsc: float | None, day: date) -> ComparisonView:
    return ComparisonView(
        site="total_hip",
        side="left",
        from_exam="1",
        to_exam="2",
        from_date=day - timedelta(days=700),
        to_date=day,
        from_device="HOLOGIC Discovery A (S/N 1)",
        to_device="HOLOGIC Discovery A (S/N 1)",
        reference="baseline",
        status=status,
        delta_g_cm2=-0.0345,
        percent_change=-3.456,
        lsc_g_cm2=lsc,
        lsc_source="study",
        significance=significance,
        dissimilar=False,
        reason="reason & <why>",
    )


def _points(rng: random.Random) -> list[ChartPoint]:
    points = []
    day = date(2004, 1, 1) + timedelta(days=rng.randint(0, 4000))
    segment = 0
    machine = rng.randint(0, 8)
    for k in range(rng.randint(1, 12)):
        if k and rng.random() < 0.3:
            segment += 1
            machine = rng.randint(0, 8)
        status = "rejected_cross_machine" if rng.random() < 0.2 else rng.choice(("ok", "ok_cross_calibrated"))
        baseline = (
            None
            if k == 0
            else _comparison(
                status, rng.choice((None, "gain", "loss", "stable")), rng.choice((None, 0.022, 0.031)), day
            )
        )
        key = rng.choice(("machine:hologic|horizon w|200457", 'machine:"odd" <&> model', "weak-exam7"))
        points.append(
            ChartPoint(
                exam_id=str(100 + k),
                date=day,
                bmd=round(rng.uniform(0.4, 1.3), rng.choice((3, 4))),
                t_score=None,
                z_score=None,
                machine_key=key,
                machine_label=rng.choice(("HOLOGIC Horizon W (S/N 200457)", "Lunar <Prodigy> & co (no serial)")),
                machine_index=machine,
                segment=segment,
                baseline=baseline,
                previous=None,
            )
        )
        day += timedelta(days=rng.randint(200, 1100))
    return points


@pytest.mark.parametrize("locale", ["en", "en_US", "zh_CN"])
def test_the_charts_are_written_as_svg_element_wrote_them(locale: str) -> None:
    i18n.activate(locale, locale)
    rng = random.Random(13)
    try:
        for _ in range(300):
            points = _points(rng)
            span = None
            if rng.random() < 0.5:
                span = (
                    points[0].date - timedelta(days=rng.randint(0, 900)),
                    points[-1].date + timedelta(days=rng.randint(0, 900)),
                )
            title = rng.choice(("Total hip (left)", "Lumbar <spine> & L1-L4"))
            assert charts.render_chart(title, points, 640, 260, span) == _old_render_chart(
                title, points, 640, 260, span
            )
        assert charts.render_chart("x", [], 640, 260) == _old_render_chart("x", [], 640, 260)
    finally:
        i18n.activate("en")


def test_a_marker_of_every_shape_is_written_as_before() -> None:
    point = _points(random.Random(1))[0]
    attrs = {"class": "point", "data-exam": "7", "data-machine": 'a"b', "data-segment": 0, "data-bmd": "0.812"}
    written = 'class="point" data-exam="7" data-machine="a&quot;b" data-segment="0" data-bmd="0.812"'
    for shape in MACHINE_SHAPES:
        for hollow in (False, True):
            old = _old_marker(shape, 101.237, 55.5, "#0072B2", hollow, [svg.title(_hover(point))], attrs)
            assert charts._marker(shape, 101.237, 55.5, "#0072B2", hollow, charts._title(_hover(point)), written) == old
