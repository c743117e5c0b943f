"""Small charts drawn on the server as SVG: no library, no script, readable without colour.

``bar_chart(values, title=...)`` draws one bar per value (a series over time, oldest first) with a
baseline, the peak labelled, and a ``<title>`` plus ``aria-label`` that say the total and the peak,
so a screen reader gets the figures the picture shows. Bars take ``fill`` from the CSS class
``bar`` (light and dark themes); heights scale to the largest value.
"""

from __future__ import annotations

from typing import Sequence

from markupsafe import Markup, escape


def _num(value: float) -> str:
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.2f}"


def bar_chart(values: Sequence[float], *, title: str, labels: Sequence[str] | None = None, width: int = 240,
              height: int = 40, unit: str = "") -> Markup:
    """An inline ``<svg>`` bar chart of ``values``; ``labels`` (same length) become each bar's tooltip."""
    values = [max(0.0, float(v)) for v in values] or [0.0]
    peak = max(values)
    total = sum(values)
    summary = f"{title}: {_num(total)}{unit} in all, peak {_num(peak)}{unit}"
    step = width / len(values)
    gap = 1 if step >= 3 else 0
    parts = [f'<svg class="chart" role="img" aria-label="{escape(summary)}" viewBox="0 0 {width} {height + 12}" '
             f'width="{width}" height="{height + 12}" xmlns="http://www.w3.org/2000/svg">',
             f"<title>{escape(summary)}</title>",
             f'<line class="axis" x1="0" y1="{height}" x2="{width}" y2="{height}" />']
    for i, value in enumerate(values):
        h = 0.0 if peak == 0 else max(1.0, value / peak * (height - 2)) if value else 0.0
        if h:
            tip = f"{labels[i]}: {_num(value)}{unit}" if labels else f"{_num(value)}{unit}"
            bar_width = max(step - gap, 0.5)
            parts.append(f'<rect class="bar" x="{i * step:.2f}" y="{height - h:.2f}" width="{bar_width:.2f}" '
                         f'height="{h:.2f}"><title>{escape(tip)}</title></rect>')
    parts.append(f'<text x="0" y="{height + 10}">peak {escape(_num(peak))}{escape(unit)}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))
