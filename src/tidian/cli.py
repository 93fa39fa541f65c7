"""The ``tidian`` command: thin — parse arguments, call the public API, render with rich."""

from __future__ import annotations

import contextlib
import json
import math
import sys
from typing import Annotated, Any

import typer
import yaml
from rich.console import Console
from rich.table import Table

import tidian
from tidian.exceptions import ConfigError, TidianError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="tidian — upgrade machine-learning models and prove each upgrade.",
)
console = Console()


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


@app.command("tasks")
def tasks_cmd() -> None:
    """List the built-in tasks with their sizes and kinds."""
    table = Table(title="Built-in tasks (tidian.load_task(name))")
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
    table = Table(title="Model zoo (tidian.create_model(name, task, **options))")
    for col in ("name", "inputs", "description", "options (defaults)"):
        table.add_column(col)
    for row in tidian.describe_models():
        opts = ", ".join(f"{k}={v!r}" for k, v in row["options"].items())
        table.add_row(row["name"], ", ".join(row["inputs"]), row["description"], opts)
    console.print(table)


@app.command("metrics")
def metrics_cmd() -> None:
    """List the quality metrics."""
    table = Table(title="Metrics")
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


@app.command("evaluate")
def evaluate_cmd(
    task: Annotated[
        str, typer.Option(help="Built-in task name or a data file/folder.")
    ] = "mnist1d",
    model: Annotated[str, typer.Option(help="Zoo model name (`tidian models`).")] = "cnn1d",
    option: Annotated[
        list[str] | None,
        typer.Option("--option", "-o", help="Model option key=value (repeatable)."),
    ] = None,
    train: Annotated[
        list[str] | None,
        typer.Option(
            "--train", "-t", help="Training option key=value, e.g. lr=0.003 (repeatable)."
        ),
    ] = None,
    task_option: Annotated[
        list[str] | None,
        typer.Option(
            "--task-option", help="Task option key=value, e.g. target=label (repeatable)."
        ),
    ] = None,
    seeds: Annotated[int, typer.Option(min=1, help="Number of seeds (trainings).")] = 3,
    epochs: Annotated[int, typer.Option(min=1, help="Training epochs.")] = 20,
    jobs: Annotated[
        int,
        typer.Option("--jobs", "-j", min=1, help="Worker processes for seeds (one thread each)."),
    ] = 1,
    confidence: Annotated[float, typer.Option(help="Confidence level of intervals.")] = 0.95,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
) -> None:
    """Train and evaluate one model over several seeds; print quality (mean ± CI) and cost."""
    loaded = tidian.load_task(task, **_pairs(task_option, "--task-option"))
    config = tidian.TrainConfig.from_dict(
        {"epochs": epochs, **_pairs(train, "--train")}, where="--train"
    )
    options = _pairs(option, "--option")
    fitted = tidian.create_model(model, loaded, **options)  # fails fast on bad options
    with (
        console.status(f"training {model} on {loaded.name} over {seeds} seeds…", spinner="dots")
        if not as_json
        else contextlib.nullcontext()
    ):
        result = tidian.evaluate(
            {"name": model, **options},
            loaded,
            config,
            seeds=seeds,
            n_jobs=jobs,
            confidence=confidence,
            keep_models=True,
        )
    run = result.runs[0]
    fitted.load_state_dict(run.state)
    cost = tidian.measure_cost(fitted, loaded)
    if as_json:
        doc = result.to_dict()
        doc["cost"] = cost.to_dict()
        print(json.dumps(doc, indent=2, default=str))
        return
    s = loaded.summary()
    console.print(
        f"[bold]{model}[/] on [bold]{loaded.name}[/] — {s['input']}, {s['target']}, "
        f"{s['train']}/{s['val']}/{s['test']} train/val/test; seeds {result.seeds}; "
        f"{config.epochs} epochs, {config.optimizer} lr={config.lr}"
    )
    table = Table(
        title=f"Quality on the test split (mean and {confidence:.0%} CI over "
        f"{len(result.seeds)} seeds)"
    )
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
    costs = Table(title="Cost (measured on this CPU, 1 thread)")
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


def main(argv: list[str] | None = None) -> None:
    """Entry point: foreseeable errors print one clear message and exit with status 2."""
    try:
        app(args=argv)
    except TidianError as err:
        Console(stderr=True).print(f"[bold red]error:[/] {err}", highlight=False)
        sys.exit(2)


if __name__ == "__main__":
    main()
