"""``render``: the report's data (:func:`tidian.report.collect.collect`) as one self-contained
HTML page — inline CSS and SVG, no script, no network. It formats; it computes nothing that
the data does not hold (beyond unit conversions)."""

from __future__ import annotations

import re
from html import escape
from typing import Any

import numpy as np

from tidian.report import svg
from tidian.report.svg import fmt
from tidian.runs import confirmed_gain, gain_text, short_text, stage_note

CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;color:#222;margin:0;
background:#fafafa}
main{max-width:1100px;margin:0 auto;padding:16px 24px 64px;background:#fff}
h1{font-size:22px;margin:8px 0}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #ddd}
h3{font-size:15px;margin:16px 0 6px}
table{border-collapse:collapse;margin:6px 0 12px;font-size:13px}
th,td{border-bottom:1px solid #eee;padding:3px 8px;text-align:right;vertical-align:top}
th:first-child,td:first-child,td.l{text-align:left}
.accepted{color:#2e7d32;font-weight:600}.rejected{color:#757575}.baseline{color:#1565c0}
.muted{color:#777}.big{font-size:20px;font-weight:600}
pre{background:#f4f4f4;padding:8px;overflow:auto;font-size:12px}
nav a{margin-right:10px}svg.plot{max-width:100%;height:auto;display:block;margin:6px 0}
.grid{display:flex;flex-wrap:wrap;gap:16px}.grid>div{flex:1 1 480px;min-width:0}
.scroll{overflow-x:auto;max-width:100%}
p,li,h1,h3,code{overflow-wrap:anywhere}
@media (max-width:700px){main{padding:8px 10px 40px}svg.plot{min-width:520px}
th,td{padding:3px 5px;min-width:4em}td.l{min-width:10em}}
"""


def _q(quality: dict[str, Any] | None) -> str:
    if not quality or quality.get("mean") is None:
        return "—"
    return f"{quality['mean']:.4f} [{quality['low']:.4f}, {quality['high']:.4f}]"


def _us(ms: float | None) -> str:
    return "—" if ms is None else f"{ms * 1000:,.1f} µs"


def _int(v: Any) -> str:
    return "—" if v is None else f"{int(v):,}"


def _table(head: list[str], rows: list[list[str]], cls: str = "") -> str:
    h = "".join(f"<th>{escape(c)}</th>" for c in head)
    body = "".join("<tr>" + "".join(rows_) + "</tr>" for rows_ in rows)
    return (
        f'<div class="scroll"><table class="{cls}"><thead><tr>{h}</tr></thead>'
        f"<tbody>{body}</tbody></table></div>"
    )


def _td(text: Any, field: str | None = None, cls: str = "") -> str:
    attrs = (f' data-field="{field}"' if field else "") + (f' class="{cls}"' if cls else "")
    return f"<td{attrs}>{escape(str(text))}</td>"


def _headline(d: dict[str, Any]) -> str:
    h = d["headline"]
    base, final = h.get("baseline"), h.get("final")
    if not base:
        return "<p>The run has no finished baseline yet.</p>"
    rows = []
    for name, c in (("baseline", base), ("final", final)):
        if c is None:
            continue
        cost = c["cost"]
        rows.append(
            [
                _td(f"{name}: #{c['id']} {c['label']}", cls="l"),
                _td(_q(c["quality"]), f"{name}-quality"),
                _td(_int(cost["params"]), f"{name}-params"),
                _td(_int(cost["bytes"]), f"{name}-bytes"),
                _td(_us(cost["latency_ms"]), f"{name}-latency"),
                _td(cost["runtime"] or "—"),
            ]
        )
    out = _table(
        [
            "",
            f"{d['metric']} (mean [95% CI], test)",
            "parameters",
            "bytes",
            "batch-1 latency",
            "runtime",
        ],
        rows,
        "headline",
    )
    confirmation = h.get("confirmation") or {}
    lines = _confirmed(confirmation, d["metric"])
    if h.get("gain"):
        g = h["gain"]
        units = (
            f"cross-validation units ({final['quality']['folds']} folds; corrected resampled "
            "t-interval)"
            if final["quality"].get("folds")
            else "seeds"
        )
        confirmed = "gate" in confirmation
        at = "at selection: " if confirmed else ""
        big = "" if confirmed else ' class="big"'
        lines.append(
            f'{at}<span{big} data-field="gain">{gain_text(g)}</span> {escape(d["metric"])}, '
            f"final − baseline paired over {g['n']} {units} of the stages"
        )
        if confirmed:
            lines[-1] += (
                f"; the optimism of selection (selection-time gain − confirmed gain): "
                f'<span data-field="optimism">{confirmation["optimism"]:+.4f}</span>'
            )
    if found := h.get("found"):
        lines.append(_found(found, final))
    if h.get("speedup"):
        note = "" if h.get("same_runtime") else " (measured on different runtimes)"
        speed, size = h["speedup"], h["size_ratio"]
        lines.append(
            "final vs baseline at batch 1: "
            f'<span data-field="speedup">{max(speed, 1 / speed):.2f}×</span> '
            f"{'faster' if speed >= 1 else 'slower'}, "
            f'<span data-field="size-ratio">{max(size, 1 / size):.2f}×</span> '
            f"{'smaller' if size >= 1 else 'larger'} on disk{note}"
        )
    return out + "".join(f"<p>{line}</p>" for line in lines)


def _found(found: dict[str, Any], final: dict[str, Any] | None) -> str:
    """The best candidate on validation that the gate did not keep: what a search without a
    gate would have shipped, its test score beside the final's, and why it was not kept."""
    q = found["quality"]
    gate = found.get("gate") or {}
    why = (
        f"its gain {gate['gain']:+.4f} [{gate['low']:+.4f}, {gate['high']:+.4f}] was not shown "
        f"(p={gate['p_adjusted']:.2g})"
        if gate and not gate.get("accepted")
        else escape(found["reason"] or found["decision"] or "not kept")
    )
    test = f"test {q['mean']:.4f}" + (
        f" against the final's {final['quality']['mean']:.4f}" if final else ""
    )
    return (
        f'best on validation, not kept: <span data-field="found">#{found["id"]} '
        f"{escape(found['label'])}</span> (validation {q['val_mean']:.4f}, {test}): {why}"
    )


def _confirmed(c: dict[str, Any] | None, metric: str) -> list[str]:
    """The headline's first line: the confirmation's paired gain (fresh seeds, the holdout),
    or why the run has none."""
    if not c:
        return []
    if "skipped" in c:
        return [f"not confirmed on fresh seeds: {escape(c['skipped'])}"]
    where = (
        f"{c['rows']} unseen rows (the holdout, read by no stage)"
        if c["scored_on"] == "holdout"
        else f"{c['rows']} test rows (no holdout: {escape(str(c.get('no_holdout')))})"
    )
    verdict = "confirmed" if c["held"] else "did not hold up"
    return [
        f'<span class="big" data-field="confirmed-gain">{gain_text(confirmed_gain(c))}</span> '
        f"{escape(metric)}, final − baseline re-run on {len(c['seeds'])} fresh seeds and "
        f'scored on {where}: <b data-field="confirmed">{verdict}</b>',
        escape(c["summary"]),
    ]


def _stages(d: dict[str, Any]) -> str:
    parts = []
    items = [
        {
            "label": f"{w['position']}. {w['stage']}",
            "mean": w["gain"]["mean"],
            "low": w["gain"]["low"],
            "high": w["gain"]["high"],
            "accepted": w["accepted"],
        }
        for w in d["waterfall"]
        if w["gain"]
    ]
    if items:
        parts.append(
            svg.interval_bars(
                "waterfall",
                "Each stage's paired gain over the incumbent before it",
                items,
                f"Δ {d['metric']}",
            )
        )
        parts.append(
            '<p class="muted">Filled: the stage changed the incumbent (the step it made). '
            "Hollow: turned down — the closest candidate's gain, with the reason below.</p>"
        )
    flipped = d.get("candidate_flips") or {}
    for st in d["stages"]:
        rows, seeds = [], None
        for c in st["candidates"]:
            f = flipped.get(str(c["id"]))
            changed = f"+{f['newly_right']} / −{f['newly_wrong']}" if f else "—"
            seeds = len(f["seeds"]) if f else seeds
            gate = c.get("gate") or {}
            gain = (
                f"{gate['gain']:+.4f} [{gate['low']:+.4f}, {gate['high']:+.4f}]"
                if gate.get("gain") is not None
                else "—"
            )
            decision = c["decision"] or c["status"]
            rows.append(
                [
                    _td(f"#{c['id']}", cls="l"),
                    _td(c["label"], cls="l"),
                    _td(_q(c["quality"])),
                    _td(gain),
                    _td(_us(c["cost"]["latency_ms"])),
                    _td(_int(c["cost"]["bytes"])),
                    _td(changed),
                    _td(decision, cls=decision),
                    _td(c["reason"] or "", cls="l muted"),
                ]
            )
        cfg = short_text(st["config"]) if st["config"] else ""
        said = stage_note(st.get("report"))
        parts.append(
            f"<h3>{st['position']}. {escape(st['name'])}</h3>"
            + (f'<p class="muted">{escape(cfg)}</p>' if cfg else "")
            + (f"<p><strong>{escape(said)}</strong></p>" if said else "")
        )
        flips_head = (
            f"test rows right / wrong vs parent (summed over {seeds} seeds)"
            if seeds
            else "test rows right / wrong vs parent"
        )
        parts.append(
            _table(
                [
                    "id",
                    "candidate",
                    "quality",
                    "gain (gate)",
                    "latency",
                    "bytes",
                    flips_head,
                    "decision",
                    "why",
                ],
                rows,
            )
        )
    return "".join(parts)


def _multitask(d: dict[str, Any]) -> str:
    """Each further target of a multi-task candidate against its single-task model."""
    parts = []
    for m in d.get("multitask", []):
        rows = [
            [
                _td(name, cls="l"),
                _td(t["metric"]),
                _td(fmt(t["multitask_mean"], 4)),
                _td(fmt(t["single_task_mean"], 4)),
                _td(len(t["multitask"])),
            ]
            for name, t in m["targets"].items()
        ]
        parts.append(f"<h3>#{m['candidate']} {escape(m['label'])}: further targets</h3>")
        parts.append(
            _table(["target", "metric", "multi-task (test)", "alone (test)", "seeds"], rows)
        )
    return "".join(parts)


def _pareto(d: dict[str, Any]) -> str:
    base_id = (d["headline"].get("baseline") or {}).get("id")
    pts = [{**p, "y": p["quality"], "baseline": p["id"] == base_id} for p in d["pareto"]]
    better = d.get("greater_is_better", True)
    lat = svg.scatter(
        "pareto-latency",
        "Quality vs batch-1 latency",
        [{**p, "x": (p["latency_ms"] or 0) * 1000} for p in pts],
        "batch-1 latency (µs, log scale)",
        d["metric"],
        log_x=True,
        greater_is_better=better,
    )
    size = svg.scatter(
        "pareto-size",
        "Quality vs bytes",
        [{**p, "x": p["bytes"]} for p in pts],
        "size on disk (log scale)",
        d["metric"],
        log_x=True,
        x_format=svg.bytes_tick,
        greater_is_better=better,
    )
    return (
        f'<div class="grid"><div>{lat}</div><div>{size}</div></div>'
        '<p class="muted">Each point is a candidate (#id; hover for its label). Blue: on the '
        "run's Pareto front over quality, latency and parameters within the recipe's "
        "constraints (grey: dominated); the dashed line joins the best quality at each cost "
        "of the two quantities plotted; ringed red: the final model.</p>"
    )


def _data_curves(d: dict[str, Any]) -> str:
    """Quality against the share of training data (learning_curve stages)."""
    parts = []
    for c in d.get("learning_curves", []):
        rows = {p["fraction"]: p["rows"] for p in c["points"]}
        parts.append(
            svg.curve(
                f"learning-curve-{c['position']}",
                "Test quality against training rows",
                [(p["rows"], p["mean"], p["low"], p["high"]) for p in c["points"]],
                "training rows",
                c["metric"],
            )
        )
        last = c["points"][-1]
        prev = c["points"][-2] if len(c["points"]) > 1 else None
        trend = (
            f" From {prev['rows']} to {last['rows']} rows: {last['mean'] - prev['mean']:+.4f}."
            if prev
            else ""
        )
        parts.append(
            f"<p class='muted'>{escape(c['model'].get('name', '?'))} trained from scratch on "
            f"stratified shares {sorted(rows)} of the training split, {len(c['seeds'])} seeds "
            f"each (mean and 95% CI).{trend}</p>"
        )
    return "".join(parts)


def _curves(d: dict[str, Any]) -> str:
    data_curves = _data_curves(d)
    if not d["curves"]:
        return data_curves or (
            "<p class='muted'>No per-epoch history (compression-only candidates).</p>"
        )
    loss = svg.lines(
        "curves-loss",
        "Training and validation loss per epoch (mean over seeds)",
        [
            {
                "label": f"#{c['candidate']} {c['label']} — {kind}",
                "legend": f"#{c['candidate']} {c['label']}",
                "values": c[key],
                "group": c["candidate"],
                "dashed": key == "val_loss",
            }
            for c in d["curves"]
            for key, kind in (("train_loss", "training"), ("val_loss", "validation"))
        ],
        "epoch",
        "loss",
        solid_means="training loss",
        dashed_means="validation loss",
    )
    metric = svg.lines(
        "curves-metric",
        f"Validation {d['metric']} per epoch",
        [
            {
                "label": f"#{c['candidate']} {c['label']}",
                "values": c["val_metric"],
                "group": c["candidate"],
            }
            for c in d["curves"]
        ],
        "epoch",
        f"validation {d['metric']}",
    )
    return f'<div class="grid"><div>{loss}</div><div>{metric}</div></div>' + data_curves


def _errors(d: dict[str, Any]) -> str:
    parts = []
    if "confusion" in d:
        c = d["confusion"]
        parts.append(
            f"<h3>Confusion matrix (test, summed over {c['seeds']} seeds; rows: true)</h3>"
        )
        parts.append(
            svg.heatmap(
                "confusion", "Confusion matrix", c["matrix"], rows=c["classes"], cols=c["classes"]
            )
        )
    if "reliability" in d:
        r = d["reliability"]
        parts.append(
            f"<h3>Reliability diagram — ECE <span data-field='ece'>{r['ece']:.4f}"
            f"</span> (test, {r['seeds']} seeds pooled)</h3>"
        )
        parts.append(svg.reliability("reliability", "Reliability diagram", r["bins"]))
    e = d.get("errors")
    if e:
        parts.append(f"<h3>Most confidently wrong (seed {e['seed']}): {e['errors']} errors</h3>")
        parts.append(
            _table(
                ["test row", "label", "predicted", "confidence"],
                [
                    [
                        _td(w["row"], cls="l"),
                        _td(w["label"]),
                        _td(w["predicted"]),
                        _td(f"{w['confidence']:.3f}"),
                    ]
                    for w in e["confident_wrong"]
                ],
            )
        )
        parts.append("<h3>Most confused pairs</h3>")
        parts.append(
            _table(
                ["true", "predicted", "count"],
                [
                    [_td(p["true"], cls="l"), _td(p["predicted"]), _td(p["count"])]
                    for p in e["confused_pairs"]
                ],
            )
        )
        if e.get("slices") and len({round(x["accuracy"], 9) for x in e["slices"]}) > 1:
            # (hidden when every slice scores the same: nothing is weaker than the rest)
            parts.append(
                f"<h3>Weakest feature slices (seed {e['seed']}; quantile bins in the data's "
                "units, categories)</h3>"
            )
            parts.append(
                _table(
                    ["feature", "slice", "rows", "accuracy", "vs overall"],
                    [
                        [
                            _td(s["feature"], cls="l"),
                            _td(s["slice"]),
                            _td(s["count"]),
                            _td(f"{s['accuracy']:.3f}"),
                            _td(f"{s['gap']:+.3f}"),
                        ]
                        for s in e["slices"][:10]
                    ],
                )
            )
    f = d.get("flips")
    if f:
        parts.append(
            f"<h3>Against the baseline (#{f['against']}, seed {f['seed']})</h3><p>newly right: "
            f"{len(f['newly_right'])}, newly wrong: {len(f['newly_wrong'])} (net {f['net']:+d})."
            f" Newly wrong rows: {escape(str(f['newly_wrong'][:20]))}</p>"
        )
    r = d.get("residuals")
    if r:
        parts.append(f"<p>Residuals on test: mean {r['mean']:.4g}, std {r['std']:.4g}.</p>")
    return "".join(parts) or "<p class='muted'>Not computed.</p>"


def _attribution_map(
    name: str,
    title: str,
    values: Any,
    a: dict[str, Any],
    tokens: list[str] | None,
    signal: Any = None,
) -> str:
    arr = np.asarray(values, dtype=float)
    kind = a["input_kind"]
    if kind == "vector":
        names = a["feature_names"] or [f"x{j}" for j in range(arr.size)]
        order = np.argsort(-np.abs(arr))[:12]
        return svg.hbars(
            name, title, [(names[j], float(arr[j]), None) for j in order], "attribution"
        )
    if kind == "text":
        keep = [i for i, t in enumerate(tokens or []) if t not in ("[PAD]", "<pad>")]
        keep = keep or list(range(arr.size))
        return svg.heatmap(
            name,
            title,
            [arr[keep].tolist()],
            cols=[tokens[i] for i in keep] if tokens else None,
            signed=True,
            annotate=False,
            cell=max(8, min(40, 600 // len(keep))),
        )
    if kind == "image":  # channels summed: one value per pixel
        grid = arr.sum(0) if arr.ndim == 3 else arr
        cell = max(4, 240 // max(grid.shape))
    else:  # a sequence: the input signal with its attribution under it, one time axis
        grid = _channels_by_time(arr)
        if signal is not None:
            return svg.signal_map(name, title, _channels_by_time(np.asarray(signal)), grid)
        cell = max(4, min(24, 600 // grid.shape[1]))
    return svg.heatmap(name, title, grid.tolist(), signed=True, annotate=False, cell=cell)


def _channels_by_time(arr: np.ndarray) -> np.ndarray:
    """A sequence sample as (channels, steps): time along the longer axis."""
    grid = np.atleast_2d(np.asarray(arr, dtype=float).squeeze())
    return grid.T if grid.shape[0] > grid.shape[1] else grid


def _attributions(d: dict[str, Any]) -> str:
    a = d.get("attributions")
    if not a:
        return f"<p class='muted'>{escape(d['skipped'].get('attributions', 'Not computed.'))}</p>"
    if a.get("gradient_free"):
        parts = [f"<p class='muted'>{escape(a['gradient_free'])}</p>"]
        return "".join(parts + _permutation(a, d))
    ag = a["agreement"]
    parts = [
        f"<p>Integrated Gradients ({a['n_steps']} steps, zero baseline) and saliency for the "
        f"final model (first seed). Agreement of the two: Spearman "
        f"<span data-field='agreement'>{fmt(ag['mean_spearman'])}</span>, top-{ag['top']} "
        f"overlap {fmt(ag['mean_top_overlap'])}. Low agreement: read neither map closely.</p>"
    ]
    for k, ex in enumerate(a["examples"]):
        parts.append(
            f"<h3>test row {ex['row']}: label {escape(str(ex['label']))}, predicted "
            f"{escape(str(ex['predicted']))}</h3><p class='muted'>IG completeness gap "
            f"{ex['relative_delta']:.1%} of F(x) − F(baseline); Spearman vs saliency "
            f"{fmt(ex['spearman'])}</p>"
        )
        tokens = ex.get("tokens")
        signal = ex.get("input")
        ig = _attribution_map(
            f"attribution-ig-{k}",
            "Integrated Gradients",
            ex["integrated_gradients"],
            a,
            tokens,
            signal,
        )
        sal = _attribution_map(
            f"attribution-saliency-{k}", "Saliency", ex["saliency"], a, tokens, signal
        )
        parts.append(
            '<div class="grid"><div><p class="muted">Integrated Gradients (blue: towards the '
            f'prediction, red: against)</p>{ig}</div><div><p class="muted">Saliency '
            f"(|gradient|)</p>{sal}</div></div>"
        )
    return "".join(parts + _permutation(a, d))


def _permutation(a: dict[str, Any], d: dict[str, Any]) -> list[str]:
    if not a.get("permutation"):
        return []
    return [
        "<h3>Permutation importance (drop in the metric when a column is shuffled, test)</h3>",
        svg.hbars(
            "permutation",
            "Permutation importance",
            [(p["feature"], p["drop"], p["std"]) for p in a["permutation"]],
            f"drop in {d['metric']}",
        ),
    ]


def _tuning(d: dict[str, Any]) -> str:
    if not d["tuning"]:
        return "<p class='muted'>No tuning stage in this run.</p>"
    parts = []
    for t in d["tuning"]:
        imp = sorted(t["importances"].items(), key=lambda kv: -kv[1])
        parts.append(
            svg.hbars(
                f"importances-{t['position']}",
                f"Hyperparameter importances (stage {t['position']})",
                [(k, float(v), None) for k, v in imp],
                "importance (Optuna, PED-ANOVA)",
            )
        )
    return "".join(parts)


def where_text(where: dict[str, Any]) -> str:
    """Where a run's jobs ran, in words: 'local, 2 job(s) at a time, 1 thread(s) each'."""
    text = f"{where.get('executor', 'local')}, {where.get('workers')} job(s) at a time"
    if where.get("threads"):
        text += f", {where['threads']} thread(s) each"
    return text


def _environment(d: dict[str, Any]) -> str:
    env = d.get("environment")
    if not env:
        return f"<p class='muted'>{escape(d['skipped'].get('environment', 'Not recorded.'))}</p>"
    rows = [
        [_td(k, cls="l"), _td(v if v is not None else "—", cls="l")]
        for k, v in (
            ("command", env.get("command")),
            ("cpu", env.get("cpu")),
            ("logical / usable CPUs", f"{env.get('logical_cpus')} / {env.get('usable_cpus')}"),
            ("torch threads", env.get("torch_threads")),
            ("GPU", env.get("cuda") or "none"),
            ("platform", env.get("platform")),
        )
    ]
    rows += [
        [_td(k, cls="l"), _td(v or "not installed", cls="l")]
        for k, v in env.get("versions", {}).items()
    ]
    where = env.get("executor") or {}
    if where:
        rows.append([_td("executor", cls="l"), _td(where_text(where), cls="l")])
        for node in where.get("nodes", []):
            label = f"{node.get('host')} ({node.get('address')})"
            detail = f"{node.get('cpus')} CPUs, {node.get('gpus')} GPUs"
            detail += f"; node {str(node.get('node', ''))[:12]}"
            rows.append([_td("cluster node", cls="l"), _td(f"{label}: {detail}", cls="l")])
    return _table(["", ""], rows)


SECTIONS = (
    ("headline", "Headline"),
    ("stages", "Stages: what each bought"),
    ("pareto", "Quality against cost"),
    ("curves", "Learning curves"),
    ("errors", "Errors and calibration"),
    ("attributions", "Attributions"),
    ("lineage", "Lineage"),
    ("tuning", "Tuning"),
    ("environment", "Environment"),
    ("reproduce", "Reproduce"),
)


def _scrolling(html: str) -> str:
    """Each plot in a box that scrolls sideways where the screen is narrower than the plot's
    readable size (a phone), instead of shrinking its text to nothing."""
    return re.sub(
        r'(<svg class="plot".*?</svg>)', r'<div class="scroll">\1</div>', html, flags=re.S
    )


def render(data: dict[str, Any]) -> str:
    """The report as an HTML string."""
    d = data
    run, task = d["run"], d.get("task") or {}
    body = {
        "headline": _headline(d),
        "stages": _stages(d) + _multitask(d),
        "pareto": _pareto(d),
        "curves": _curves(d),
        "errors": _errors(d),
        "attributions": _attributions(d),
        "lineage": svg.graph(
            "lineage", "Lineage of candidates", d["lineage"]["nodes"], d["lineage"]["edges"]
        ),
        "tuning": _tuning(d),
        "environment": _environment(d),
        "reproduce": (
            f"<p>Command: <code>{escape(d['reproduce']['command'] or 'not recorded')}</code>"
            f"</p><p>{escape(d['reproduce']['rerun'])}</p>"
            f"<pre>{escape(d['reproduce']['recipe_yaml'])}</pre>"
        ),
    }
    skipped = "".join(f"<li><b>{escape(k)}</b>: {escape(v)}</li>" for k, v in d["skipped"].items())
    nav = " ".join(f'<a href="#{key}">{escape(title)}</a>' for key, title in SECTIONS)
    sections = "".join(
        f'<section id="{key}"><h2>{escape(title)}</h2>{_scrolling(body[key])}</section>'
        for key, title in SECTIONS
    )
    error = f"<p class='rejected'>error: {escape(run['error'])}</p>" if run.get("error") else ""
    task_line = (
        f"{escape(str(task.get('name', '?')))} — {escape(str(task.get('input', '')))}, "
        f"{escape(str(task.get('target', '')))}, {task.get('train')}/{task.get('val')}/"
        f"{task.get('test')} train/val/test"
        if task
        else "task not loadable here"
    )
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>tidian run {escape(run['id'])}</title><style>{CSS}</style></head><body><main>"
        f"<h1>tidian run <span data-field='run-id'>{escape(run['id'])}</span></h1>"
        f"<p>{task_line}; metric <b>{escape(str(d['metric']))}</b>; status "
        f"<span data-field='status'>{escape(run['status'])}</span>; {escape(run['created'])}"
        f" → {escape(str(run['finished'] or '…'))}; store {escape(run['store'])}</p>{error}"
        f"<nav>{nav}</nav>{sections}"
        + (f"<h2>Not shown</h2><ul>{skipped}</ul>" if skipped else "")
        + f"<p class='muted'>Generated {escape(d['generated'])} by tidian.</p></main></body></html>"
    )
