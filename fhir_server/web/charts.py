"""Charts drawn on the server as SVG (readable without JavaScript, no inline style: colours
come from classes in the stylesheet, so the Content-Security-Policy stays strict).

`score_chart` draws screening totals over time on their instrument's scale with the severity
bands shaded behind the line. The page also prints the same numbers as a table.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from markupsafe import Markup, escape

WIDTH, HEIGHT = 640, 220
LEFT, RIGHT, TOP, BOTTOM = 36, 124, 14, 30


@dataclass(frozen=True)
class Point:
    when: datetime
    value: int
    label: str  # e.g. "18 on 2 Nov 2026"


@dataclass(frozen=True)
class BandArea:
    low: int
    high: int
    label: str
    level: int  # 0 (mildest) .. 4: picks the shade class


def _fmt(x: float) -> str:
    return f"{x:.1f}".rstrip("0").rstrip(".")


def score_chart(title: str, points: list[Point], bands: list[BandArea], maximum: int,
                chart_id: str) -> Markup:
    """An accessible SVG line chart of `points` over the shaded `bands` (0..maximum)."""
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    pts = sorted(points, key=lambda p: p.when)

    def y_of(value: float) -> float:
        return TOP + plot_h - plot_h * value / maximum

    if len(pts) > 1:
        start, end = pts[0].when.timestamp(), pts[-1].when.timestamp()
        span = (end - start) or 1.0

        def x_of(p: Point) -> float:
            return LEFT + plot_w * (p.when.timestamp() - start) / span
    else:
        def x_of(p: Point) -> float:
            return LEFT + plot_w / 2

    desc = "; ".join(p.label for p in pts) or "no results"
    out = [f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
           f'aria-labelledby="{chart_id}-t {chart_id}-d" preserveAspectRatio="xMidYMid meet">',
           f'<title id="{chart_id}-t">{escape(title)}</title>',
           f'<desc id="{chart_id}-d">{escape(desc)}</desc>']
    for band in bands:
        top, bottom = y_of(band.high + 1 if band.high < maximum else maximum), y_of(band.low)
        out.append(f'<rect class="band band-{band.level}" x="{LEFT}" y="{_fmt(top)}" '
                   f'width="{plot_w}" height="{_fmt(bottom - top)}"/>')
        out.append(f'<text class="band-label" x="{LEFT + plot_w + 6}" '
                   f'y="{_fmt((top + bottom) / 2 + 4)}">{escape(band.label)}</text>')
    for tick in sorted({0, maximum, *[b.low for b in bands]}):
        out.append(f'<text class="axis" x="{LEFT - 6}" y="{_fmt(y_of(tick) + 4)}" '
                   f'text-anchor="end">{tick}</text>')
    out.append(f'<line class="axis-line" x1="{LEFT}" y1="{TOP + plot_h}" '
               f'x2="{LEFT + plot_w}" y2="{TOP + plot_h}"/>')
    if len(pts) > 1:
        line = " ".join(f"{_fmt(x_of(p))},{_fmt(y_of(p.value))}" for p in pts)
        out.append(f'<polyline class="series" points="{line}"/>')
    labelled = _label_indexes(len(pts))
    for i, p in enumerate(pts):
        x, y = x_of(p), y_of(p.value)
        out.append(f'<circle class="point" cx="{_fmt(x)}" cy="{_fmt(y)}" r="4"/>')
        out.append(f'<text class="value" x="{_fmt(x)}" y="{_fmt(y - 8)}" '
                   f'text-anchor="middle">{p.value}</text>')
        if i in labelled:
            out.append(f'<text class="axis" x="{_fmt(x)}" y="{HEIGHT - 10}" '
                       f'text-anchor="middle">{p.when.day} {p.when:%b}</text>')
    out.append("</svg>")
    return Markup("".join(out))


def _label_indexes(count: int, most: int = 6) -> set[int]:
    """Which points get a date under the axis (first, last, evenly spaced between)."""
    if count <= most:
        return set(range(count))
    step = (count - 1) / (most - 1)
    return {round(i * step) for i in range(most)}


@dataclass(frozen=True)
class Bar:
    label: str  # "Accepted"
    value: int
    note: str = ""  # shown after the value, e.g. "12 lost"
    shade: int = 0  # 0..3: picks the shade class


BAR_WIDTH = 360  # narrow: the chart keeps a readable size on a 390 px phone
BAR_ROW = 38


def bar_chart(title: str, bars: list[Bar], chart_id: str, summary: str = "") -> Markup:
    """An accessible horizontal bar chart: each bar's label above it, its value (and note)
    at its end. `summary` is read out with the title (e.g. the median)."""
    height = BAR_ROW * len(bars) + 6
    top = max((b.value for b in bars), default=0) or 1
    room = BAR_WIDTH - 96  # space kept for the value text at the end of the longest bar
    desc = "; ".join(f"{b.label}: {b.value}" + (f" ({b.note})" if b.note else "")
                     for b in bars) or "no data"
    if summary:
        desc = f"{summary}. {desc}"
    out = [f'<svg class="chart bars" viewBox="0 0 {BAR_WIDTH} {height}" role="img" '
           f'aria-labelledby="{chart_id}-t {chart_id}-d" preserveAspectRatio="xMinYMin meet">',
           f'<title id="{chart_id}-t">{escape(title)}</title>',
           f'<desc id="{chart_id}-d">{escape(desc)}</desc>']
    for i, bar in enumerate(bars):
        y = i * BAR_ROW
        width = room * bar.value / top
        out.append(f'<text class="bar-label" x="0" y="{y + 12}">{escape(bar.label)}</text>')
        out.append(f'<rect class="bar bar-{bar.shade % 4}" x="0" y="{y + 16}" '
                   f'width="{_fmt(max(width, 1.5))}" height="16"/>')
        text = f"{bar.value}" + (f" · {bar.note}" if bar.note else "")
        out.append(f'<text class="bar-value" x="{_fmt(width + 6)}" y="{y + 29}">'
                   f'{escape(text)}</text>')
    out.append("</svg>")
    return Markup("".join(out))
