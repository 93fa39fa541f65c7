"""The run report: :func:`collect` gathers plain data, :func:`render` formats it as one
self-contained HTML file, :func:`write_report` does both; :mod:`tidian.report.serve` serves
reports straight from a store."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from tidian.exceptions import DataError
from tidian.report.collect import collect, explain_examples, to_json
from tidian.report.render import render

__all__ = ["collect", "explain_examples", "render", "to_json", "write_report"]


def writable(path: str | Path) -> Path:
    """``path`` if a file can be written there, else a DataError saying why."""
    path = Path(path)
    folder = path.resolve().parent
    if path.is_dir():
        raise DataError(f"cannot write the report to {str(path)!r}: it is a folder.")
    if not folder.is_dir():
        raise DataError(
            f"cannot write the report to {str(path)!r}: {str(folder)!r} does not exist."
        )
    if not os.access(folder, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise DataError(f"cannot write the report to {str(path)!r}: permission denied.")
    return path


def write_report(store: Any, run_id: str, out: str | Path, **options: Any) -> dict[str, Any]:
    """Collect run ``run_id``, render it, write ``out`` atomically; returns the data."""
    out = writable(out)
    data = collect(store, run_id, **options)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(render(to_json(data)), encoding="utf-8")
    os.replace(tmp, out)
    return data
