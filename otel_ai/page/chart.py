"""A small SVG line chart of an incident's metric against its threshold and baseline."""
from __future__ import annotations

from html import escape

WIDTH, HEIGHT = 640, 220
LEFT, RIGHT, TOP, BOTTOM = 56, 16, 16, 36


def metric_chart(samples: list[dict], threshold: float | None, baseline: float | None, unit: str = "") -> str:
    """`samples` are {"timestamp": RFC 3339, "value": number}, oldest first."""
    values = [float(s["value"]) for s in samples if isinstance(s.get("value"), (int, float))]
    if not values:
        return '<p class="muted">No samples recorded for this incident yet.</p>'
    references = [v for v in (threshold, baseline) if isinstance(v, (int, float))]
    top = max(values + references) * 1.15 or 1.0
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x(i: int) -> float:
        return LEFT + (plot_w * i / (len(values) - 1) if len(values) > 1 else plot_w / 2)

    def y(value: float) -> float:
        return TOP + plot_h * (1 - value / top)

    parts = [f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" role="img" '
             f'aria-label="metric against threshold and baseline" xmlns="http://www.w3.org/2000/svg">',
             f'<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="#fafafa" stroke="#ddd"/>']
    for fraction in (0.0, 0.5, 1.0):
        tick = top * fraction
        parts.append(f'<text x="{LEFT - 6}" y="{y(tick) + 4:.1f}" text-anchor="end" class="axis">'
                     f'{_number(tick)}{escape(unit)}</text>')
    if isinstance(baseline, (int, float)):
        parts.append(_reference(y(baseline), "#888", "4 3", f"baseline {_number(baseline)}{unit}", "baseline",
                                label_at_left=True))
    if isinstance(threshold, (int, float)):
        parts.append(_reference(y(threshold), "#c0392b", "7 4", f"threshold {_number(threshold)}{unit}",
                                "threshold", label_at_left=False))
    points = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in enumerate(values))
    parts.append(f'<polyline class="series" points="{points}" fill="none" stroke="#2c6fbb" stroke-width="2"/>')
    for i, (sample, value) in enumerate(zip(samples, values)):
        parts.append(f'<circle cx="{x(i):.1f}" cy="{y(value):.1f}" r="3" fill="#2c6fbb">'
                     f'<title>{escape(str(sample.get("timestamp", "")))}: {_number(value)}{escape(unit)}</title>'
                     '</circle>')
    first, last = str(samples[0].get("timestamp", "")), str(samples[-1].get("timestamp", ""))
    parts.append(f'<text x="{LEFT}" y="{HEIGHT - 10}" class="axis">{escape(_clock(first))}</text>')
    parts.append(f'<text x="{WIDTH - RIGHT}" y="{HEIGHT - 10}" text-anchor="end" class="axis">'
                 f'{escape(_clock(last))}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _reference(y: float, colour: str, dash: str, label: str, name: str, label_at_left: bool) -> str:
    # Threshold and baseline are often close: their labels sit at opposite ends.
    x, anchor = (LEFT + 4, "start") if label_at_left else (WIDTH - RIGHT - 4, "end")
    return (f'<line class="{name}" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" stroke="{colour}" '
            f'stroke-dasharray="{dash}"/><text x="{x}" y="{y - 4:.1f}" text-anchor="{anchor}" '
            f'fill="{colour}" class="axis">{escape(label)}</text>')


def _number(value: float) -> str:
    return f"{value:,.1f}".rstrip("0").rstrip(".") if abs(value) < 1000 else f"{value:,.0f}"


def _clock(timestamp: str) -> str:
    """HH:MM:SS of an RFC 3339 time, or the text as given."""
    return timestamp[11:19] if len(timestamp) >= 19 and timestamp[10] == "T" else timestamp
