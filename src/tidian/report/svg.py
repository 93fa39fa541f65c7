"""Static SVG charts for the report: bars with intervals, scatter, lines, heatmaps, a graph.

Written here rather than with a plotting library: the report must open offline as one file,
the charts are few and simple, and inline SVG keeps them small, crisp at any zoom and
checkable in a browser (every chart is an ``<svg class="plot" data-plot=NAME>`` whose marks
are elements). Every chart takes plain numbers and returns a string.

Text is never cut: a chart makes room for its labels (margins from their measured length,
legends below the plot, long labels wrapped at commas) and hover titles (``<title>``, no
script) carry the details. Axis ticks are ``class="tick x|y"`` and there are at least three
on every numeric axis; the browser test checks that no text overflows its chart or overlaps
another.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from html import escape

W, H = 640, 300
PAD_L, PAD_R, PAD_T, PAD_B = 64, 16, 16, 40
ACCEPT, REJECT, NEUTRAL, ACCENT = "#2e7d32", "#9e9e9e", "#1565c0", "#c62828"
SERIES = ("#1565c0", "#c62828", "#2e7d32", "#6a1b9a", "#ef6c00", "#00838f")
CHAR = 0.62  # width of an average character in font-size units (system sans-serif, generous)


def _num(v: float) -> str:
    return f"{v:.2f}".rstrip("0").rstrip(".")


def fmt(v: float | None, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "—"
    if v != 0 and (abs(v) >= 1e5 or abs(v) < 10 ** (-digits)):
        return f"{v:.{digits - 1}e}"
    return f"{v:.{digits}g}" if abs(v) >= 1 else f"{v:.{digits}f}"


def tick(v: float) -> str:
    """An axis tick: as few digits as the value needs (0.9, 10, 0.025, 2e+06)."""
    if v == 0:
        return "0"
    if abs(v) >= 1e6 or abs(v) < 1e-3:
        return f"{v:.1e}".replace(".0e", "e")
    return f"{v:.4g}"


def bytes_tick(v: float) -> str:
    """A size tick in bytes with SI units: 500 B, 2 kB, 1.5 MB."""
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(v) >= size:
            return f"{v / size:.3g} {unit}"
    return f"{v:.3g} B"


def text_width(s: str, size: float) -> float:
    """An upper estimate of the rendered width of ``s`` at font size ``size`` (px)."""
    return len(s) * size * CHAR


def wrap(s: str, width: float, size: float) -> list[str]:
    """``s`` in lines no wider than ``width`` px, broken after commas or at spaces (a single
    word longer than the width stays whole on its own line)."""
    limit = max(int(width / (size * CHAR)), 1)
    words = re.findall(r"[^ ,]+[ ,]*|[ ,]+", s)  # each word with the separators after it
    lines, line = [], ""
    for w in words:
        if line and len(line + w) > limit:
            lines.append(line.rstrip())
            line = ""
        line += w
    if line:
        lines.append(line.rstrip())
    return lines or [""]


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
        """At least three ticks inside the range: decades on a log axis when there are
        enough, else 1-2-5 or every digit, else linear steps."""
        if self.log:
            for mults in ((1,), (1, 2, 5), tuple(range(1, 10))):
                found = [
                    m * 10.0**e
                    for e in range(math.floor(self.lo) - 1, math.ceil(self.hi) + 1)
                    for m in mults
                    if self.lo <= math.log10(m * 10.0**e) <= self.hi
                ]
                if len(found) >= 3:
                    return found[: max(n * 2, 9)] if len(found) > 12 else found
            return _linear_ticks(10**self.lo, 10**self.hi, n)
        return _linear_ticks(self.lo, self.hi, n)


def _linear_ticks(lo: float, hi: float, n: int) -> list[float]:
    span = hi - lo
    step = 10 ** math.floor(math.log10(span / n))
    for m in (1, 2, 5, 10):
        if span / (step * m) <= n:
            step *= m
            break
    while True:
        first = math.ceil(lo / step) * step
        found = [first + i * step for i in range(int((hi - first) / step + 1e-9) + 1)]
        if len(found) >= 3 or step < span * 1e-6:
            return [round(t, 12) for t in found]
        step /= 2


def _padded(values: Sequence[float], frac: float = 0.05) -> tuple[float, float]:
    lo, hi = min(values), max(values)
    pad = (hi - lo) * frac or abs(hi) * frac or 1.0
    return lo - pad, hi + pad


def _open(name: str, title: str, w: float = W, h: float = H) -> list[str]:
    w, h = math.ceil(w), math.ceil(h)
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


def _lines_text(
    x: float, y: float, lines: Sequence[str], anchor: str = "start", size: int = 10, **kw: str
) -> str:
    """Several lines of text, one ``<tspan>`` each, the first baseline at ``y``."""
    extra = "".join(f' {k.replace("_", "-")}="{escape(v)}"' for k, v in kw.items())
    spans = "".join(
        f'<tspan x="{_num(x)}" dy="{0 if i == 0 else _num(size * 1.25)}">{escape(line)}</tspan>'
        for i, line in enumerate(lines)
    )
    return (
        f'<text x="{_num(x)}" y="{_num(y)}" text-anchor="{anchor}" font-size="{size}"{extra}>'
        f"{spans}</text>"
    )


def _axes(
    parts: list[str],
    xs: Scale | None,
    ys: Scale,
    xlabel: str,
    ylabel: str,
    w: float = W,
    h: float = H,
    x_format: Callable[[float], str] = tick,
    bottom: float | None = None,
) -> None:
    """Axis lines, ticks with grid lines, and labels; ``bottom``: the plot area's lower edge
    (default ``h - PAD_B``; a legend may sit below it)."""
    base = h - PAD_B if bottom is None else bottom
    parts.append(
        f'<line x1="{PAD_L}" y1="{_num(base)}" x2="{w - PAD_R}" y2="{_num(base)}" stroke="#444"/>'
    )
    parts.append(f'<line x1="{PAD_L}" y1="{PAD_T}" x2="{PAD_L}" y2="{_num(base)}" stroke="#444"/>')
    for t in ys.ticks():
        y = ys(t)
        if PAD_T - 1 <= y <= base + 1:
            parts.append(
                f'<line x1="{PAD_L}" y1="{_num(y)}" x2="{w - PAD_R}" y2="{_num(y)}" stroke="#eee"/>'
            )
            parts.append(_text(PAD_L - 4, y + 4, tick(t), "end", 10, **{"class": "tick y"}))
    if xs is not None:
        for t in xs.ticks():
            x = xs(t)
            if PAD_L - 1 <= x <= w - PAD_R + 1:
                parts.append(
                    f'<line x1="{_num(x)}" y1="{_num(base)}" x2="{_num(x)}" y2="{_num(base + 4)}" '
                    'stroke="#444"/>'
                )
                parts.append(_text(x, base + 15, x_format(t), "middle", 10, **{"class": "tick x"}))
    parts.append(_text((PAD_L + w - PAD_R) / 2, base + 32, xlabel))
    mid = (PAD_T + base) / 2
    parts.append(
        f'<text x="14" y="{_num(mid)}" font-size="11" text-anchor="middle" '
        f'transform="rotate(-90 14 {_num(mid)})">{escape(ylabel)}</text>'
    )


def interval_bars(
    name: str,
    title: str,
    items: Sequence[dict],
    ylabel: str,
) -> str:
    """Vertical bars from 0 to ``mean`` with whiskers ``low``–``high``; ``items`` rows carry
    ``label``, ``mean``, ``low``, ``high``, ``accepted`` (filled green) or not (hollow grey).
    Labels under the bars wrap to the bar's width."""
    step = (W - PAD_L - PAD_R) / max(len(items), 1)
    labels = [wrap(it["label"], step - 6, 10) for it in items]
    extra = 12.5 * (max((len(x) for x in labels), default=1) - 1)
    h = H + extra
    values = [0.0] + [v for it in items for v in (it["mean"], it["low"], it["high"])]
    ys = Scale(*_padded(values, 0.1), H - PAD_B, PAD_T)
    parts = _open(name, title, W, h)
    _axes(parts, None, ys, "", ylabel, W, h, bottom=H - PAD_B)
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
        parts.append(_lines_text(cx, H - PAD_B + 14, labels[i], "middle", 10))
    parts.append("</svg>")
    return "".join(parts)


def hbars(
    name: str,
    title: str,
    items: Sequence[tuple[str, float, float | None]],
    xlabel: str,
) -> str:
    """Horizontal bars (label, value, optional ± error), largest first as given; the label
    margin fits the longest label (up to a third of the width, longer ones wrap)."""
    items = list(items)[:20]
    most = W / 3
    labels = [wrap(label, most, 10) for label, _, _ in items]
    left = 12 + min(max((text_width(x, 10) for ls in labels for x in ls), default=40), most)
    rows = [max(len(ls), 1) * 13 + 6 for ls in labels]
    h = PAD_T + PAD_B + max(sum(rows), 18)
    values = [0.0] + [v + (e or 0) for _, v, e in items] + [v - (e or 0) for _, v, e in items]
    xs = Scale(*_padded(values), left, W - PAD_R)
    parts = _open(name, title, W, h)
    zero = xs(0.0)
    parts.append(
        f'<line x1="{_num(zero)}" y1="{PAD_T}" x2="{_num(zero)}" y2="{h - PAD_B}" stroke="#444"/>'
    )
    for t in xs.ticks():
        parts.append(_text(xs(t), h - PAD_B + 14, tick(t), size=10, **{"class": "tick x"}))
    parts.append(_text((left + W - PAD_R) / 2, h - 6, xlabel))
    y = PAD_T
    for (label, v, err), lines, row_h in zip(items, labels, rows):
        a, b = sorted((zero, xs(v)))
        mid = y + row_h / 2
        parts.append(
            f'<rect class="mark" x="{_num(a)}" y="{_num(mid - 6)}" width="{_num(max(b - a, 1))}" '
            f'height="12" fill="{NEUTRAL}"><title>{escape(label)}: {fmt(v)}</title></rect>'
        )
        if err:
            parts.append(
                f'<line x1="{_num(xs(v - err))}" y1="{_num(mid)}" x2="{_num(xs(v + err))}" '
                f'y2="{_num(mid)}" stroke="#222"/>'
            )
        first = mid + 4 - (len(lines) - 1) * 6.25
        parts.append(_lines_text(left - 6, first, lines, "end", 10))
        y += row_h
    parts.append("</svg>")
    return "".join(parts)


def _place_labels(
    points: Sequence[tuple[float, float, str]], area: tuple[float, float, float, float]
) -> list[tuple[float, float, str, str] | None]:
    """Where each point's label goes (x, y, text, anchor), avoiding the labels placed before
    it and staying inside ``area`` (x0, y0, x1, y1); None when there is no free place (the
    point's hover title still names it)."""
    placed: list[tuple[float, float, float, float]] = []
    out: list[tuple[float, float, str, str] | None] = []
    x0, y0, x1, y1 = area
    for x, y, label in points:
        w, h = text_width(label, 10), 11
        spot = None
        for dx, dy in (
            (8, -7),
            (8, 12),
            (-8, -7),
            (-8, 12),
            (8, -19),
            (8, 24),
            (-8, -19),
            (-8, 24),
        ):
            left = x + dx if dx > 0 else x + dx - w
            box = (left, y + dy - h + 2, left + w, y + dy + 2)
            inside = box[0] >= x0 and box[2] <= x1 and box[1] >= y0 and box[3] <= y1
            free = all(
                box[2] <= b[0] or box[0] >= b[2] or box[3] <= b[1] or box[1] >= b[3] for b in placed
            )
            if inside and free:
                placed.append(box)
                spot = (x + dx, y + dy, label, "start" if dx > 0 else "end")
                break
        out.append(spot)
    return out


def scatter(
    name: str,
    title: str,
    points: Sequence[dict],
    xlabel: str,
    ylabel: str,
    log_x: bool = False,
    x_format: Callable[[float], str] = tick,
    greater_is_better: bool = True,
) -> str:
    """Points with ``x`` (a cost: lower is better), ``y``, ``id``, ``label``; every point is
    labelled with its candidate id (``final`` / ``baseline`` added), ``front`` points (on the
    run's front over all its dimensions) are filled blue, the rest grey, and the dashed line is
    the front of the two quantities shown."""
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
    ys = Scale(*_padded([p["y"] for p in pts], 0.12), H - PAD_B, PAD_T)
    parts = _open(name, title)
    _axes(parts, xs, ys, xlabel, ylabel, x_format=x_format)
    sign = 1 if greater_is_better else -1
    front2, best = [], -math.inf
    for p in sorted(pts, key=lambda p: (p["x"], -sign * p["y"])):
        if sign * p["y"] > best:
            front2.append(p)
            best = sign * p["y"]
    if len(front2) > 1:
        path = " ".join(f"{_num(xs(p['x']))},{_num(ys(p['y']))}" for p in front2)
        parts.append(
            f'<polyline points="{path}" fill="none" stroke="{NEUTRAL}" stroke-dasharray="4 3"/>'
        )
    # one label per place: points drawn on top of each other share it ("#2, #3")
    spots: dict[tuple[int, int], list[dict]] = {}
    for p in pts:
        spots.setdefault((round(xs(p["x"]) / 4), round(ys(p["y"]) / 4)), []).append(p)
    for p in pts:
        x, y = xs(p["x"]), ys(p["y"])
        color = NEUTRAL if p.get("front") else REJECT
        parts.append(
            f'<circle class="mark" cx="{_num(x)}" cy="{_num(y)}" r="5" fill="{color}" '
            f'fill-opacity="0.8"><title>#{p.get("id", "")} {escape(p["label"])}: '
            f"{fmt(p['y'], 4)} at {x_format(p['x'])}</title></circle>"
        )
        if p.get("incumbent"):
            parts.append(
                f'<circle cx="{_num(x)}" cy="{_num(y)}" r="9" fill="none" '
                f'stroke="{ACCENT}" stroke-width="2"/>'
            )
    labels = []
    for group in spots.values():
        ids = ", ".join(f"#{p.get('id', '')}" for p in group)
        roles = [r for p in group for r in ("final",) if p.get("incumbent")]
        roles += [r for p in group for r in ("baseline",) if p.get("baseline")]
        text = ids + (" " + " ".join(roles) if roles else "")
        labels.append((xs(group[0]["x"]), ys(group[0]["y"]), text, bool(roles)))
    labels.sort(key=lambda t: not t[3])  # final and baseline get the first choice of place
    area = (PAD_L + 1, PAD_T - 12, W - 2, H - PAD_B - 1)
    for spot, (_, _, text, _) in zip(
        _place_labels([(x, y, t) for x, y, t, _ in labels], area), labels
    ):
        if spot is not None:
            fill = ACCENT if "final" in text else "#333"
            parts.append(
                _text(spot[0], spot[1], spot[2], spot[3], 10, fill=fill, **{"class": "point-label"})
            )
    parts.append("</svg>")
    return "".join(parts)


def lines(
    name: str,
    title: str,
    series: Sequence[dict],
    xlabel: str,
    ylabel: str,
    dashed_means: str = "",
    solid_means: str = "",
) -> str:
    """One polyline per series (``label``, ``values`` over x = 1, 2, …, ``group``: series of a
    group share a colour and a legend entry, ``dashed``). The legend sits below the plot, one
    entry per group with its whole label (wrapped); ``solid_means`` / ``dashed_means`` name
    the two line styles."""
    series = [s for s in series if any(v is not None for v in s["values"])]
    if not series:
        return ""
    allv = [v for s in series for v in s["values"] if v is not None]
    n = max(len(s["values"]) for s in series)
    groups = list(dict.fromkeys(s.get("group", s["label"]) for s in series))
    names = {s.get("group", s["label"]): s.get("legend", s["label"]) for s in series}
    legend = [(g, wrap(str(names[g]), W - PAD_L - PAD_R - 24, 10)) for g in groups]
    styles = bool(dashed_means and any(s.get("dashed") for s in series))
    legend_h = sum(len(ls) * 12.5 + 4 for _, ls in legend) + (16 if styles else 0)
    h = H + legend_h
    xs = Scale(1, max(n, 2), PAD_L, W - PAD_R)
    ys = Scale(*_padded(allv), H - PAD_B, PAD_T)
    parts = _open(name, title, W, h)
    _axes(parts, xs, ys, xlabel, ylabel, W, h, bottom=H - PAD_B)
    for s in series:
        g = s.get("group", s["label"])
        color = SERIES[groups.index(g) % len(SERIES)]
        pts = [
            f"{_num(xs(i + 1))},{_num(ys(v))}" for i, v in enumerate(s["values"]) if v is not None
        ]
        dash = ' stroke-dasharray="6 4"' if s.get("dashed") else ""
        parts.append(
            f'<polyline class="mark" points="{" ".join(pts)}" fill="none" stroke="{color}" '
            f'stroke-width="2"{dash}><title>{escape(s["label"])}</title></polyline>'
        )
    y = H + 6
    if styles:
        for k, (what, dash) in enumerate(((solid_means, ""), (dashed_means, "6 4"))):
            x = PAD_L + k * 160
            parts.append(
                f'<line x1="{x}" y1="{_num(y - 4)}" x2="{x + 24}" y2="{_num(y - 4)}" '
                f'stroke="#444" stroke-width="2" stroke-dasharray="{dash}"/>'
            )
            parts.append(_text(x + 30, y, what, "start", 10))
        y += 16
    for k, (_, label) in enumerate(legend):
        color = SERIES[k % len(SERIES)]
        parts.append(f'<rect x="{PAD_L}" y="{_num(y - 9)}" width="10" height="10" fill="{color}"/>')
        parts.append(_lines_text(PAD_L + 16, y, label, "start", 10, **{"class": "legend"}))
        y += len(label) * 12.5 + 4
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


def _color(v: float, peak: float, signed: bool) -> str:
    t = abs(v) / peak
    if signed and v < 0:
        return f"rgb(255,{int(255 - 200 * t)},{int(255 - 200 * t)})"
    return f"rgb({int(255 - 220 * t)},{int(255 - 160 * t)},255)"


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
    """A grid of cells coloured by value (blue scale; red/blue around 0 when ``signed``).
    Row labels get the margin they need; column labels stand upright when wider than a
    cell."""
    m = [list(r) for r in matrix]
    nr, nc = len(m), max((len(r) for r in m), default=0)
    if not nr or not nc:
        return ""
    left = 8 + (max(text_width(r, 10) for r in rows) + 6 if rows else 0)
    guess = cell or max(4, min(40, int((W - left - 8) // nc), 320 // nr))
    upright = bool(cols) and max(text_width(c, 9) for c in cols) > guess - 2
    top = 8 + ((max(text_width(c, 9) for c in cols) + 6 if upright else 16) if cols else 0)
    cell = guess
    w, h = left + cell * nc + 8, top + cell * nr + 8
    peak = max((abs(v) for r in m for v in r), default=1.0) or 1.0
    parts = _open(name, title, w, h)
    for i, r in enumerate(m):
        for j, v in enumerate(r):
            t = abs(v) / peak
            parts.append(
                f'<rect class="mark" x="{_num(left + j * cell)}" y="{_num(top + i * cell)}" '
                f'width="{cell}" height="{cell}" fill="{_color(v, peak, signed)}"><title>'
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
            parts.append(_text(left - 6, top + (i + 0.5) * cell + 4, rows[i], "end", 10))
    for j, c in enumerate(cols or []):
        x = left + (j + 0.5) * cell
        if upright:
            parts.append(
                f'<text x="{_num(x + 3)}" y="{_num(top - 4)}" text-anchor="start" font-size="9" '
                f'transform="rotate(-90 {_num(x + 3)} {_num(top - 4)})">{escape(c)}</text>'
            )
        else:
            parts.append(_text(x, top - 6, c, size=9))
    parts.append("</svg>")
    return "".join(parts)


def signal_map(
    name: str,
    title: str,
    signal: Sequence[Sequence[float]],
    attribution: Sequence[Sequence[float]],
) -> str:
    """A sequence input and its attribution on one time axis: the signal (one line per
    channel) above, the attribution of each channel and step as a colour strip below (blue:
    towards the prediction, red: against)."""
    sig = [list(map(float, ch)) for ch in signal]
    att = [list(map(float, ch)) for ch in attribution]
    steps = max(len(ch) for ch in sig)
    plot_b = 170
    strip_h = max(10, min(24, 60 // max(len(att), 1)))
    h = plot_b + 8 + strip_h * len(att) + 40
    xs = Scale(-0.5, steps - 0.5, PAD_L, W - PAD_R)
    ys = Scale(*_padded([v for ch in sig for v in ch], 0.08), plot_b, PAD_T)
    parts = _open(name, title, W, h)
    parts.append(f'<line x1="{PAD_L}" y1="{PAD_T}" x2="{PAD_L}" y2="{plot_b}" stroke="#444"/>')
    for t in ys.ticks(4):
        y = ys(t)
        if PAD_T - 1 <= y <= plot_b + 1:
            parts.append(
                f'<line x1="{PAD_L}" y1="{_num(y)}" x2="{W - PAD_R}" y2="{_num(y)}" stroke="#eee"/>'
            )
            parts.append(_text(PAD_L - 4, y + 4, tick(t), "end", 10, **{"class": "tick y"}))
    for k, ch in enumerate(sig):
        pts = " ".join(f"{_num(xs(i))},{_num(ys(v))}" for i, v in enumerate(ch))
        parts.append(
            f'<polyline class="mark" points="{pts}" fill="none" stroke="{SERIES[k % len(SERIES)]}" '
            f'stroke-width="1.5"><title>input, channel {k}</title></polyline>'
        )
    mid = (PAD_T + plot_b) / 2
    parts.append(
        f'<text x="14" y="{_num(mid)}" font-size="11" text-anchor="middle" '
        f'transform="rotate(-90 14 {_num(mid)})">input</text>'
    )
    peak = max((abs(v) for ch in att for v in ch), default=1.0) or 1.0
    top = plot_b + 8
    width = (W - PAD_L - PAD_R) / steps
    for k, ch in enumerate(att):
        for i, v in enumerate(ch):
            parts.append(
                f'<rect class="mark" x="{_num(PAD_L + i * width)}" y="{_num(top + k * strip_h)}" '
                f'width="{_num(width + 0.3)}" height="{strip_h}" fill="{_color(v, peak, True)}">'
                f"<title>step {i}{f', channel {k}' if len(att) > 1 else ''}: {fmt(v)}</title>"
                "</rect>"
            )
    bottom = top + strip_h * len(att)
    parts.append(_text(PAD_L - 4, (top + bottom) / 2 + 4, "attr.", "end", 10))
    for t in Scale(0, steps - 1, 0, 1).ticks(8):
        x = xs(t)
        parts.append(
            f'<line x1="{_num(x)}" y1="{_num(bottom)}" x2="{_num(x)}" y2="{_num(bottom + 4)}" '
            'stroke="#444"/>'
        )
        parts.append(_text(x, bottom + 15, tick(t), size=10, **{"class": "tick x"}))
    parts.append(_text((PAD_L + W - PAD_R) / 2, bottom + 32, "time step"))
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
    """A layered graph: one column per stage position, nodes coloured by decision, each node
    as wide as its column's longest label allows (longer labels wrap)."""
    columns: dict[int, list[dict]] = {}
    for n in nodes:
        columns.setdefault(n["position"], []).append(n)
    order = sorted(columns)
    texts = {n["id"]: f"#{n['id']} {n['label']}" for n in nodes}
    widths = {
        pos: min(max(text_width(texts[n["id"]], 9) for n in columns[pos]) + 12, 200)
        for pos in order
    }
    wrapped = {n["id"]: wrap(texts[n["id"]], widths[n["position"]] - 12, 9) for n in nodes}
    heights = {i: 7 + 11.5 * len(ls) for i, ls in wrapped.items()}
    gap = 40
    where, x = {}, 16.0
    tallest = 0.0
    for pos in order:
        y = float(PAD_T)
        for n in columns[pos]:
            where[n["id"]] = (x, y)
            y += heights[n["id"]] + 8
        tallest = max(tallest, y)
        x += widths[pos] + gap
    w = max(W, x - gap + 16)
    h = tallest + PAD_T if columns else 60
    parts = _open(name, title, w, h)
    for a, b in edges:
        if a in where and b in where:
            (x0, y0), (x1, y1) = where[a], where[b]
            parts.append(
                f'<line x1="{_num(x0 + widths[_pos(nodes, a)])}" y1="{_num(y0 + 9)}" '
                f'x2="{_num(x1)}" y2="{_num(y1 + 9)}" stroke="#bbb"/>'
            )
    colors = {"accepted": ACCEPT, "baseline": NEUTRAL, "rejected": REJECT}
    for n in nodes:
        x, y = where[n["id"]]
        color = colors.get(n["decision"], "#ffb300")
        parts.append(
            f'<rect class="mark" x="{_num(x)}" y="{_num(y)}" width="{_num(widths[n["position"]])}" '
            f'height="{_num(heights[n["id"]])}" rx="4" fill="{color}">'
            f"<title>#{n['id']} {escape(n['label'])} ({escape(n['stage'])}: "
            f"{escape(str(n['decision']))})</title></rect>"
        )
        parts.append(_lines_text(x + 6, y + 12, wrapped[n["id"]], "start", 9, fill="#fff"))
    parts.append("</svg>")
    return "".join(parts)


def _pos(nodes: Sequence[dict], cid: int) -> int:
    return next(n["position"] for n in nodes if n["id"] == cid)
