"""A plain SVG chart of the headline numbers: horizontal bars, one panel per
benchmark, written as text (no plotting library needed)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from html import escape

COLOURS = ("#4c78a8", "#f58518", "#54a24b", "#b279a2")
WIDTH = 780
LABEL_W = 240
BAR_H = 14
GAP = 6
PANEL_PAD = 46


@dataclass(frozen=True)
class Bar:
    series: str
    value: float
    low: float = math.nan
    high: float = math.nan


@dataclass(frozen=True)
class Panel:
    title: str
    unit: str
    rows: list[tuple[str, list[Bar]]]
    log: bool = False


def _ticks(top: float, log: bool, floor: float) -> list[float]:
    if log:
        return [10.0 ** e for e in range(math.floor(math.log10(floor)), math.ceil(math.log10(top)) + 1)]
    step = 10 ** math.floor(math.log10(top or 1))
    if top / step < 3:
        step /= 2
    return [step * i for i in range(int(top / step) + 2)]


def _panel(panel: Panel, y0: float) -> tuple[list[str], float]:
    values = [b.value for _, bars in panel.rows for b in bars if b.value > 0 and not math.isnan(b.value)]
    values += [b.high for _, bars in panel.rows for b in bars if b.high > 0 and not math.isnan(b.high)]
    if not values:
        return [], y0
    # Log scale: start a decade below the smallest value, so that every bar shows.
    floor = 10 ** (math.floor(math.log10(min(values))) - 1) if panel.log else 0.0
    ticks = _ticks(max(values), panel.log, floor or 1)
    top = ticks[-1]
    plot_w = WIDTH - LABEL_W - 30

    def x(value: float) -> float:
        if panel.log:
            value = max(value, floor)
            span = math.log10(top) - math.log10(floor)
            return LABEL_W + plot_w * (math.log10(value) - math.log10(floor)) / (span or 1)
        return LABEL_W + plot_w * value / (top or 1)

    series = list(dict.fromkeys(b.series for _, bars in panel.rows for b in bars))
    out = [f'<text x="10" y="{y0 + 16}" font-weight="bold">{escape(panel.title)}</text>']
    legend_x = LABEL_W
    for index, name in enumerate(series):
        out.append(f'<rect x="{legend_x}" y="{y0 + 24}" width="10" height="10" fill="{COLOURS[index % 4]}"/>')
        out.append(f'<text x="{legend_x + 14}" y="{y0 + 33}" font-size="11">{escape(name)}</text>')
        legend_x += 14 + 7 * len(name) + 20
    y = y0 + PANEL_PAD
    plot_top = y
    for label, bars in panel.rows:
        out.append(f'<text x="{LABEL_W - 8}" y="{y + BAR_H * len(bars) / 2 + 4}" text-anchor="end" '
                   f'font-size="11">{escape(label)}</text>')
        for bar in bars:
            colour = COLOURS[series.index(bar.series) % 4]
            if not math.isnan(bar.value):
                width = max(x(bar.value) - LABEL_W, 1)
                out.append(f'<rect x="{LABEL_W}" y="{y}" width="{width:.1f}" height="{BAR_H - 2}" fill="{colour}"/>')
                if not math.isnan(bar.low) and not math.isnan(bar.high) and bar.high > bar.low:
                    mid = y + (BAR_H - 2) / 2
                    out.append(f'<line x1="{x(bar.low):.1f}" x2="{x(bar.high):.1f}" y1="{mid}" y2="{mid}" '
                               'stroke="#222" stroke-width="1"/>')
                text = f"{bar.value:.3g}" if bar.value < 1000 else f"{bar.value:.0f}"
                out.append(f'<text x="{x(bar.value) + 4:.1f}" y="{y + BAR_H - 4}" font-size="10">{text}</text>')
            y += BAR_H
        y += GAP
    for tick in ticks:
        tx = x(tick)
        out.append(f'<line x1="{tx:.1f}" x2="{tx:.1f}" y1="{plot_top - 4}" y2="{y}" stroke="#ddd"/>')
        label = f"{tick:g}"
        out.append(f'<text x="{tx:.1f}" y="{y + 12}" font-size="10" text-anchor="middle">{label}</text>')
    out.append(f'<text x="{WIDTH - 10}" y="{y + 26}" font-size="10" text-anchor="end">'
               f'{escape(panel.unit)}{" (log scale)" if panel.log else ""}</text>')
    # Grid lines go under the bars.
    grid = [line for line in out if line.startswith("<line") and 'stroke="#ddd"' in line]
    rest = [line for line in out if line not in grid]
    return grid + rest, y + 40


def render(panels: list[Panel], title: str) -> str:
    body, y = [], 40.0
    for panel in panels:
        lines, y = _panel(panel, y)
        body += lines
    head = (f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{int(y)}" '
            f'viewBox="0 0 {WIDTH} {int(y)}" font-family="sans-serif" font-size="12">')
    return "\n".join([head, '<rect width="100%" height="100%" fill="white"/>',
                      f'<text x="10" y="22" font-size="15" font-weight="bold">{escape(title)}</text>',
                      *body, "</svg>"]) + "\n"
