"""The ``tidian`` command: thin — parse arguments, call the public API, render with rich."""

from __future__ import annotations

import contextlib
import errno
import json
import math
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

import tidian
from tidian import _startup
from tidian.exceptions import ConfigError, Interrupted, TidianError

_startup.done()  # the command line's own imports are made: Ctrl-C is a KeyboardInterrupt again

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    help="tidian — upgrade machine-learning models and prove each upgrade.",
)
console = Console()


class _Table(Table):
    """rich's table as tidian prints it: light rules (more room at 80 columns), cells that
    wrap or fold but are never cut with "…" (ids and labels are copied into other commands),
    and cell text shown as written (a label "[b]x" is not rich markup)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("box", box.SIMPLE_HEAD)
        kwargs.setdefault("title_style", "bold")
        super().__init__(*args, **kwargs)

    def add_column(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("overflow", "fold")
        super().add_column(*args, **kwargs)

    def add_row(self, *cells: Any, **kwargs: Any) -> None:
        super().add_row(*(Text(c) if isinstance(c, str) else c for c in cells), **kwargs)


@app.callback()
def _plugins(
    imports: Annotated[
        list[str] | None,
        typer.Option(
            "--import",
            metavar="MODULE",
            envvar="TIDIAN_IMPORT",
            help="Import MODULE first (repeatable; TIDIAN_IMPORT: space-separated): your "
            "models, losses or steps registered there can be named and rebuilt. Modules named "
            "in installed packages' `tidian.models` entry points are imported always.",
        ),
    ] = None,
) -> None:
    """tidian — upgrade machine-learning models and prove each upgrade."""
    tidian.import_plugins(imports or [])


def _pairs(items: list[str] | None, what: str) -> dict[str, Any]:
    """``key=value`` strings → dict; values are read as YAML (``3``, ``0.1``, ``[8, 8]``)."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"{what} must look like key=value; got {item!r}.")
        try:
            out[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as err:
            raise ConfigError(f"{what} {item!r}: cannot read the value: {err}") from None
    return out


tasks_app = typer.Typer(
    help="List the built-in tasks; `tidian tasks inspect FILE` shows how a file is read.",
    invoke_without_command=True,
)
app.add_typer(tasks_app, name="tasks")


@tasks_app.command("inspect")
def tasks_inspect_cmd(
    task: Annotated[
        str, typer.Argument(metavar="NAME|FILE", help="Built-in task name or a data file/folder.")
    ],
    task_option: Annotated[
        list[str] | None,
        typer.Option(
            "--task-option",
            "-o",
            metavar="KEY=VALUE",
            help="Task option key=value, e.g. target=label (repeatable).",
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Load a task as a recipe or `evaluate` would and show how it was read: each column's
    kind (number, category, date parts, target, dropped), the separator, the split sizes."""
    loaded = tidian.load_task(task, **_pairs(task_option, "--task-option"))
    summary = loaded.summary()
    sep = loaded.source.get("sep")
    if as_json:
        print(json.dumps({**summary, "sep": sep, "columns": loaded.columns_read}, indent=2))
        return
    console.print(
        f"{summary['name']}: inputs {summary['input']}, target {summary['target']}; rows "
        f"train {summary['train']}, val {summary['val']}, test {summary['test']}; "
        f"metric {summary['metric']}" + (f"; separator {sep!r}" if sep else ""),
        markup=False,
        highlight=False,
    )
    if loaded.columns_read:
        table = _Table(title="How each column was read")
        table.add_column("column")
        table.add_column("read as")
        for name, how in loaded.columns_read.items():
            table.add_row(name, how)
        console.print(table)


@tasks_app.callback()
def tasks_cmd(ctx: typer.Context) -> None:
    """List the built-in tasks with their sizes and kinds."""
    if ctx.invoked_subcommand is not None:
        return
    table = _Table(title="Built-in tasks (tidian.load_task(name))")
    for col in ("name", "input", "target", "train", "val", "test", "metric"):
        table.add_column(col, justify="right" if col in ("train", "val", "test") else "left")
    for entry in tidian.TASKS.entries():
        s = tidian.load_task(entry.name).summary()
        table.add_row(
            entry.name,
            s["input"],
            s["target"],
            str(s["train"]),
            str(s["val"]),
            str(s["test"]),
            s["metric"],
        )
    console.print(table)


@app.command("models")
def models_cmd() -> None:
    """List the model zoo with the options of each model."""
    table = _Table(title="Model zoo (tidian.create_model(name, task, **options))")
    for col in ("name", "inputs", "description", "options (defaults)"):
        table.add_column(col)
    for row in tidian.describe_models():
        opts = ", ".join(f"{k}={v!r}" for k, v in row["options"].items())
        table.add_row(row["name"], ", ".join(row["inputs"]), row["description"], opts)
    console.print(table)


@app.command("metrics")
def metrics_cmd() -> None:
    """List the quality metrics."""
    table = _Table(title="Metrics")
    for col in ("name", "for", "better", "description"):
        table.add_column(col)
    for e in tidian.METRICS.entries():
        table.add_row(
            e.name,
            e.meta["target"],
            "higher" if e.meta["greater_is_better"] else "lower",
            e.description,
        )
    console.print(table)


def _fmt(value: float, digits: int = 4) -> str:
    return (
        "n/a"
        if value is None or (isinstance(value, float) and math.isnan(value))
        else f"{value:.{digits}f}"
    )


def _signed(value: float, spec: str = ".4g") -> str:
    """A signed number for a table, with zero shown as 0 (never "+0" or "-0")."""
    text = f"{value:+{spec}}"
    return "0" if float(text) == 0 else text


RunIdArg = Annotated[
    str, typer.Argument(metavar="RUN_ID", help="A run's id (`tidian runs` lists them).")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]
ThreadsOpt = Annotated[
    int | None,
    typer.Option(
        min=1,
        metavar="N",
        help="Torch threads per job (default: every core in one process, 1 per --jobs "
        "worker). On a busy machine fewer threads are often much faster.",
    ),
]


@app.command("evaluate")
def evaluate_cmd(
    task: Annotated[
        str, typer.Option(metavar="NAME|FILE", help="Built-in task name or a data file/folder.")
    ] = "mnist1d",
    model: Annotated[
        str, typer.Option(metavar="NAME", help="Zoo model name (`tidian models`).")
    ] = "cnn1d",
    option: Annotated[
        list[str] | None,
        typer.Option(
            "--option", "-o", metavar="KEY=VALUE", help="Model option key=value (repeatable)."
        ),
    ] = None,
    train: Annotated[
        list[str] | None,
        typer.Option(
            "--train",
            "-t",
            metavar="KEY=VALUE",
            help="Training option key=value, e.g. lr=0.003 (repeatable).",
        ),
    ] = None,
    task_option: Annotated[
        list[str] | None,
        typer.Option(
            "--task-option",
            metavar="KEY=VALUE",
            help="Task option key=value, e.g. target=label (repeatable).",
        ),
    ] = None,
    seeds: Annotated[
        int, typer.Option(metavar="N", min=1, help="Number of seeds (trainings).")
    ] = 3,
    epochs: Annotated[int, typer.Option(metavar="N", min=1, help="Training epochs.")] = 20,
    jobs: Annotated[
        int,
        typer.Option(
            "--jobs", "-j", min=1, metavar="N", help="Worker processes for seeds (one thread each)."
        ),
    ] = 1,
    threads: ThreadsOpt = None,
    confidence: Annotated[
        float, typer.Option(metavar="LEVEL", help="Confidence level of intervals.")
    ] = 0.95,
    folds: Annotated[
        int | None,
        typer.Option(
            metavar="K",
            min=2,
            help="Cross-validate: each seed gives FOLDS units (all rows pooled).",
        ),
    ] = None,
    repeated: Annotated[
        bool, typer.Option(help="With --folds: reshuffle the folds per seed.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Train and evaluate one model over several seeds (or seeds × folds); print quality
    (mean ± CI) and cost."""
    loaded = tidian.load_task(task, **_pairs(task_option, "--task-option"))
    config = tidian.TrainConfig.from_dict(
        {"epochs": epochs, **_pairs(train, "--train")}, where="--train"
    )
    options = _pairs(option, "--option")
    fitted = tidian.create_model(model, loaded, **options)  # fails fast on bad options
    units = seeds * (folds or 1)
    what = f"training {model} on {loaded.name}: " + (
        f"{seeds} seeds × {folds} folds" if folds else f"{seeds} seeds"
    )
    from tidian.executors import LocalExecutor

    with (
        _progress() if not as_json else contextlib.nullcontext() as progress,
        LocalExecutor(jobs, threads) as runner,
    ):
        bar = progress.add_task(what, total=units) if progress else None
        result = tidian.evaluate(
            {"name": model, **options},
            loaded,
            config,
            seeds=seeds,
            executor=runner,
            confidence=confidence,
            keep_models=True,
            folds=folds,
            repeated=repeated,
            on_seed=(lambda run: progress.advance(bar)) if progress else None,
        )
    run = result.runs[0]
    fitted.load_state_dict(run.state)
    cost = tidian.measure_cost(fitted, loaded)
    if as_json:
        doc = result.to_dict()
        doc["cost"] = cost.to_dict()
        _print_json(doc)
        return
    s = loaded.summary()
    rest = (
        f" — {s['input']}, {s['target']}, "
        + (
            f"{s['train']}/{s['val']}/{s['test']} train/val/test; seeds"
            if not folds
            else f"all {s['train'] + s['val'] + s['test']} rows pooled, {folds}-fold "
            f"cross-validation{' (repeated)' if repeated else ''}, units"
        )
        + f" {result.seeds}; "
        f"{config.epochs} epochs, {config.optimizer} lr={config.lr}"
    )
    # names as written (a file "[b]x.csv" is not rich markup)
    console.print(Text.assemble((model, "bold"), " on ", (loaded.name, "bold"), rest))
    if loaded.columns_read:
        console.print(_columns_line(loaded.columns_read), markup=False, highlight=False)
    over = (
        f"{len(result.seeds)} CV units, corrected for overlap"
        if folds
        else f"{len(result.seeds)} seeds"
    )
    table = _Table(title=f"Quality on the test split (mean and {confidence:.0%} CI over {over})")
    for col in ("metric", "mean", "CI low", "CI high", "std", "val mean"):
        table.add_column(col, justify="left" if col == "metric" else "right")
    for name, summ in result.summary["test"].items():
        val = result.summary.get("val", {}).get(name)
        table.add_row(
            name + (" *" if name == result.metric else ""),
            _fmt(summ.mean),
            _fmt(summ.low),
            _fmt(summ.high),
            _fmt(summ.std),
            _fmt(val.mean) if val else "n/a",
        )
    console.print(table)
    costs = _Table(title="Cost (measured on this CPU, 1 thread)")
    for col in (
        "params",
        "nonzero",
        "bytes",
        "MACs/sample",
        "latency ms (p50)",
        "p95",
        f"throughput /s (batch {cost.batch_size})",
    ):
        costs.add_column(col, justify="right")
    costs.add_row(
        f"{cost.params:,}",
        f"{cost.nonzero_params:,}",
        f"{cost.size_bytes:,}",
        f"{cost.macs:,}",
        f"{cost.latency_ms:.4f}",
        f"{cost.latency_p95_ms:.4f}",
        f"{cost.throughput:,.0f}",
    )
    console.print(costs)
    secs = [r.seconds for r in result.runs]
    console.print(f"training time per seed: {min(secs):.1f}–{max(secs):.1f} s")


# -- the pipeline ------------------------------------------------------------------------------

StoreOpt = Annotated[
    str | None,
    typer.Option(
        "--store",
        metavar="URL",
        help="Store URL (default: $TIDIAN_STORE or sqlite:///tidian.db).",
    ),
]
recipe_app = typer.Typer(help="Validate recipes and print their JSON Schema.", no_args_is_help=True)
app.add_typer(recipe_app, name="recipe")


@recipe_app.command("check")
def recipe_check(
    path: Annotated[Path, typer.Argument(metavar="RECIPE", help="Recipe YAML file.")],
) -> None:
    """Validate a recipe against the registries; print its stages."""
    from tidian.recipe import load_recipe
    from tidian.runs import short_text

    recipe = load_recipe(path)
    line = (
        f" {path}: task {short_text(recipe.task)}, baseline "
        f"{short_text(recipe.model)}, {len(recipe.seed_list())} seeds"
        + (f" × {recipe.evaluate.folds} folds" if recipe.evaluate.folds else "")
        + ", stages: "
        f"{', '.join(name for name, _ in recipe.stage_entries()) or 'none'}"
    )
    console.print(Text("ok", style="green") + Text(line), highlight=False)  # no markup


@recipe_app.command("schema")
def recipe_schema_cmd() -> None:
    """Print the JSON Schema of recipes (for editor completion)."""
    from tidian.recipe import recipe_schema

    _print_json(recipe_schema())


TaskOpt = Annotated[
    str | None,
    typer.Option(
        "--task",
        metavar="TASK",
        help="A built-in task or a data file (CSV, Parquet, NPZ, an image folder…).",
    ),
]
TargetOpt = Annotated[
    str | None, typer.Option(metavar="COLUMN", help="With a table: the column to predict.")
]
TextOpt = Annotated[
    str | None, typer.Option(metavar="COLUMN", help="With a table: a text column to read.")
]


def _task_spec(task: str, target: str | None, text: str | None) -> str | dict[str, Any]:
    """A task as a recipe writes it: a built-in name, or ``{path: FILE, target: …}``."""
    from tidian.tasks import TASKS

    if task in TASKS and target is None and text is None:
        return task
    extra = {k: v for k, v in (("target", target), ("text", text)) if v is not None}
    return {("name" if task in TASKS else "path"): task, **extra}


@recipe_app.command("suggest")
def recipe_suggest_cmd(
    task: Annotated[str, typer.Argument(metavar="TASK", help="A built-in task or a data file.")],
    target: TargetOpt = None,
    text: TextOpt = None,
) -> None:
    """Print a recipe made for TASK from its kind and size (tables: a solved linear baseline
    against an SVM, an MLP and the tree families, tuning, an ensemble, a refit, int8;
    sequences, images, text: the zoo's models). Keep it (`> recipe.yaml`), edit it, run it;
    `tidian run --task` runs it as printed."""
    from tidian.suggest import recipe_text, suggest_recipe

    spec = _task_spec(task, target, text)
    recipe, notes = suggest_recipe(spec)
    sys.stdout.write(recipe_text(recipe, notes, task))


@recipe_app.command("of")
def recipe_of_cmd(run_id: RunIdArg, store: StoreOpt = None) -> None:
    """Print a finished run's final model as a standalone recipe: its baseline, then one
    `apply` stage per candidate the final model is made of. `tidian run` of it rebuilds the
    same model per seed, without the search."""
    import tidian.pipeline as pipeline
    from tidian.store import Store

    ledger = Store(store)
    recipe = pipeline.path_recipe(ledger, run_id)
    final = ledger.run(run_id)["incumbent_id"]
    header = (
        f"# The final model (#{final}) of run {run_id}, written by `tidian recipe of {run_id}`:\n"
        "# its baseline, then each candidate it is made of, gated as its stage gated it.\n"
    )
    # plain text: a recipe goes to a file as it is printed, never wrapped or marked up
    sys.stdout.write(header + yaml.safe_dump(recipe, sort_keys=False, allow_unicode=True))


class _Progress:
    """Rich progress bars: one for the stage's candidates, one for the current one's seeds."""

    def __init__(self, progress) -> None:
        self.progress = progress
        self.stage_bar = None
        self.seed_bar = None
        self.seed_label = ""

    def __call__(self, kind: str, data: dict[str, Any]) -> None:
        p = self.progress
        if kind == "run_started" and data.get("columns"):
            p.console.print(_columns_line(data["columns"]), markup=False, highlight=False)
        if kind == "stage_started":
            if self.stage_bar is not None:
                p.remove_task(self.stage_bar)
            self.stage_bar = p.add_task(
                f"stage {data['position']}: {data['name']}", total=data["candidates"]
            )
        elif kind == "seeds_started":
            if self.seed_bar is not None:
                p.remove_task(self.seed_bar)
            self.seed_label = "  seeds (all candidates)"
            self.seed_bar = p.add_task(self.seed_label, total=data["total"], completed=data["done"])
        elif kind == "stage_progress":  # long work inside a stage (a learning curve)
            label = f"  {data['what']}"
            if self.seed_bar is None or self.seed_label != label:
                if self.seed_bar is not None:
                    p.remove_task(self.seed_bar)
                self.seed_bar = p.add_task(label, total=data["total"])
                self.seed_label = label
            p.update(self.seed_bar, completed=data["done"], total=data["total"])
        elif kind == "seed_done" and self.seed_bar is not None:
            p.advance(self.seed_bar)
        elif kind in ("candidate_done", "candidate_cached") and self.stage_bar is not None:
            p.advance(self.stage_bar)


class _Log:
    """A run's progress as plain lines, one per finished seed and candidate and per stage
    decision, each with the time — for output that is not a terminal (a log file, CI,
    ``nohup``, a scheduler), where rich's live display shows nothing until the end. Every line
    is written and flushed as it happens."""

    def __init__(self, out: Console) -> None:
        self.out, self.seeds, self.seeds_done = out, 0, 0
        self.phases = _PlainProgress(out)  # long work inside a stage, throttled
        self.phase_keys: dict[tuple[int, str], int] = {}

    def line(self, text: str) -> None:
        _log_line(self.out, text)

    def __call__(self, kind: str, data: dict[str, Any]) -> None:
        if kind == "run_started":
            verb = "resumed" if data["resumed"] else "started"
            self.line(
                f"run {data['run_id']} {verb}: {data['task']}, metric {data['metric']}, "
                f"{data['units']} seeds per candidate, {data['workers']} job(s) at a time; "
                f"stages: {', '.join(data['stages']) or 'none'}"
            )
            if data.get("columns"):
                self.line(_columns_line(data["columns"]))
            if data.get("holdout"):
                self.line(
                    f"holdout: {data['holdout']} rows set aside for the confirmation "
                    f"({data['confirm_seeds']} fresh seeds); no stage sees them"
                )
            elif data.get("confirm_seeds"):
                self.line(
                    f"no holdout ({data.get('no_holdout')}): the confirmation is scored "
                    "on the test split"
                )
        elif kind == "stage_started":
            self.line(f"stage {data['position']} {data['name']}: {data['candidates']} candidate(s)")
        elif kind == "seeds_started":
            self.seeds, self.seeds_done = data["total"], data["done"]
            before = f" ({data['done']} done before)" if data["done"] else ""
            self.line(f"  {data['total']} seed trainings{before}")
        elif kind == "seed_done":
            self.seeds_done += 1
            row, metric = data["candidate"], data["metric"]
            score = (data["scores"].get("test") or {}).get(metric)
            value = f"{metric} {score:.4f}" if score is not None else "scored"
            self.line(
                f"  [{self.seeds_done}/{self.seeds}] #{row['id']} seed {data['seed']}: "
                f"{value} ({data['seconds']:.1f} s)"
            )
        elif kind in ("candidate_done", "candidate_cached"):
            row = data["candidate"]
            q = row.get("quality") or {}
            cached = " (done before)" if kind == "candidate_cached" else ""
            self.line(
                f"  #{row['id']} {_label(row)}: {q.get('metric')} {_quality_text(row)}, "
                f"{_latency_text(row.get('cost') or {})}{cached}"
            )
        elif kind == "stage_progress":
            key = (data["position"], data["what"])
            if key not in self.phase_keys:
                self.phase_keys[key] = self.phases.add_task(
                    f"  {data['what']}", data["total"], data["done"]
                )
            else:
                self.phases.update(
                    self.phase_keys[key], completed=data["done"], total=data["total"]
                )
        elif kind == "confirmed":
            for line in _headline_lines(data["confirmation"]):
                self.line(line)
        elif kind == "stage_done":
            if data.get("skipped"):
                self.line(f"  skipped: {data['skipped']}")
            elif data.get("cut"):
                self.line(f"  the time limit left untrained: {', '.join(data['cut'])}")
            for row in data["candidates"]:
                if row["stage"] != "baseline":
                    self.line(f"  #{row['id']} {_verdict(row)}")
            best = data["incumbent"]
            self.line(
                f"stage {data['position']} {data['name']} done; incumbent #{best['id']} "
                f"{_label(best)}"
            )


def _quality_text(row: dict[str, Any] | None) -> str:
    q = (row or {}).get("quality") or {}
    if q.get("mean") is None:
        return "—"
    return f"{q['mean']:.4f} [{q['ci_low']:.4f}, {q['ci_high']:.4f}]"


def _label(row: dict[str, Any] | None) -> str:
    if row is None:
        return "—"
    if row["stage"] == "baseline":
        return f"{row['model']['name']} (the recipe's baseline)"
    return row["label"]


def _verdict(row: dict[str, Any]) -> str:
    """A candidate's decision with the gate's numbers: 'accepted: gain +0.0149 [+0.0031,
    +0.0267], Holm p=0.012' (and why it was turned down when it passed the gate alone: its
    cost, or another candidate chosen on validation)."""
    gate = row.get("gate")
    verdict = row["decision"] or row["status"]
    if gate:
        # Holm's p when several candidates were gated together (records before the adjusted
        # interval was kept were always said so), else the candidate's own
        holm = "adjusted_low" not in gate or gate["adjusted_low"] is not None
        verdict += (
            f": gain {gate['gain']:+.4f} [{gate['low']:+.4f}, {gate['high']:+.4f}],"
            f" {'Holm p' if holm else 'p'}={gate['p_adjusted']:.2g}"
        )
        if gate["accepted"] and row["decision"] == "rejected":  # on cost, or not chosen
            verdict += "; " + row["reason"].split(": ", 1)[-1].split(" (", 1)[0]
        elif (row["reason"] or "").startswith("rejected: not chosen: "):
            verdict += "; not chosen (" + row["reason"].split(": ")[2].split(" has ")[0] + ")"
    return verdict


def _headline_lines(confirmation: dict[str, Any] | None) -> list[str]:
    """The run's headline as plain lines: the confirmed gain (fresh seeds, unseen rows), the
    selection-time gain beside it and the difference (the optimism of selection)."""
    if not confirmation:
        return []
    if "skipped" in confirmation:
        return [f"headline: not confirmed ({confirmation['skipped']})"]
    sel = confirmation["selection_gain"]
    return [
        f"headline: {confirmation['summary']} "
        f"(#{confirmation['final']} vs #{confirmation['baseline']})",
        f"  at selection: gain {sel['mean']:+.4g} [{sel['low']:+.4g}, {sel['high']:+.4g}] on "
        f"the stages' seeds and test rows; optimism of selection "
        f"{confirmation['optimism']:+.4g}",
    ]


def _print_run(res) -> None:
    base, best = res.baseline, res.incumbent
    table = _Table(title=f"run {res.run_id} — {res.status}")
    table.add_column("", ratio=3)
    table.add_column("quality [95% CI]", justify="right", ratio=2)
    table.add_column("params", justify="right", no_wrap=True)
    table.add_column("bytes", justify="right", no_wrap=True)
    table.add_column("latency", justify="right", no_wrap=True)
    for name, row in (("baseline", base), ("final", best)):
        cost = (row or {}).get("cost") or {}
        table.add_row(
            f"{name}: {_label(row)}",
            _quality_text(row),
            f"{cost.get('params', 0):,}",
            f"{cost.get('size_bytes', 0):,}",
            _latency_text(cost),
        )
    console.print(table)
    for line in _headline_lines(res.confirmation):
        console.print(line, markup=False, highlight=False)
    if line := _found_line(res):
        console.print(line, markup=False, highlight=False)
    if res.confirmation or line:
        console.print()
    decisions = _Table(
        title="candidates and decisions", caption="latency: batch 1; ORT: ONNX Runtime"
    )
    decisions.add_column("id", no_wrap=True)
    decisions.add_column("candidate", ratio=3)
    decisions.add_column("quality", justify="right", no_wrap=True)
    decisions.add_column("latency", justify="right", no_wrap=True)
    decisions.add_column("decision", ratio=3)
    stage = None
    for row in [*res.candidates, *res.confirmations]:
        if row["stage_position"] != stage:  # a heading row per stage: no stage column needed
            stage = row["stage_position"]
            heading = Text(f"{stage}. {row['stage']}", style="bold")
            decisions.add_row("", heading, "", "", "", end_section=False)
        q = row.get("quality") or {}
        decisions.add_row(
            f"#{row['id']}",
            _label(row) if row["stage"] == "baseline" else row["label"],
            f"{q['mean']:.4f}" if q.get("mean") is not None else "—",
            _latency_text(row.get("cost") or {}),
            _verdict(row),
        )
    console.print(decisions)
    for line in _stage_notes(res.stages):
        console.print(line, markup=False, highlight=False)


def _best_found(res) -> dict[str, Any] | None:
    """Run ``res``'s best candidate on validation when it is not the final (runs.best_found)."""
    from tidian.runs import best_found

    return best_found(res.candidates, (res.incumbent or {}).get("id"))


def _found_line(res) -> str:
    """What the search found and the gate did not keep (``runs.best_found``): the best
    candidate on validation when it is not the final model, with its test score and its
    gate's verdict ("" when the final is that candidate)."""
    found = _best_found(res)
    if found is None:
        return ""
    q = found["quality"]
    return (
        f"best on validation, not kept: #{found['id']} {found['label']} (validation "
        f"{q['val_mean']:.4f}, test {q['mean']:.4f}) — {_verdict(found)}"
    )


def _stage_notes(stages: list[dict[str, Any]]) -> list[str]:
    """What each stage did not do, and why (``runs.stage_note``), a line per stage."""
    from tidian.runs import stage_note

    out = []
    for st in stages:
        if said := stage_note(st.get("report")):
            cut = (st.get("report") or {}).get("cut")
            resume = " (`tidian run --resume` trains them)" if cut else ""
            out.append(f"stage {st['position']} {st['name']}: {said}{resume}")
    return out


RUNTIMES = {"onnxruntime": "ORT"}  # short names of deployment runtimes in tables


def _latency_text(cost: dict[str, Any]) -> str:
    if not cost:
        return "—"
    runtime = cost.get("runtime", "torch")
    return f"{cost['latency_ms'] * 1000:.1f} µs {RUNTIMES.get(runtime, runtime)}"


@app.command("run")
def run_cmd(
    recipe: Annotated[
        Path | None, typer.Argument(metavar="RECIPE", help="Recipe YAML; default: built-in.")
    ] = None,
    store: StoreOpt = None,
    resume: Annotated[
        str | None, typer.Option(metavar="RUN_ID", help="Continue this interrupted run.")
    ] = None,
    jobs: Annotated[
        int,
        typer.Option(
            "--jobs", "-j", min=1, metavar="N", help="Worker processes for seeds (one thread each)."
        ),
    ] = 1,
    threads: ThreadsOpt = None,
    report: Annotated[
        Path | None,
        typer.Option(metavar="FILE", help="Write the run's HTML report here at the end."),
    ] = None,
    executor: Annotated[
        str,
        typer.Option(
            metavar="local|ray",
            help="Where jobs run: local (this machine; --jobs) or ray (a Ray cluster).",
        ),
    ] = "local",
    address: Annotated[
        str | None,
        typer.Option(
            metavar="ADDRESS",
            help="With --executor ray: the cluster (auto, or HEAD:6379); none: start one.",
        ),
    ] = None,
    artifacts: Annotated[
        str | None,
        typer.Option(
            metavar="URL",
            help="Where weights go: a folder or a URL (s3://bucket/prefix); default: "
            "$TIDIAN_ARTIFACTS, else tidian-runs/ beside a SQLite ledger.",
        ),
    ] = None,
    task: TaskOpt = None,
    target: TargetOpt = None,
    text: TextOpt = None,
    time_limit: Annotated[
        str | None,
        typer.Option(
            "--time-limit",
            metavar="DURATION",
            help="Wall-clock limit (90s, 15m, 1h30m): sets the recipe's budget.time; the run "
            "keeps time for its confirmation, stops starting stages and candidates when it is "
            "up and says what it cut.",
        ),
    ] = None,
    max_bytes: Annotated[
        str | None,
        typer.Option(
            "--max-bytes",
            metavar="SIZE",
            help="Reject any candidate whose saved model is larger (500kB, 1MB, or bytes): "
            "sets the recipe's constraints.max_bytes.",
        ),
    ] = None,
    max_latency_ms: Annotated[
        float | None,
        typer.Option(
            "--max-latency-ms",
            metavar="MS",
            help="Reject any candidate slower at batch 1 on its runtime: constraints."
            "max_latency_ms.",
        ),
    ] = None,
    max_params: Annotated[
        int | None,
        typer.Option(
            "--max-params",
            metavar="N",
            help="Reject any candidate with more parameters: constraints.max_params.",
        ),
    ] = None,
) -> None:
    """Run a recipe (the built-in default without one; with --task, the one `tidian recipe
    suggest` makes for that task): baseline, stages, gate, ledger. The --max-* limits are
    recorded in the run's recipe, beside any constraints it has."""
    import tidian.pipeline as pipeline
    from tidian.store import Store

    source: Path | dict[str, Any] | None = recipe
    if task is not None:
        if recipe is not None or resume is not None:
            raise ConfigError(
                "--task runs the recipe suggested for a task: give it without a RECIPE "
                "or --resume (`tidian recipe suggest TASK > recipe.yaml` writes that recipe)."
            )
        from tidian.suggest import recipe_text, suggest_recipe

        source, notes = suggest_recipe(_task_spec(task, target, text))
        # plain text, never wrapped: the recipe can be copied from the log as it is
        sys.stdout.write(
            f"the recipe suggested for {task} (`tidian recipe suggest` prints it to keep):\n"
            + recipe_text(source, notes, task)
            + "\n"
        )
        sys.stdout.flush()
    elif target is not None or text is not None:
        raise ConfigError("--target and --text describe a --task's table; give --task too.")

    given = {"max_bytes": max_bytes, "max_latency_ms": max_latency_ms, "max_params": max_params}
    limits = {key: value for key, value in given.items() if value is not None}
    if report is not None:
        from tidian.report import writable

        writable(report)  # a bad path fails now, not after the run
    if executor not in ("local", "ray"):
        raise ConfigError(f"--executor must be local or ray; got {executor!r}.")
    if threads is not None and executor != "local":
        raise ConfigError("--threads sets local jobs' threads; on Ray give resources: {cpus: N}.")
    if address is not None and executor != "ray":
        raise ConfigError("--address names a Ray cluster: use it with --executor ray.")
    ledger = Store(store, artifacts=artifacts)
    runner = None
    if executor == "ray":
        from tidian.executors.ray import connect

        runner = connect(address)
    try:
        live = console.is_terminal  # a log file gets plain lines as things finish
        with _progress(console) if live else contextlib.nullcontext() as progress:
            res = pipeline.run(
                source,
                store=ledger,
                resume=resume,
                jobs=jobs,
                threads=threads,
                executor=runner,
                events=_Progress(progress) if live else _Log(console),
                time_limit=time_limit,
                constraints=limits or None,
            )
    except KeyboardInterrupt as stop:  # Ctrl-C, or SIGTERM / SIGHUP (Interrupted)
        how = f" ({stop})" if isinstance(stop, Interrupted) else ""
        Console(stderr=True).print(
            f"[yellow]interrupted[/]{how}: `tidian runs` shows the run; "
            "`tidian run --resume RUN_ID` continues it."
        )
        raise typer.Exit(getattr(stop, "exit_code", 130)) from None
    finally:
        if runner is not None:
            runner.close()
    _print_run(res)
    console.print(f"store: {res.store}; `tidian show {res.run_id}` for details.", markup=False)
    if report is not None:
        from tidian.report import write_report

        with _progress() as progress:
            write_report(ledger, res.run_id, report, progress=_Steps(progress))
        console.print(f"report: {report} (open it in a browser; it works offline)", markup=False)


@app.command("runs")
def runs_cmd(store: StoreOpt = None, as_json: JsonOpt = False) -> None:
    """List the runs in the store. A run marked running whose driver died without a word
    (SIGKILL, power loss) shows as stale, with why; `tidian run --resume RUN` continues it."""
    from tidian.runs import gain_text, overview
    from tidian.store import Store

    docs = overview(Store(store))
    if as_json:
        _print_json(docs)
        return
    table = _Table(
        title="runs (newest first)",
        caption="gain: final − baseline; ✓ confirmed on fresh seeds and unseen rows, ✗ not",
    )
    table.add_column("run", no_wrap=True, min_width=12)  # ids are never cut: commands need them
    table.add_column("status", overflow="fold")
    table.add_column("age", no_wrap=True)
    table.add_column("task", overflow="fold")
    table.add_column("metric", overflow="fold")
    table.add_column("baseline → final", justify="right")
    table.add_column("gain [95% CI]", justify="right")
    for d in docs:
        table.add_row(
            d["run_id"],
            f"stale: {d['stale']}" if d["stale"] else d["status"] + _held(d["gain"]),
            d["age"],
            d["task"],
            d["metric"] or "—",
            f"{_fmt(d['baseline'])} → {_fmt(d['final'])}" if d["baseline"] is not None else "—",
            gain_text(d["gain"]),
        )
    console.print(table)


def _held(gain: dict[str, Any] | None) -> str:
    """`` ✓`` / `` ✗`` after a run's status when its gain is the confirmation's: the lift
    held up on fresh seeds and unseen rows, or did not."""
    if not (gain or {}).get("confirmed"):
        return ""
    return " ✓" if gain["held"] else " ✗"


@app.command("show")
def show_cmd(run_id: RunIdArg, store: StoreOpt = None, as_json: JsonOpt = False) -> None:
    """Candidates, lineage and decisions of one run."""
    import tidian.pipeline as pipeline
    from tidian.store import Store

    ledger = Store(store)
    res = pipeline.result(ledger, run_id)
    if as_json:
        found = _best_found(res)
        _print_json({**res.to_dict(), "found": found["id"] if found else None})
        return
    _print_run(res)
    console.print(f"Pareto set (quality, latency, params): {res.pareto}", markup=False)
    where = (ledger.run(run_id).get("environment") or {}).get("executor") or {}
    if where:
        from tidian.report.render import where_text

        console.print(f"jobs: {where_text(where)}", highlight=False)


@app.command("compare")
def compare_cmd(
    candidate_a: Annotated[int, typer.Argument(metavar="A", help="A candidate id.")],
    candidate_b: Annotated[
        int, typer.Argument(metavar="B", help="Another candidate of the same run.")
    ],
    store: StoreOpt = None,
) -> None:
    """Paired difference (B − A) with its CI, from two candidates of the same run."""
    from tidian.evaluation.stats import paired_compare
    from tidian.metrics import greater_is_better
    from tidian.runs import candidate_rows
    from tidian.store import Store

    ledger = Store(store)
    a, b = ledger.get_candidate(candidate_a), ledger.get_candidate(candidate_b)
    if a["run_id"] != b["run_id"] or not a["quality"] or not b["quality"]:
        raise ConfigError("compare needs two finished candidates of the same run (same seeds).")
    metric = a["quality"]["metric"]
    cmp = paired_compare(
        a["quality"]["per_seed"],
        b["quality"]["per_seed"],
        metric=metric,
        greater_is_better=greater_is_better(metric),
        correction=a["quality"].get("correction") or 0.0,
        rows=candidate_rows(ledger, (a, b), metric),
    )
    over = (
        f"n={cmp.n} seeds × {cmp.row_groups} test-row groups, "
        f"rows {cmp.row_share:.0%} of the variance"
        if cmp.row_groups
        else f"n={cmp.n}"
    )
    console.print(
        f"{metric}: {b['label']} − {a['label']} = {cmp.mean:+.4f} "
        f"[{cmp.low:+.4f}, {cmp.high:+.4f}] (95% CI, {over}); paired t "
        f"p={cmp.p_ttest:.3g}, Wilcoxon p={cmp.p_wilcoxon:.3g}",
        markup=False,
    )


@app.command("export")
def export_cmd(
    run_id: RunIdArg,
    out: Annotated[Path, typer.Option(metavar="PATH", help="Folder to write.")],
    candidate: Annotated[
        str, typer.Option(metavar="ID", help="'best' (the incumbent) or a candidate id.")
    ] = "best",
    format: Annotated[
        str, typer.Option("--format", metavar="onnx|safetensors", help="onnx or safetensors.")
    ] = "onnx",
    store: StoreOpt = None,
) -> None:
    """Write a candidate as one ONNX file (output-checked) or safetensors, with a manifest."""
    from tidian.runs import export_candidate
    from tidian.store import Store

    with console.status(f"exporting run {run_id} candidate {candidate} as {format}"):
        manifest = export_candidate(Store(store), run_id, candidate, out, format)
    line = (
        f"wrote candidate {manifest['candidate']} ({manifest['label']}) to {out}/{manifest['file']}"
    )
    check = manifest.get("export_check")
    if check:
        agree = check.get("argmax_agreement")
        line += (
            f"; ONNX Runtime vs torch on {check['samples']} test inputs: max |diff| "
            f"{check['max_abs_diff']:.2g}"
            + (f", argmax agreement {agree:.1%}" if agree is not None else "")
        )
    console.print(line, highlight=False)


@app.command("predict")
def predict_cmd(
    model_dir: Annotated[
        Path, typer.Argument(metavar="EXPORT", help="A folder written by `tidian export`.")
    ],
    inputs: Annotated[Path, typer.Argument(metavar="INPUTS", help="The file of raw inputs.")],
    out: Annotated[
        Path | None, typer.Option(metavar="PATH", help="CSV to write (default: print).")
    ] = None,
    threads: Annotated[int, typer.Option(metavar="N", help="Runtime threads.")] = 1,
) -> None:
    """Predict with an exported model on a file of raw inputs (CSV/TSV/Parquet/JSONL, NPZ, or
    .txt lines for text); the task's preprocessing is applied first."""
    from tidian.export import predict_file

    frame = predict_file(model_dir, inputs, out, threads=threads)
    skipped = frame.attrs.get("skipped") or {}
    if out is None:
        sys.stdout.write(frame.to_csv(index=False))
    else:
        console.print(f"wrote {len(frame) - len(skipped)} predictions to {out}", highlight=False)
    if skipped:
        # where a person finds the row: the file's line (a header line first in CSV/TSV)
        first = {".csv": 2, ".tsv": 2, ".jsonl": 1, ".json": 1}.get(inputs.suffix.lower())
        where = [
            f"{'line' if first else 'row'} {i + (first or 1)}: {why}"
            for i, why in sorted(skipped.items())
        ]
        shown = "; ".join(where[:10]) + (f"; … {len(where) - 10} more" if len(where) > 10 else "")
        Console(stderr=True).print(
            f"warning: {len(skipped)} of {len(frame)} rows not predicted (their prediction is "
            f"empty) — {shown}. The model's task was loaded without imputation; to predict "
            "such rows, train on a task loaded with missing='impute'.",
            markup=False,
            highlight=False,
        )


# -- evidence: attributions, the report, the report server -------------------------------------


class _Steps:
    """A rich progress bar fed by ``(what, done, total)`` callbacks; one line per phase."""

    def __init__(self, progress) -> None:
        self.progress, self.tasks = progress, {}

    def __call__(self, what: str, done: int, total: int) -> None:
        if what not in self.tasks:
            self.tasks[what] = self.progress.add_task(what, total=total)
        self.progress.update(self.tasks[what], completed=done, total=total)


def _progress(output: Console | None = None):
    """Rich progress bars with what is being done, counts, elapsed time and an ETA (on
    stderr unless ``output`` is given); plain timed lines when that is not a terminal."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    output = output or Console(stderr=True)
    if not output.is_terminal:
        return _PlainProgress(output)
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=output,
        transient=True,
    )


def _columns_line(columns: dict[str, str]) -> str:
    """How each column of a table was read, in one line."""
    return "columns read: " + "; ".join(f"{name}: {how}" for name, how in columns.items())


def _log_line(out: Console, text: str) -> None:
    """One timed line of a log, written and flushed at once (as written: no rich markup)."""
    out.print(f"{time.strftime('%H:%M:%S')} {text}", markup=False, highlight=False, soft_wrap=True)
    out.file.flush()


class _PlainProgress:
    """The part of rich's Progress that tidian uses, as plain lines for a log: a task's count
    at most every ``every`` seconds, and always when it completes."""

    def __init__(self, out: Console, every: float = 10.0) -> None:
        self.out, self.every, self.tasks = out, every, {}

    def __enter__(self) -> _PlainProgress:
        return self

    def __exit__(self, *exc: Any) -> None:
        return None

    def add_task(self, description: str, total: float | None = None, completed: float = 0):
        key = len(self.tasks)
        self.tasks[key] = {"what": description, "total": total, "done": completed, "at": None}
        self._show(key)
        return key

    def update(self, key: int, completed: float | None = None, total: float | None = None):
        task = self.tasks[key]
        task["done"] = task["done"] if completed is None else completed
        task["total"] = task["total"] if total is None else total
        self._show(key)

    def advance(self, key: int, amount: float = 1) -> None:
        self.update(key, completed=self.tasks[key]["done"] + amount)

    def remove_task(self, key: int) -> None:
        self.tasks.pop(key, None)

    def _show(self, key: int) -> None:
        task = self.tasks[key]
        finished = task["total"] is not None and task["done"] >= task["total"]
        now = time.monotonic()
        if task["at"] == "finished" or (
            not finished and task["at"] is not None and now - task["at"] < self.every
        ):
            return
        total = f"/{task['total']:g}" if task["total"] is not None else ""
        _log_line(self.out, f"{task['what']}: {task['done']:g}{total}")
        task["at"] = "finished" if finished else now


@app.command("explain")
def explain_cmd(
    run_id: RunIdArg,
    candidate: Annotated[
        str, typer.Option(metavar="ID", help="'best' (the incumbent) or a candidate id.")
    ] = "best",
    examples: Annotated[
        int, typer.Option(metavar="N", min=1, help="First N test rows to explain.")
    ] = 3,
    rows: Annotated[
        str | None, typer.Option(metavar="ROWS", help="Test rows to explain instead, e.g. 0,7,42.")
    ] = None,
    steps: Annotated[
        int, typer.Option(metavar="N", min=2, help="Integrated Gradients steps.")
    ] = 64,
    batch: Annotated[
        int, typer.Option(metavar="N", min=1, help="Captum's internal batch size (bounds memory).")
    ] = 256,
    top: Annotated[int, typer.Option(metavar="N", min=1, help="Inputs listed per example.")] = 8,
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Attributions for a candidate's predictions: Integrated Gradients and saliency per
    example (with IG's completeness gap and the two methods' agreement), and permutation
    importance of each feature for tabular tasks."""
    import numpy as np

    from tidian.report import explain_examples, to_json
    from tidian.runs import candidate_artifact, run_task
    from tidian.store import Store

    ledger = Store(store)
    row, folder = candidate_artifact(ledger, run_id, candidate, "explain")
    task = run_task(ledger, run_id)
    chosen = None
    if rows:
        try:
            chosen = [int(r) for r in rows.split(",") if r.strip()]
        except ValueError:
            raise ConfigError(f"--rows must be comma-separated integers; got {rows!r}.") from None
    with _progress() as progress:
        data = explain_examples(
            folder,
            task,
            examples=examples,
            rows=chosen,
            n_steps=steps,
            internal_batch_size=batch,
            progress=_Steps(progress),
        )
    data["candidate"] = {"id": row["id"], "label": row["label"], "folder": str(folder)}
    if as_json:
        _print_json(to_json(data))
        return
    if data.get("gradient_free"):
        console.print(
            f"candidate {row['id']} ({row['label']}) of run {run_id}: {data['gradient_free']}",
            highlight=False,
            markup=False,
        )
    else:
        ag = data["agreement"]
        console.print(
            f"candidate {row['id']} ({row['label']}) of run {run_id}: Integrated Gradients "
            f"({steps} steps, zero baseline) and saliency; agreement Spearman "
            f"{ag['mean_spearman']:.2f}, top-{ag['top']} overlap {ag['mean_top_overlap']:.0%}",
            highlight=False,
            markup=False,
        )
    names = data.get("feature_names")
    for ex in data["examples"]:
        ig = np.asarray(ex["integrated_gradients"]).reshape(-1)
        sal = np.asarray(ex["saliency"]).reshape(-1)
        shape = np.asarray(ex["integrated_gradients"]).shape
        table = _Table(
            title=f"test row {ex['row']}: label {ex['label']}, predicted {ex['predicted']} — "
            f"completeness gap {ex['relative_delta']:.1%}, Spearman {ex['spearman']:.2f}"
        )
        for col in ("input", "integrated gradients", "saliency"):
            table.add_column(col, justify="left" if col == "input" else "right")
        for j in np.argsort(-np.abs(ig))[:top]:
            if ex.get("tokens"):
                where = f"token {j}: {ex['tokens'][j]}"
            elif names:
                where = names[j]
            else:
                where = "position " + ",".join(map(str, np.unravel_index(j, shape)))
            table.add_row(where, _signed(ig[j]), f"{sal[j]:.4g}")
        console.print(table)
    if data.get("permutation"):
        table = _Table(title=f"permutation importance on the test split ({task.metric} drop)")
        for col in ("feature", "drop", "std"):
            table.add_column(col, justify="left" if col == "feature" else "right")
        for p in data["permutation"][:top]:
            table.add_row(p["feature"], _signed(p["drop"], ".4f"), f"{p['std']:.4f}")
        console.print(table)


@app.command("report")
def report_cmd(
    run_id: RunIdArg,
    out: Annotated[
        Path | None, typer.Option(metavar="PATH", help="HTML file (default: report-RUN_ID.html).")
    ] = None,
    analyses: Annotated[
        bool,
        typer.Option(help="Load the final model for confusion, calibration and attributions."),
    ] = True,
    examples: Annotated[
        int, typer.Option(metavar="N", min=0, help="Test rows with attributions.")
    ] = 3,
    store: StoreOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the collected data.")] = False,
) -> None:
    """One self-contained HTML report of a run (opens offline): headline, each stage's gain
    with its CI, Pareto plots, learning curves, errors, calibration, attributions, lineage,
    environment and the recipe to reproduce it."""
    from tidian.report import collect, to_json, write_report
    from tidian.store import Store

    ledger = Store(store)
    options = {"analyses": analyses, "examples": examples}
    if as_json:
        with _progress() as progress:
            data = collect(ledger, run_id, progress=_Steps(progress), **options)
        _print_json(to_json(data))
        return
    target = out or Path(f"report-{run_id}.html")
    with _progress() as progress:
        data = write_report(ledger, run_id, target, progress=_Steps(progress), **options)
    console.print(f"wrote {target} ({target.stat().st_size:,} bytes)", highlight=False)
    for what, why in data["skipped"].items():
        console.print(f"[yellow]not shown[/] {escape(what)}: {escape(why)}", highlight=False)


@app.command("serve")
def serve_cmd(
    store: StoreOpt = None,
    port: Annotated[
        int, typer.Option(metavar="PORT", min=0, max=65535, help="Port on 127.0.0.1.")
    ] = 8765,
    analyses: Annotated[
        bool, typer.Option(help="Compute model analyses when a report is opened.")
    ] = True,
) -> None:
    """Serve the store's runs and their reports on http://127.0.0.1:PORT (read-only)."""
    from tidian.report.serve import make_server
    from tidian.store import Store

    ledger = Store(store)
    try:
        server = make_server(ledger, port, analyses)
    except OSError as err:
        raise ConfigError(
            f"cannot listen on 127.0.0.1:{port}: {err.strerror}; try --port."
        ) from None
    console.print(
        f"serving {len(ledger.runs())} runs of {ledger.display_url()} on "
        f"http://127.0.0.1:{server.server_port}/ (read-only; Ctrl-C stops)",
        highlight=False,
        markup=False,
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def _print_json(doc: Any) -> None:
    """Write ``doc`` as JSON on standard output and flush it: a --json command prints its
    whole document or fails with a message (exit 1, see :func:`main`), never exits 0 having
    written nothing."""
    sys.stdout.write(json.dumps(doc, indent=2, default=str) + "\n")
    sys.stdout.flush()


def _error(message: str) -> None:
    # the message as written: brackets in it ('tidian[onnx]') are text, not rich markup
    Console(stderr=True).print(f"[bold red]error:[/] {escape(message)}", highlight=False)


def main(argv: list[str] | None = None) -> None:
    """Entry point: foreseeable errors print one clear message and exit with status 2; output
    that cannot be written (a full disk) is an error too (status 1), never a silent exit 0."""
    try:
        app(args=argv)
    except TidianError as err:
        _error(str(err))
        sys.exit(2)
    except SystemExit as done:
        # Ctrl-C in a command that does not handle it (typer turns the KeyboardInterrupt into
        # status 130, silently): one line says why it ended. `run` says so itself.
        if done.code == 130 and isinstance(
            getattr(done.__context__, "__cause__", None), KeyboardInterrupt
        ):
            Console(stderr=True).print("interrupted", highlight=False)
        if done.code not in (0, None):
            raise
        try:
            sys.stdout.flush()  # written now, while a failure can still be reported
        except OSError as err:
            _error(f"could not write the output: {err.strerror or err}")
            sys.exit(1)
        raise
    except OSError as err:
        if err.errno not in (errno.ENOSPC, errno.EIO, errno.EBADF, errno.EFBIG):
            raise
        _error(f"could not write the output: {err.strerror or err}")
        sys.exit(1)


if __name__ == "__main__":
    main()
