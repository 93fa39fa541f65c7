"""Helpers shared by the benchmarks: a printed table and machine facts for the record."""

from __future__ import annotations

import os
import platform

import torch
from rich.console import Console
from rich.table import Table


def machine() -> str:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (
        f"{platform.processor() or platform.machine()}, {cores} cores, torch "
        f"{torch.__version__}, python {platform.python_version()}"
    )


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
