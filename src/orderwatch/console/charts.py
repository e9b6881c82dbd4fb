"""Charts as server-rendered SVG: no script, no outside host, readable without CSS.

Each function returns :class:`markupsafe.Markup`; every label passes through
:func:`markupsafe.escape`, and colours are CSS classes (``.c-<name>`` in console.css), so
the console's Content-Security-Policy needs no ``unsafe-inline``.

>>> str(sparkline([0, 1, 3])).startswith("<svg")
True
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from markupsafe import Markup, escape

__all__ = ["hbars", "sparkline", "stacked_columns"]


def _num(value: float) -> str:
    return f"{value:.1f}".rstrip("0").rstrip(".")


def sparkline(
    values: Sequence[float], *, width: int = 160, height: int = 28, label: str = ""
) -> Markup:
    """A small line of ``values`` (oldest first), with the peak in its title."""
    n = len(values)
    peak = max(values, default=0) or 1
    step = width / max(n - 1, 1)
    points = " ".join(
        f"{_num(i * step)},{_num(height - 2 - (v / peak) * (height - 4))}"
        for i, v in enumerate(values)
    )
    title = escape(f"{label} (max {max(values, default=0):g})".strip())
    return Markup(
        f'<svg class="spark" role="img" viewBox="0 0 {width} {height}" width="{width}" '
        f'height="{height}" aria-label="{title}"><title>{title}</title>'
        f'<polyline class="spark-line" fill="none" points="{points}"/></svg>'
    )


def hbars(
    rows: Sequence[tuple[str, float, str]], *, width: int = 420, bar_height: int = 20
) -> Markup:
    """Horizontal bars: (label, value, css class) each, the value printed at the bar's end."""
    label_w = 190
    value_w = 60
    room = width - label_w - value_w
    peak = max((v for _, v, _ in rows), default=0) or 1
    height = max(len(rows), 1) * (bar_height + 6) + 4
    parts = [
        f'<svg class="chart" role="img" viewBox="0 0 {width} {height}" width="{width}" '
        f'height="{height}">'
    ]
    for i, (label, value, cls) in enumerate(rows):
        y = 2 + i * (bar_height + 6)
        w = max(room * value / peak, 1 if value else 0)
        text_y = y + bar_height * 0.72
        parts.append(
            f'<text class="axis" x="{label_w - 6}" y="{_num(text_y)}" '
            f'text-anchor="end">{escape(label)}</text>'
            f'<rect class="bar c-{escape(cls)}" x="{label_w}" y="{y}" width="{_num(w)}" '
            f'height="{bar_height}"><title>{escape(label)}: {value:g}</title></rect>'
            f'<text class="value" x="{_num(label_w + w + 4)}" y="{_num(text_y)}">'
            f"{value:g}</text>"
        )
    if not rows:
        parts.append('<text class="axis" x="4" y="16">—</text>')
    parts.append("</svg>")
    return Markup("".join(parts))


def stacked_columns(
    labels: Sequence[str],
    series: Mapping[str, Sequence[float]],
    *,
    width: int = 560,
    height: int = 200,
    every: int = 1,
) -> Markup:
    """Columns per label, each stacked from ``series`` (name → values, class ``c-<name>``).

    ``every`` prints every n-th label on the x axis, for long series.
    """
    n = len(labels)
    bottom = 22
    top = 16
    plot_h = height - bottom - top
    left = 36
    col_w = (width - left - 4) / max(n, 1)
    totals = [sum(s[i] for s in series.values()) for i in range(n)]
    peak = max(totals, default=0) or 1
    parts = [
        f'<svg class="chart" role="img" viewBox="0 0 {width} {height}" width="{width}" '
        f'height="{height}">',
        f'<text class="axis" x="{left - 4}" y="{top + 4}" text-anchor="end">{peak:g}</text>',
        f'<text class="axis" x="{left - 4}" y="{top + plot_h}" text-anchor="end">0</text>',
        f'<line class="grid" x1="{left}" y1="{top + plot_h}" x2="{width - 2}" '
        f'y2="{top + plot_h}"/>',
    ]
    for i, label in enumerate(labels):
        x = left + i * col_w + 1
        y: float = top + plot_h
        for name, values in series.items():
            v = values[i]
            if not v:
                continue
            h = plot_h * v / peak
            y -= h
            parts.append(
                f'<rect class="bar c-{escape(name)}" x="{_num(x)}" y="{_num(y)}" '
                f'width="{_num(max(col_w - 2, 1))}" height="{_num(h)}">'
                f"<title>{escape(label)} {escape(name)}: {v:g}</title></rect>"
            )
        if totals[i]:
            parts.append(
                f'<text class="value small" x="{_num(x + col_w / 2)}" y="{_num(y - 3)}" '
                f'text-anchor="middle">{totals[i]:g}</text>'
            )
        if i % every == 0:
            parts.append(
                f'<text class="axis" x="{_num(x + col_w / 2)}" y="{height - 6}" '
                f'text-anchor="middle">{escape(label)}</text>'
            )
    parts.append("</svg>")
    return Markup("".join(parts))
