"""A tiny SVG writer: escaped elements as strings, so charts render server-side and offline."""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import cache
from html import escape


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.2f}".rstrip("0").rstrip(".")
    return str(value)


_NEEDS_ESCAPE = re.compile("[&<>\"']")


@cache
def _name(key: str) -> str:
    return key.rstrip("_").replace("_", "-")


def _attribute(value: object) -> str:
    """An attribute value as written: a number needs no escaping (a chart has hundreds)."""
    kind = type(value)
    if kind is float:
        return f"{value:.2f}".rstrip("0").rstrip(".")
    if kind is int:
        return str(value)
    text = str(value)
    return escape(text, quote=True) if _NEEDS_ESCAPE.search(text) else text


def element(tag: str, attrs: dict[str, object] | None = None, children: Iterable[str] = (), text: str = "") -> str:
    """One element; attribute values and text are escaped, children are trusted SVG strings."""
    parts = [tag]
    if attrs:
        for key, value in attrs.items():
            if value is None or value is False:
                continue
            parts.append(f'{_name(key)}="{_attribute(value)}"')
    inner = (escape(text, quote=False) if text else "") + "".join(children)
    if not inner:
        return f"<{' '.join(parts)}/>"
    return f"<{' '.join(parts)}>{inner}</{tag}>"


def title(text: str) -> str:
    """A <title> child: the hover text of its parent, also read by screen readers."""
    return element("title", text=text)


def polyline(points: Iterable[tuple[float, float]], **attrs: object) -> str:
    coords = " ".join(f"{_fmt(x)},{_fmt(y)}" for x, y in points)
    return element("polyline", {"points": coords, "fill": "none", **attrs})


def svg(width: int, height: int, children: Iterable[str], label: str, **attrs: object) -> str:
    return element(
        "svg",
        {
            "xmlns": "http://www.w3.org/2000/svg",
            "viewBox": f"0 0 {width} {height}",
            "width": width,
            "height": height,
            "role": "img",
            "aria-label": label,
            **attrs,
        },
        [title(label), *children],
    )


class LinearScale:
    """Maps a data interval onto a pixel interval (pixels may run backwards, as y does)."""

    def __init__(self, domain: tuple[float, float], pixels: tuple[float, float]) -> None:
        lo, hi = domain
        if hi == lo:
            lo, hi = lo - 1.0, hi + 1.0
        self.lo, self.hi = lo, hi
        self.p0, self.p1 = pixels

    def __call__(self, value: float) -> float:
        return self.p0 + (value - self.lo) / (self.hi - self.lo) * (self.p1 - self.p0)

    def ticks(self, count: int = 5) -> list[float]:
        """Round tick values inside the domain (1, 2, 2.5 or 5 × a power of ten apart)."""
        import math

        span = self.hi - self.lo
        raw = span / max(count, 1)
        power = 10 ** math.floor(math.log10(raw))
        step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
        first = math.ceil(self.lo / step) * step
        values: list[float] = []
        value = first
        while value <= self.hi + step * 1e-9:
            values.append(round(value, 10))
            value += step
        return values
