"""Helpers shared by the benchmarks: a printed table and machine facts for the record."""

from __future__ import annotations

import dataclasses
import math
import os
import platform
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.table import Table


def machine() -> str:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (
        f"{platform.processor() or platform.machine()}, {cores} cores, torch "
        f"{torch.__version__}, python {platform.python_version()}"
    )


def interleaved_costs(
    measures: dict[str, Callable[[int], Any]], repeats: int, rounds: int = 5
) -> dict[str, Any]:
    """The cost of each entry (``measures[name](calls)`` returns a ``Cost``), its latencies the
    median over ``rounds`` rounds that visit every entry in turn: a burst of load on a shared
    machine then hits all entries alike instead of one (single back-to-back measurements of
    the same ONNX graph differed 2x here)."""
    per_round = max(1, repeats // rounds)
    runs: dict[str, list] = {name: [] for name in measures}
    for _ in range(rounds):
        for name, measure in measures.items():
            runs[name].append(measure(per_round))
    return {
        name: dataclasses.replace(
            costs[0],
            latency_ms=float(np.median([c.latency_ms for c in costs])),
            latency_p95_ms=float(np.median([c.latency_p95_ms for c in costs])),
            repeats=per_round * rounds,
        )
        for name, costs in runs.items()
    }


def print_table(title: str, headers: list[str], rows: list[list[str]], note: str = "") -> None:
    table = Table(title=title)
    for i, h in enumerate(headers):
        table.add_column(h, justify="left" if i == 0 else "right")
    for row in rows:
        table.add_row(*row)
    console = Console(width=140)
    console.print(table)
    console.print(f"machine: {machine()}")
    if note:
        console.print(note)


def candidate_rows(result, baseline: str) -> list[list[str]]:
    """One row per candidate of a tidian run: label, test quality with its CI, the gate's
    paired gain with its CI, the decision (the baseline row named ``baseline``)."""
    rows = []
    for c in result.candidates:
        q, gate = c["quality"], c.get("gate") or {}
        rows.append(
            [
                baseline if c["stage"] == "baseline" else c["label"],
                f"{q['mean']:.4f} [{q['ci_low']:.4f}, {q['ci_high']:.4f}]",
                f"{gate['gain']:+.4f} [{gate['low']:+.4f}, {gate['high']:+.4f}]" if gate else "",
                c["decision"] or "",
            ]
        )
    return rows


def wilson(hits: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson's 95% interval of a rate of ``hits`` in ``n``."""
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half
