"""What a run ran on: versions, CPU, thread counts and the command line — stored with the run
so a report can say how to reproduce it and what its timings were measured on."""

from __future__ import annotations

import os
import platform
import shlex
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

PACKAGES = (
    "tidian",
    "torch",
    "numpy",
    "scikit-learn",
    "onnx",
    "onnxruntime",
    "optuna",
    "transformers",
    "peft",
    "lightgbm",
    "captum",
)


def cpu_model() -> str:
    """The CPU's model name (Linux: /proc/cpuinfo), else what the platform module says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def command_line(argv: list[str] | None = None) -> str:
    """The command as typed (``tidian run recipe.yaml``), quoted so it can be pasted back."""
    argv = list(sys.argv if argv is None else argv)
    if argv and Path(argv[0]).name in ("tidian", "__main__.py"):
        argv[0] = "tidian"
    return shlex.join(argv)


def environment(argv: list[str] | None = None) -> dict[str, Any]:
    return {
        "command": command_line(argv),
        "cwd": os.getcwd(),
        "versions": versions(),
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
