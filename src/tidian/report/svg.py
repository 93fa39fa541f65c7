"""Static SVG charts for the report: bars with intervals, scatter, lines, heatmaps, a graph.

Written here rather than with a plotting library: the report must open offline as one file,
the charts are few and simple, and inline SVG keeps them small, crisp at any zoom and
checkable in a browser (every chart is an ``<svg class="plot" data-plot=NAME>`` whose marks
are elements). Every chart takes plain numbers and returns a string.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

W, H = 640, 300
PAD_L, PAD_R, PAD_T, PAD_B = 64, 16, 16, 40
ACCEPT, REJECT, NEUTRAL, ACCENT = "#2e7d32", "#9e9e9e", "#1565c0", "#c62828"
SERIES = ("#1565c0", "#c62828", "#2e7d32", "#6a1b9a", "#ef6c00", "#00838f")


def _num(v: float) -> str:
    return f"{v:.2f}".rstrip("0").rstrip(".")


def fmt(v: float | None, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "—"
    if v != 0 and (abs(v) >= 1e5 or abs(v) < 10 ** (-digits)):
        return f"{v:.{digits - 1}e}"
    return f"{v:.{digits}g}" if abs(v) >= 1 else f"{v:.{digits}f}"


class Scale:
    """A linear (or log10) map from data to pixels."""

    def __init__(self, lo: float, hi: float, a: float, b: float, log: bool = False) -> None:
        if log:
            lo, hi = math.log10(max(lo, 1e-12)), math.log10(max(hi, 1e-12))
        if hi == lo:
            lo, hi = lo - 0.5, hi + 0.5
        self.lo, self.hi, self.a, self.b, self.log = lo, hi, a, b, log

    def __call__(self, v: float) -> float:
        if self.log:
            v = math.log10(max(v, 1e-12))
        return self.a + (v - self.lo) / (self.hi - self.lo) * (self.b - self.a)

    def ticks(self, n: int = 5) -> list[float]:
        if self.log:
            return [10.0**e for e in range(math.floor(self.lo), math.ceil(self.hi) + 1)]
        span = self.hi - self.lo
        step = 10 ** math.floor(math.log10(span / n))
        for m in (1, 2, 5, 10):
            if span / (step * m) <= n:
                step *= m
                break
        first = math.ceil(self.lo / step) * step
        return [first + i * step for i in range(int((self.hi - first) / step) + 1)]


def _padded(values: Sequence[float], frac: float = 0.05) -> tuple[float, float]:
    lo, hi = min(values), max(values)
    pad = (hi - lo) * frac or abs(hi) * frac or 1.0
    return lo - pad, hi + pad


def _open(name: str, title: str, w: int = W, h: int = H) -> list[str]:
    return [
        f'<svg class="plot" data-plot="{escape(name)}" viewBox="0 0 {w} {h}" width="{w}" '
        f'height="{h}" role="img" aria-label="{escape(title)}" '
        'xmlns="http://www.w3.org/2000/svg">',
        f"<title>{escape(title)}</title>",
    ]


def _text(x: float, y: float, s: str, anchor: str = "middle", size: int = 11, **kw: str) -> str:
    extra = "".join(f' {k.replace("_", "-")}="{escape(v)}"' for k, v in kw.items())
    return (
        f'<text x="{_num(x)}" y="{_num(y)}" text-anchor="{anchor}" font-size="{size}"{extra}>'
        f"{escape(s)}</text>"
    )


def _axes(
    parts: list[str], xs: Scale | None, ys: Scale, xlabel: str, ylabel: str, w: int = W, h: int = H
) -> None:
    parts.append(
        f'<line x1="{PAD_L}" y1="{h - PAD_B}" x2="{w - PAD_R}" y2="{h - PAD_B}" stroke="#444"/>'
    )
    parts.append(f'<line x1="{PAD_L}" y1="{PAD_T}" x2="{PAD_L}" y2="{h - PAD_B}" stroke="#444"/>')
    for t in ys.ticks():
        y = ys(t)
        if PAD_T - 1 <= y <= h - PAD_B + 1:
            parts.append(
                f'<line x1="{PAD_L}" y1="{_num(y)}" x2="{w - PAD_R}" y2="{_num(y)}" stroke="#eee"/>'
            )
            parts.append(_text(PAD_L - 4, y + 4, fmt(t), "end", 10))
    if xs is not None:
        for t in xs.ticks():
            x = xs(t)
            if PAD_L - 1 <= x <= w - PAD_R + 1:
                parts.append(_text(x, h - PAD_B + 14, fmt(t), "middle", 10))
    parts.append(_text((PAD_L + w - PAD_R) / 2, h - 6, xlabel))
    parts.append(
        f'<text x="14" y="{_num((PAD_T + h - PAD_B) / 2)}" font-size="11" text-anchor="middle" '
        f'transform="rotate(-90 14 {_num((PAD_T + h - PAD_B) / 2)})">{escape(ylabel)}</text>'
    )


def interval_bars(
    name: str,
    title: str,
    items: Sequence[dict],
    ylabel: str,
) -> str:
    """Vertical bars from 0 to ``mean`` with whiskers ``low``–``high``; ``items`` rows carry
    ``label``, ``mean``, ``low``, ``high``, ``accepted`` (filled green) or not (hollow grey)."""
    values = [0.0] + [v for it in items for v in (it["mean"], it["low"], it["high"])]
    ys = Scale(*_padded(values, 0.1), H - PAD_B, PAD_T)
    parts = _open(name, title)
    _axes(parts, None, ys, "", ylabel)
    step = (W - PAD_L - PAD_R) / max(len(items), 1)
    zero = ys(0.0)
    parts.append(
        f'<line x1="{PAD_L}" y1="{_num(zero)}" x2="{W - PAD_R}" y2="{_num(zero)}" stroke="#444"/>'
    )
    for i, it in enumerate(items):
        cx = PAD_L + step * (i + 0.5)
        bw = min(48.0, step * 0.6)
        top, bottom = sorted((ys(it["mean"]), zero))
        color = ACCEPT if it.get("accepted") else REJECT
        fill = color if it.get("accepted") else "none"
        parts.append(
            f'<rect class="mark" x="{_num(cx - bw / 2)}" y="{_num(top)}" width="{_num(bw)}" '
            f'height="{_num(max(bottom - top, 1))}" fill="{fill}" stroke="{color}">'
            f"<title>{escape(it['label'])}: {fmt(it['mean'])} "
            f"[{fmt(it['low'])}, {fmt(it['high'])}]</title></rect>"
        )
        parts.append(
            f'<line x1="{_num(cx)}" y1="{_num(ys(it["low"]))}" x2="{_num(cx)}" '
            f'y2="{_num(ys(it["high"]))}" stroke="#222" stroke-width="1.5"/>'
        )
        for v in (it["low"], it["high"]):
            parts.append(
                f'<line x1="{_num(cx - 6)}" y1="{_num(ys(v))}" x2="{_num(cx + 6)}" '
                f'y2="{_num(ys(v))}" stroke="#222"/>'
            )
        parts.append(_text(cx, H - PAD_B + 14, it["label"][:18], size=10))
    parts.append("</svg>")
    return "".join(parts)


def hbars(
    name: str, title: str, items: Sequence[tuple[str, float, float | None]], xlabel: str
) -> str:
    """Horizontal bars (label, value, optional ± error), largest first as given."""
    items = list(items)[:20]
    h = PAD_T + PAD_B + 18 * max(len(items), 1)
    left = 170
    values = [0.0] + [v + (e or 0) for _, v, e in items] + [v - (e or 0) for _, v, e in items]
    xs = Scale(*_padded(values), left, W - PAD_R)
    parts = _open(name, title, W, h)
    zero = xs(0.0)
    parts.append(
        f'<line x1="{_num(zero)}" y1="{PAD_T}" x2="{_num(zero)}" y2="{h - PAD_B}" stroke="#444"/>'
    )
    for t in xs.ticks():
        parts.append(_text(xs(t), h - PAD_B + 14, fmt(t), size=10))
    parts.append(_text((left + W - PAD_R) / 2, h - 6, xlabel))
    for i, (label, v, err) in enumerate(items):
        y = PAD_T + 18 * i
        a, b = sorted((zero, xs(v)))
        parts.append(
            f'<rect class="mark" x="{_num(a)}" y="{_num(y + 3)}" width="{_num(max(b - a, 1))}" '
            f'height="12" fill="{NEUTRAL}"><title>{escape(label)}: {fmt(v)}</title></rect>'
        )
        if err:
            parts.append(
                f'<line x1="{_num(xs(v - err))}" y1="{_num(y + 9)}" x2="{_num(xs(v + err))}" '
                f'y2="{_num(y + 9)}" stroke="#222"/>'
            )
        parts.append(_text(left - 6, y + 13, label[:28], "end", 10))
    parts.append("</svg>")
    return "".join(parts)


def scatter(
    name: str,
    title: str,
    points: Sequence[dict],
    xlabel: str,
    ylabel: str,
    log_x: bool = False,
) -> str:
    """Points with ``x``, ``y``, ``label``; ``front`` points are filled blue and joined,
    ``incumbent`` ringed red, the rest grey."""
    pts = [p for p in points if p["x"] and p["y"] is not None]
    if not pts:
        return ""
    xs = Scale(
        *(
            (min(p["x"] for p in pts) / 1.5, max(p["x"] for p in pts) * 1.5)
            if log_x
            else _padded([p["x"] for p in pts])
        ),
        PAD_L,
        W - PAD_R,
        log=log_x,
    )
    ys = Scale(*_padded([p["y"] for p in pts], 0.1), H - PAD_B, PAD_T)
    parts = _open(name, title)
    _axes(parts, xs, ys, xlabel, ylabel)
    front = sorted((p for p in pts if p.get("front")), key=lambda p: p["x"])
    if len(front) > 1:
        path = " ".join(f"{_num(xs(p['x']))},{_num(ys(p['y']))}" for p in front)
        parts.append(
            f'<polyline points="{path}" fill="none" stroke="{NEUTRAL}" stroke-dasharray="4 3"/>'
        )
    for p in pts:
        x, y = xs(p["x"]), ys(p["y"])
        color = NEUTRAL if p.get("front") else REJECT
        parts.append(
            f'<circle class="mark" cx="{_num(x)}" cy="{_num(y)}" r="5" fill="{color}" '
            f'fill-opacity="0.8"><title>#{p.get("id", "")} {escape(p["label"])}: '
            f"{fmt(p['y'], 4)} at {fmt(p['x'])}</title></circle>"
        )
        if p.get("incumbent"):
            parts.append(
                f'<circle cx="{_num(x)}" cy="{_num(y)}" r="9" fill="none" '
                f'stroke="{ACCENT}" stroke-width="2"/>'
            )
            parts.append(_text(x + 12, y - 8, "final", "start", 10, fill=ACCENT))
        elif p.get("baseline"):
            parts.append(_text(x + 8, y - 8, "baseline", "start", 10))
    parts.append("</svg>")
    return "".join(parts)


def lines(
    name: str,
    title: str,
    series: Sequence[tuple[str, Sequence[float | None]]],
    xlabel: str,
    ylabel: str,
) -> str:
    """One polyline per (label, values over x = 1, 2, …), with a legend."""
    series = [(lbl, vals) for lbl, vals in series if any(v is not None for v in vals)]
    if not series:
        return ""
    allv = [v for _, vals in series for v in vals if v is not None]
    n = max(len(vals) for _, vals in series)
    xs = Scale(1, max(n, 2), PAD_L, W - PAD_R)
    ys = Scale(*_padded(allv), H - PAD_B, PAD_T)
    parts = _open(name, title)
    _axes(parts, xs, ys, xlabel, ylabel)
    for k, (label, vals) in enumerate(series):
        color = SERIES[k % len(SERIES)]
        pts = [f"{_num(xs(i + 1))},{_num(ys(v))}" for i, v in enumerate(vals) if v is not None]
        parts.append(
            f'<polyline class="mark" points="{" ".join(pts)}" fill="none" stroke="{color}" '
            f'stroke-width="2"><title>{escape(label)}</title></polyline>'
        )
        parts.append(
            f'<rect x="{W - PAD_R - 190}" y="{PAD_T + 4 + 14 * k}" width="10" '
            f'height="10" fill="{color}"/>'
        )
        parts.append(_text(W - PAD_R - 176, PAD_T + 13 + 14 * k, label[:30], "start", 10))
    parts.append("</svg>")
    return "".join(parts)


def curve(
    name: str,
    title: str,
    points: Sequence[tuple[float, float, float, float]],
    xlabel: str,
    ylabel: str,
) -> str:
    """A line through (x, mean) with a whisker low–high at each point."""
    pts = [p for p in points if p[1] is not None]
    if not pts:
        return ""
    xs = Scale(*_padded([p[0] for p in pts]), PAD_L, W - PAD_R)
    finite = [v for p in pts for v in p[1:] if v is not None and math.isfinite(v)]
    ys = Scale(*_padded(finite, 0.1), H - PAD_B, PAD_T)
    parts = _open(name, title)
    _axes(parts, xs, ys, xlabel, ylabel)
    path = " ".join(f"{_num(xs(x))},{_num(ys(m))}" for x, m, _, _ in pts)
    parts.append(f'<polyline points="{path}" fill="none" stroke="{NEUTRAL}" stroke-width="2"/>')
    for x, m, lo, hi in pts:
        if lo is not None and hi is not None and math.isfinite(lo) and math.isfinite(hi):
            parts.append(
                f'<line x1="{_num(xs(x))}" y1="{_num(ys(lo))}" x2="{_num(xs(x))}" '
                f'y2="{_num(ys(hi))}" stroke="#222"/>'
            )
        parts.append(
            f'<circle class="mark" cx="{_num(xs(x))}" cy="{_num(ys(m))}" r="4" '
            f'fill="{NEUTRAL}"><title>{fmt(x)}: {fmt(m, 4)} [{fmt(lo, 4)}, {fmt(hi, 4)}]'
            "</title></circle>"
        )
    parts.append("</svg>")
    return "".join(parts)


def heatmap(
    name: str,
    title: str,
    matrix: Sequence[Sequence[float]],
    *,
    rows: Sequence[str] | None = None,
    cols: Sequence[str] | None = None,
    signed: bool = False,
    annotate: bool = True,
    cell: int | None = None,
) -> str:
    """A grid of cells coloured by value (blue scale; red/blue around 0 when ``signed``)."""
    m = [list(r) for r in matrix]
    nr, nc = len(m), max((len(r) for r in m), default=0)
    if not nr or not nc:
        return ""
    left = 90 if rows else 8
    top = 24 if cols else 8
    cell = cell or max(4, min(40, (W - left - 8) // nc, 320 // nr))
    w, h = left + cell * nc + 8, top + cell * nr + 8
    peak = max((abs(v) for r in m for v in r), default=1.0) or 1.0
    parts = _open(name, title, w, h)
    for i, r in enumerate(m):
        for j, v in enumerate(r):
            t = abs(v) / peak
            if signed and v < 0:
                color = f"rgb(255,{int(255 - 200 * t)},{int(255 - 200 * t)})"
            else:
                color = f"rgb({int(255 - 220 * t)},{int(255 - 160 * t)},255)"
            parts.append(
                f'<rect class="mark" x="{left + j * cell}" y="{top + i * cell}" width="{cell}" '
                f'height="{cell}" fill="{color}"><title>'
                f"{escape(rows[i] if rows else str(i))} / {escape(cols[j] if cols else str(j))}: "
                f"{fmt(float(v))}</title></rect>"
            )
            if annotate and cell >= 22:
                parts.append(
                    _text(
                        left + (j + 0.5) * cell,
                        top + (i + 0.5) * cell + 4,
                        fmt(float(v)) if isinstance(v, float) else str(v),
                        size=9,
                        fill="#000" if t < 0.6 else "#fff",
                    )
                )
        if rows:
            parts.append(_text(left - 4, top + (i + 0.5) * cell + 4, rows[i][:14], "end", 10))
    if cols:
        for j, c in enumerate(cols):
            parts.append(_text(left + (j + 0.5) * cell, top - 6, c[:6], size=9))
    parts.append("</svg>")
    return "".join(parts)


def reliability(name: str, title: str, bins: Sequence[dict]) -> str:
    """Accuracy per confidence bin (bars, width ∝ bin) against the diagonal."""
    xs = Scale(0, 1, PAD_L, W - PAD_R)
    ys = Scale(0, 1, H - PAD_B, PAD_T)
    parts = _open(name, title)
    _axes(parts, xs, ys, "confidence", "accuracy")
    parts.append(
        f'<line x1="{_num(xs(0))}" y1="{_num(ys(0))}" x2="{_num(xs(1))}" '
        f'y2="{_num(ys(1))}" stroke="{REJECT}" stroke-dasharray="4 3"/>'
    )
    for b in bins:
        if b["accuracy"] is None:
            continue
        x0, x1 = xs(b["low"]), xs(b["high"])
        parts.append(
            f'<rect class="mark" x="{_num(x0 + 1)}" y="{_num(ys(b["accuracy"]))}" '
            f'width="{_num(max(x1 - x0 - 2, 1))}" height="{_num(ys(0) - ys(b["accuracy"]))}" '
            f'fill="{NEUTRAL}" fill-opacity="0.75"><title>{b["count"]} examples, confidence '
            f"{fmt(b['confidence'])}, accuracy {fmt(b['accuracy'])}</title></rect>"
        )
    parts.append("</svg>")
    return "".join(parts)


def graph(name: str, title: str, nodes: Sequence[dict], edges: Sequence[Sequence[int]]) -> str:
    """A layered graph: one column per stage position, nodes coloured by decision."""
    columns: dict[int, list[dict]] = {}
    for n in nodes:
        columns.setdefault(n["position"], []).append(n)
    order = sorted(columns)
    col_w, row_h = 150, 26
    h = PAD_T * 2 + row_h * max(len(c) for c in columns.values()) if columns else 60
    w = max(W, 20 + col_w * len(order))
    where = {}
    for ci, pos in enumerate(order):
        for ri, n in enumerate(columns[pos]):
            where[n["id"]] = (16 + ci * col_w, PAD_T + ri * row_h)
    parts = _open(name, title, w, h)
    for a, b in edges:
        if a in where and b in where:
            (x0, y0), (x1, y1) = where[a], where[b]
            parts.append(
                f'<line x1="{x0 + 120}" y1="{y0 + 9}" x2="{x1}" y2="{y1 + 9}" stroke="#bbb"/>'
            )
    colors = {"accepted": ACCEPT, "baseline": NEUTRAL, "rejected": REJECT}
    for n in nodes:
        x, y = where[n["id"]]
        color = colors.get(n["decision"], "#ffb300")
        parts.append(
            f'<rect class="mark" x="{x}" y="{y}" width="120" height="18" rx="4" fill="{color}">'
            f"<title>#{n['id']} {escape(n['label'])} ({escape(n['stage'])}: "
            f"{escape(str(n['decision']))})</title></rect>"
        )
        parts.append(_text(x + 60, y + 13, f"#{n['id']} {n['label']}"[:22], size=9, fill="#fff"))
    parts.append("</svg>")
    return "".join(parts)
