"""Charts drawn by the server as SVG: readable without JavaScript, no front-end library.

Every text that goes into a chart passes through `escape`; colours come from classes in
dashboard.css (the Content-Security-Policy allows no inline style).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

MINUTE_MS = 60_000


@dataclass(frozen=True, slots=True)
class Minute:
    """Jobs that ended in one minute (its start in ms since the epoch)."""

    start_ms: int
    completed: int
    failed: int


def _nice_ceiling(value: int) -> int:
    """The smallest of 1, 2, 5 x 10^k at or above `value`: a round top for the axis."""
    top = 1
    while True:
        for step in (1, 2, 5):
            if step * top >= value:
                return step * top
        top *= 10


def throughput_svg(minutes: Sequence[Minute], now_ms: int, span: int = 60) -> Markup:
    """Bars of completed (and, stacked on them, failed) jobs per minute over the last `span`
    minutes, the newest on the right."""
    width, height, left, bottom, top = 640, 150, 44, 20, 8
    plot_w, plot_h = width - left - 4, height - bottom - top
    newest = now_ms - now_ms % MINUTE_MS
    by_start = {m.start_ms - m.start_ms % MINUTE_MS: m for m in minutes}
    slots = [by_start.get(newest - (span - 1 - i) * MINUTE_MS) for i in range(span)]
    peak = max((m.completed + m.failed for m in slots if m is not None), default=0)
    axis = _nice_ceiling(max(peak, 1))
    total_done = sum(m.completed for m in slots if m is not None)
    total_failed = sum(m.failed for m in slots if m is not None)
    bar_w = plot_w / span
    parts = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" role="img"'
        f' aria-label="jobs ended per minute, last {span} minutes" width="{width}"'
        f' height="{height}" xmlns="http://www.w3.org/2000/svg">',
        f"<title>{escape(f'{total_done} completed, {total_failed} failed in {span} min')}</title>",
        f'<line class="axis" x1="{left}" y1="{top + plot_h}" x2="{width - 4}"'
        f' y2="{top + plot_h}"/>',
        f'<line class="grid" x1="{left}" y1="{top}" x2="{width - 4}" y2="{top}"/>',
        f'<text class="label" x="{left - 6}" y="{top + 4}" text-anchor="end">{axis}</text>',
        f'<text class="label" x="{left - 6}" y="{top + plot_h}" text-anchor="end">0</text>',
        f'<text class="label" x="{left}" y="{height - 4}">-{span}m</text>',
        f'<text class="label" x="{width - 4}" y="{height - 4}" text-anchor="end">now</text>',
    ]
    for i, m in enumerate(slots):
        if m is None or m.completed + m.failed == 0:
            continue
        x = left + i * bar_w + 0.5
        done_h = plot_h * m.completed / axis
        failed_h = plot_h * m.failed / axis
        base = top + plot_h
        tip = escape(f"{span - 1 - i} min ago: {m.completed} completed, {m.failed} failed")
        parts.append(f"<g><title>{tip}</title>")
        if m.completed:
            parts.append(
                f'<rect class="done" x="{x:.1f}" y="{base - done_h:.1f}"'
                f' width="{bar_w - 1:.1f}" height="{done_h:.1f}"/>'
            )
        if m.failed:
            parts.append(
                f'<rect class="failed" x="{x:.1f}" y="{base - done_h - failed_h:.1f}"'
                f' width="{bar_w - 1:.1f}" height="{failed_h:.1f}"/>'
            )
        parts.append("</g>")
    parts.append("</svg>")
    return Markup("".join(parts))


def timeline_svg(events: Sequence[tuple[str, int]], now_ms: int) -> Markup:
    """A job's stamps (label, ms) on one line, from the first to the last (to now while the
    job has not ended); labels spread evenly below, each tied to its mark."""
    if not events:
        return Markup("")
    width, height, pad = 640, 76, 16
    ordered = sorted(events, key=lambda event: event[1])
    ended = any(label == "ended" for label, _ in ordered)
    first = ordered[0][1]
    last = ordered[-1][1] if ended else max(now_ms, ordered[-1][1])
    span = max(last - first, 1)
    inner = width - 2 * pad
    parts = [
        f'<svg class="timeline" viewBox="0 0 {width} {height}" role="img"'
        f' aria-label="timeline" width="{width}" height="{height}"'
        ' xmlns="http://www.w3.org/2000/svg">',
        f'<line class="axis" x1="{pad}" y1="20" x2="{width - pad}" y2="20"/>',
    ]
    if not ended:
        parts.append(f'<text class="label" x="{width - pad}" y="12" text-anchor="end">now</text>')
    for n, (label, ms) in enumerate(ordered):
        x = pad + inner * (ms - first) / span
        label_x = pad + inner * (n + 0.5) / len(ordered)
        tip = f"{label} {_after(ms - first)} after {ordered[0][0]}"
        parts.append(
            f"<g><title>{escape(tip)}</title>"
            f'<line class="grid" x1="{x:.1f}" y1="20" x2="{label_x:.1f}" y2="46"/>'
            f'<circle class="mark" cx="{x:.1f}" cy="20" r="5"/>'
            f'<text class="label" x="{label_x:.1f}" y="60" text-anchor="middle">'
            f"{escape(label)}</text>"
            f'<text class="label" x="{label_x:.1f}" y="72" text-anchor="middle">'
            f"{escape('+' + _after(ms - first) if n else '')}</text></g>"
        )
    parts.append("</svg>")
    return Markup("".join(parts))


def _after(ms: int) -> str:
    if ms < 1000:
        return f"{ms} ms"
    seconds = ms / 1000
    return f"{seconds:.1f} s" if seconds < 60 else f"{seconds / 60:.1f} min"
