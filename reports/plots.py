"""Inline SVG plots for the report (no plotting library, no external resources).

Every text in an SVG is escaped with markupsafe; the functions return ``Markup`` so the
autoescaping template embeds them as drawn.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

from audit.judge.outcomes import OUTCOMES

OUTCOME_COLOURS = {o.label: o.colour for o in OUTCOMES}
SERIES_COLOURS = {"untrained": "#6b7280", "clean": "#2563eb", "protected": "#c2410c",
                  "attacked": "#0f766e",
                  "null_baseline": "#a16207"}
SERIES_LABELS = {"null_baseline": "noise"}
RETAINED_LIMITS = (-2.0, 3.0)


@dataclass(frozen=True)
class RetainedRow:
    """One scenario's retained protection (Eq. of DESIGN's verdict) with its 95% interval."""

    label: str
    outcome: str
    value: float | None
    low: float | None
    high: float | None
    threshold: float | None


def _num(value: float) -> str:
    return f"{value:.1f}"


def retained_plot(rows: Sequence[RetainedRow], width: int = 720) -> Markup:
    """Retained protection per scenario: point, 95% CI bar, threshold line, 0 and 1 references."""
    # the labels' column grows with the longest label (about 6.5 px a character at 12 px), so
    # that 'protection · scenario · subject' is not cut at the left edge
    label_w = max(230, min(420, int(6.5 * max((len(r.label) for r in rows), default=0)) + 8))
    width = max(width, label_w + 420)
    pad, row_h = 16, 26
    finite = [v for r in rows for v in (r.value, r.low, r.high) if v is not None
              and math.isfinite(v)]
    lo = max(RETAINED_LIMITS[0], min([-0.25, *finite]))
    hi = min(RETAINED_LIMITS[1], max([1.25, *finite]))
    plot_w = width - label_w - 2 * pad
    height = row_h * max(1, len(rows)) + 46

    def x(v: float) -> float:
        v = min(max(v, lo), hi)
        return label_w + pad + (v - lo) / (hi - lo) * plot_w

    parts = [
        f'<svg class="plot" role="img" width="{width}" height="{height}" viewBox="0 0 {width} '
        f'{height}"><title>Retained protection per scenario with 95% intervals</title>'
    ]
    top, bottom = 8, height - 30
    for ref, dash in ((0.0, ""), (1.0, "")):
        parts.append(f'<line x1="{_num(x(ref))}" y1="{top}" x2="{_num(x(ref))}" y2="{bottom}" '
                     f'stroke="#9ca3af"{dash}/>')
    ticks = [t / 2 for t in range(math.ceil(lo * 2), math.floor(hi * 2) + 1)]
    for tick in ticks:
        parts.append(
            f'<text x="{_num(x(tick))}" y="{bottom + 16}" font-size="11" text-anchor="middle" '
            f'fill="#374151">{tick:g}</text>'
        )
    parts.append(
        f'<text x="{label_w + pad + plot_w / 2:.1f}" y="{height - 2}" font-size="11" '
        'text-anchor="middle" fill="#374151">'
        "retained protection (0 = attack removed it all, 1 = fully kept)</text>"
    )
    for i, row in enumerate(rows):
        y = top + row_h * i + row_h / 2
        colour = OUTCOME_COLOURS.get(row.outcome, "#374151")
        parts.append(
            f'<text x="{label_w}" y="{y + 4:.1f}" font-size="12" text-anchor="end" '
            f'fill="#111827">{escape(row.label)}</text>'
        )
        if row.threshold is not None:
            parts.append(
                f'<line x1="{_num(x(row.threshold))}" y1="{y - 9:.1f}" '
                f'x2="{_num(x(row.threshold))}" y2="{y + 9:.1f}" stroke="#111827" '
                'stroke-dasharray="3 2"><title>threshold</title></line>'
            )
        if row.value is None or not math.isfinite(row.value):
            parts.append(
                f'<text x="{label_w + pad + 4}" y="{y + 4:.1f}" font-size="11" font-style="italic" '
                f'fill="{colour}">'
                f"{escape(row.outcome)} — no retained protection to plot</text>"
            )
            continue
        if row.low is not None and row.high is not None:
            parts.append(
                f'<line x1="{_num(x(row.low))}" y1="{y:.1f}" x2="{_num(x(row.high))}" y2="{y:.1f}" '
                f'stroke="{colour}" stroke-width="3"/>'
            )
        tip = (f"{row.value:.3f} [{row.low:.3f}, {row.high:.3f}]" if row.low is not None
               and row.high is not None else f"{row.value:.3f}")
        parts.append(
            f'<circle cx="{_num(x(row.value))}" cy="{y:.1f}" r="5" '
            f'fill="{colour}"><title>{escape(row.label)}: '
            f"{escape(tip)} ({escape(row.outcome)})</title></circle>"
        )
    parts.append("</svg>")
    return Markup("".join(parts))


def distribution_plot(values: dict[str, Sequence[float]], metric: str, direction: str | None,
                      width: int = 360) -> Markup:
    """Per-image metric values of the clean, protected and attacked exploits (strip plot, mean bar),
    with the untrained reference and the null baseline (uniform noise) where they were measured."""
    names = [n for n in SERIES_COLOURS if n in ("clean", "protected", "attacked") or values.get(n)]
    series = [(name,
               [float(v) for v in values.get(name) or [] if v is not None
                and math.isfinite(float(v))])
              for name in names]
    every = [v for _, vs in series for v in vs]
    label_w, pad, row_h = 72, 10, 22
    height = row_h * len(series) + 34
    if not every:
        return Markup(
            f'<svg class="plot" width="{width}" height="40"><text x="4" y="24" font-size="11" '
            f'fill="#6b7280">{escape(metric)}: no values</text></svg>'
        )
    lo, hi = min(every), max(every)
    if hi - lo < 1e-9:
        lo, hi = lo - 0.5, hi + 0.5
    span = hi - lo
    lo, hi = lo - 0.05 * span, hi + 0.05 * span
    plot_w = width - label_w - 2 * pad

    def x(v: float) -> float:
        return label_w + pad + (v - lo) / (hi - lo) * plot_w

    arrow = ({"down": "↓ lower = stronger protection", "up": "↑ higher = stronger protection"}.get(
        direction or "", ""))
    parts = [
        f'<svg class="plot" role="img" width="{width}" height="{height}" viewBox="0 0 {width} '
        f'{height}"><title>{escape(metric)}: per-image values</title>'
    ]
    for i, (name, vs) in enumerate(series):
        y = 6 + row_h * i + row_h / 2
        colour = SERIES_COLOURS[name]
        parts.append(f'<text x="{label_w}" y="{y + 4:.1f}" font-size="11" text-anchor="end" '
                     f'fill="#111827">{SERIES_LABELS.get(name, name)}</text>')
        for j, v in enumerate(vs):
            # deterministic jitter (golden-ratio sequence)
            jitter = ((j * 0.618034) % 1.0 - 0.5) * 10
            parts.append(f'<circle cx="{_num(x(v))}" cy="{y + jitter:.1f}" r="2.5" fill="{colour}" '
                         'fill-opacity="0.6"/>')
        if vs:
            mean = sum(vs) / len(vs)
            parts.append(
                f'<line x1="{_num(x(mean))}" y1="{y - 9:.1f}" x2="{_num(x(mean))}" '
                f'y2="{y + 9:.1f}" stroke="{colour}" stroke-width="2.5"><title>{name} mean '
                f'{mean:.4g} (n={len(vs)})</title></line>'
            )
    axis_y = 6 + row_h * len(series) + 12
    for v in (lo + 0.05 * (hi - lo) / 1.1, (lo + hi) / 2, hi - 0.05 * (hi - lo) / 1.1):
        parts.append(f'<text x="{_num(x(v))}" y="{axis_y:.1f}" font-size="10" text-anchor="middle" '
                     f'fill="#374151">{v:.3g}</text>')
    parts.append(
        f'<text x="{label_w + pad}" y="{height - 2}" font-size="10" '
        f'fill="#6b7280">{escape(metric)} {escape(arrow)}</text>'
    )
    parts.append("</svg>")
    return Markup("".join(parts))
