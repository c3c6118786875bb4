"""A small SVG of a benchmark's results, written by hand: throughput and postmortem cost."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any
from xml.sax.saxutils import escape

WIDTH, HEIGHT = 920, 400
PANEL_W, PANEL_H = 360, 250
TOP = 70
COLOURS = {
    "bare": "#7f7f7f",
    "bare-1thread": "#c7c7c7",
    "sqlite": "#1f77b4",
    "postgresql": "#2ca02c",
    "proto-sqlite": "#aec7e8",
    "proto-sqlite-lock": "#9edae5",
    "proto-postgresql": "#98df8a",
}


def _text(x: float, y: float, body: str, *, size: int = 12, anchor: str = "middle") -> str:
    return (
        f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}">'
        f"{escape(body)}</text>"
    )


def _nice_max(value: float) -> float:
    if value <= 0:
        return 1.0
    magnitude = 10.0 ** math.floor(math.log10(value))
    for step in (1.0, 2.0, 2.5, 5.0):
        if value <= step * magnitude:
            return step * magnitude
    return 10.0 * magnitude


def _axes(x0: float, y0: float, top: float, y_max: float, label: str) -> list[str]:
    parts = [
        f'<line x1="{x0}" y1="{y0}" x2="{x0 + PANEL_W}" y2="{y0}" stroke="#333"/>',
        f'<line x1="{x0}" y1="{y0}" x2="{x0}" y2="{top}" stroke="#333"/>',
    ]
    for i in range(5):
        value = y_max * i / 4
        y = y0 - (y0 - top) * i / 4
        parts.append(
            f'<line x1="{x0}" y1="{y:.1f}" x2="{x0 + PANEL_W}" y2="{y:.1f}" stroke="#eee"/>'
        )
        parts.append(_text(x0 - 6, y + 4, f"{value:g}", size=10, anchor="end"))
    parts.append(
        f'<text x="{x0 - 48}" y="{(y0 + top) / 2:.1f}" font-size="11" text-anchor="middle" '
        f'transform="rotate(-90 {x0 - 48} {(y0 + top) / 2:.1f})">{escape(label)}</text>'
    )
    return parts


def throughput_panel(load: Sequence[dict[str, Any]], x0: float) -> list[str]:
    """Grouped bars: requests/s per number of clients, one bar per server."""
    y0, top = TOP + PANEL_H, TOP
    servers = list(dict.fromkeys(row["server"] for row in load))
    clients = sorted({row["clients"] for row in load})
    y_max = _nice_max(max((row["throughput"] for row in load), default=1.0))
    parts = _axes(x0, y0, top, y_max, "acknowledged requests/s")
    parts.append(_text(x0 + PANEL_W / 2, top - 24, "/incident note throughput", size=14))
    bare = [row["throughput"] for row in load if row["server"].startswith("bare")]
    if bare:  # issue 5's target: at least 0.8x the fastest bare Bolt app
        target = 0.8 * max(bare)
        ty = y0 - (y0 - top) * target / y_max
        parts.append(
            f'<line x1="{x0}" y1="{ty:.1f}" x2="{x0 + PANEL_W}" y2="{ty:.1f}" '
            'stroke="#d62728" stroke-dasharray="5,4"/>'
        )
        parts.append(_text(x0 + 4, ty - 4, "target: 0.8x fastest bare", size=9, anchor="start"))
    group_w = PANEL_W / max(1, len(clients))
    bar_w = group_w * 0.8 / max(1, len(servers))
    for g, count in enumerate(clients):
        gx = x0 + g * group_w + group_w * 0.1
        for s, server in enumerate(servers):
            row = next((r for r in load if r["server"] == server and r["clients"] == count), None)
            if row is None:
                continue
            height = (y0 - top) * row["throughput"] / y_max
            x = gx + s * bar_w
            colour = COLOURS.get(server, "#9467bd")
            parts.append(
                f'<rect x="{x:.1f}" y="{y0 - height:.1f}" width="{bar_w - 2:.1f}" '
                f'height="{height:.1f}" fill="{colour}"/>'
            )
            label = f"{row['throughput']:.0f}"
            if bar_w >= 24:
                parts.append(_text(x + bar_w / 2 - 1, y0 - height - 3, label, size=9))
            else:  # too narrow for the figure across: write it upwards
                lx, ly = x + bar_w / 2 + 2, y0 - height - 3
                parts.append(
                    f'<text x="{lx:.1f}" y="{ly:.1f}" font-size="9" '
                    f'transform="rotate(-90 {lx:.1f} {ly:.1f})">{label}</text>'
                )
        parts.append(_text(x0 + g * group_w + group_w / 2, y0 + 16, f"{count} clients", size=11))
    for s, server in enumerate(servers):
        lx, ly = x0 + (s % 3) * 125, y0 + 30 + (s // 3) * 16
        colour = COLOURS.get(server, "#9467bd")
        parts.append(f'<rect x="{lx:.1f}" y="{ly}" width="10" height="10" fill="{colour}"/>')
        parts.append(_text(lx + 14, ly + 9, server, size=11, anchor="start"))
    return parts


def postmortem_panel(sizes: Sequence[dict[str, Any]], x0: float) -> list[str]:
    """Render time against entries, both on log scales (a straight slope-1 line is linear)."""
    y0, top = TOP + PANEL_H, TOP
    parts = [_text(x0 + PANEL_W / 2, top - 24, "postmortem build + render", size=14)]
    points = [(row["entries"], row["total_s"]) for row in sizes if row.get("total_s", 0) > 0]
    if not points:
        return parts
    lo_x, hi_x = math.log10(min(p[0] for p in points)), math.log10(max(p[0] for p in points))
    lo_y = math.floor(math.log10(min(p[1] for p in points)))
    hi_y = math.ceil(math.log10(max(p[1] for p in points)))
    hi_y = max(hi_y, lo_y + 1)
    span_x = max(1e-9, hi_x - lo_x)
    parts += [
        f'<line x1="{x0}" y1="{y0}" x2="{x0 + PANEL_W}" y2="{y0}" stroke="#333"/>',
        f'<line x1="{x0}" y1="{y0}" x2="{x0}" y2="{top}" stroke="#333"/>',
    ]
    for exponent in range(lo_y, hi_y + 1):
        y = y0 - (y0 - top) * (exponent - lo_y) / (hi_y - lo_y)
        parts.append(
            f'<line x1="{x0}" y1="{y:.1f}" x2="{x0 + PANEL_W}" y2="{y:.1f}" stroke="#eee"/>'
        )
        parts.append(_text(x0 - 6, y + 4, f"{10.0**exponent:g} s", size=10, anchor="end"))

    def position(entries: float, seconds: float) -> tuple[float, float]:
        x = x0 + 20 + (PANEL_W - 40) * (math.log10(entries) - lo_x) / span_x
        y = y0 - (y0 - top) * (math.log10(seconds) - lo_y) / (hi_y - lo_y)
        return x, y

    line = " ".join(f"{x:.1f},{y:.1f}" for x, y in (position(*p) for p in points))
    parts.append(f'<polyline points="{line}" fill="none" stroke="#d62728" stroke-width="2"/>')
    for entries, seconds in points:
        x, y = position(entries, seconds)
        parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3.5" fill="#d62728"/>')
        parts.append(_text(x, y - 8, f"{seconds * 1000:.0f} ms", size=9))
        parts.append(_text(x, y0 + 16, f"{entries:,}", size=11))
    parts.append(_text(x0 + PANEL_W / 2, y0 + 36, "timeline entries (log scale)", size=11))
    return parts


def render_svg(results: dict[str, Any]) -> str:
    load = [row for row in results.get("load", []) if row.get("throughput", 0) > 0]
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif">',
        f'<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>',
        _text(WIDTH / 2, 22, results.get("title", "incident-bot benchmark"), size=15),
        *throughput_panel(load, 80),
        *postmortem_panel(results.get("postmortem", []), 80 + PANEL_W + 95),
        "</svg>",
    ]
    return "\n".join(parts) + "\n"
