"""Fuzz cases for what a user can feed tidian: recipes, data files, model folders.

Each case writes its input into a folder of its own and names the command line to run on it
(``tidian recipe check``, ``run``, ``evaluate``, ``tasks inspect``, ``predict``). A driver runs
the cases in one process (tidian is imported once), each under a time limit (SIGALRM) and
the whole driver under an address-space limit, and sorts every outcome into:

* ``ran``: exit status 0;
* ``clear``: refused with one message (exit status 2, no traceback);
* ``traceback``: an exception escaped the command line (a raw traceback for the user);
* ``hang``: the case ran past its time limit;
* ``memory``: MemoryError (the address-space limit);
* ``crash``: any other end (a bare ``Aborted.``, exit status 1 without a message).

Only ``ran`` and ``clear`` are acceptable. Run as a script::

    python tests/fuzzing.py --form reduced --out results.jsonl [--workdir DIR]

(the test suite runs the reduced form, ``bench/fuzz.py`` the full one and prints the counts).
Cases are generated from a seed, so a failing case can be run again by its name.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import io
import json
import os
import random
import resource
import shutil
import signal
import struct
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

OUTCOMES = ("ran", "clear", "traceback", "hang", "memory", "crash")
BAD = ("traceback", "hang", "memory", "crash")


@dataclass(frozen=True)
class Case:
    name: str
    kind: str  # recipe | run | data | model
    make: Callable[[Path], list[str]]  # writes the input into a folder; the command's argv
    seconds: float = 60.0


# -- recipes ------------------------------------------------------------------------------------

BASE = {
    "task": {"name": "iris", "val_size": 0.2, "test_size": 0.2},
    "model": {"name": "mlp", "hidden": [8], "dropout": 0.0},
    "train": {
        "optimizer": "adam",
        "lr": 0.01,
        "epochs": 1,
        "batch_size": 32,
        "warmup_epochs": 0,
        "device": "cpu",
    },
    "evaluate": {"metric": "accuracy", "seeds": 2, "margin": 0.01},
    "deploy": {"runtime": "onnxruntime", "threads": 1, "batch_size": 1},
    "constraints": {"max_params": 100000},
    "stages": [
        {
            "tune": {
                "trials": 2,
                "sampler": "random",
                "space": {
                    "lr": {"float": [0.001, 0.1], "log": True},
                    "model": {"choice": [{"name": "mlp", "hidden": {"choice": [[8], [16, 8]]}}]},
                },
            }
        },
        {"prune": {"amount": 0.5, "finetune_epochs": 1}},
    ],
}

VALUES: list[Any] = [
    None,
    False,
    True,
    0,
    -1,
    0.5,
    -0.5,
    1e40,
    float("inf"),
    float("nan"),
    10**9,
    10**30,
    "",
    "x",
    "a" * 10_000,
    "cuda:x",
    "1:30:00",
    [],
    {},
    [1e12],
    [0],
    [-3],
    {"choice": []},
    {"choice": [[8], [64, 32]]},
    {"float": [1, 0]},
    {"int": [0, 10], "step": 1e-12},
    {"name": "mlp"},
    {"name": "no_such_model"},
    [{"no_such_stage": {}}],
]


def _paths(data: Any, prefix: tuple = ()) -> Iterator[tuple]:
    """Every place in a nested recipe: mapping keys and list positions, subtrees included."""
    if prefix:
        yield prefix
    if isinstance(data, dict):
        for key, value in data.items():
            yield from _paths(value, (*prefix, key))
    elif isinstance(data, list):
        for i, value in enumerate(data):
            yield from _paths(value, (*prefix, i))


def _set(data: Any, path: tuple, value: Any) -> Any:
    data = json.loads(json.dumps(data))  # a deep copy
    node = data
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return data


def _dump(data: Any) -> str:
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=10_000)


def _write(folder: Path, name: str, data: bytes | str) -> Path:
    path = folder / name
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def _check(text: bytes | str) -> Callable[[Path], list[str]]:
    return lambda d: ["recipe", "check", str(_write(d, "recipe.yaml", text))]


def _run(text: bytes | str) -> Callable[[Path], list[str]]:
    def make(d: Path) -> list[str]:
        path = _write(d, "recipe.yaml", text)
        return ["run", str(path), "--store", f"sqlite:///{d / 'runs.db'}"]

    return make


NINE = "[" + ", ".join(["*a"] * 9) + "]"


def _bomb(levels: int, field: tuple[str, str]) -> str:
    """A recipe whose ``field`` is an alias that expands to 9**levels values."""
    head = "a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1]\n" + "".join(
        f"{x}: &{x} {NINE.replace('*a', '*' + p)}\n"
        for p, x in list(zip("abcdefgh", "bcdefghi"))[: levels - 1]
    )
    return head + _dump(_set(BASE, field, "ALIAS")).replace("ALIAS", "*" + "abcdefghi"[levels - 1])


def recipe_file_cases() -> list[Case]:
    """Whole-file defects: encodings, binary, special files, YAML tricks, sizes."""
    good = _dump(BASE)
    cases = {
        "latin-1": good.encode() + b"# caf\xe9\n",
        "utf-16": good.encode("utf-16"),
        "utf-32": good.encode("utf-32"),
        "lone surrogate": good.encode() + b"# \xed\xa0\x80\n",
        "overlong": good.encode() + b"# \xc0\xaf\n",
        "binary": random.Random(0).randbytes(4096),
        "gzip": gzip.compress(good.encode()),
        "empty": b"",
        "only a comment": b"# nothing\n",
        "a list": b"- task: iris\n",
        "a number": b"5\n",
        "2 MB": good.encode() + b"#" * (2 << 20),
        "bad int tag": good + "x: !!int 0x\n",
        "bad float tag": good.replace("lr: 0.01", "lr: !!float abc"),
        "5000 digits": good.replace("lr: 0.01", "lr: " + "9" * 5000),
        "nested 1000": good + "x: " + "[" * 1000 + "]" * 1000 + "\n",
        "python tag": good + "x: !!python/object/apply:os.system ['true']\n",
        "duplicate key": good.replace("lr: 0.01", "lr: 0.01\n  lr: 5"),
        "sexagesimal": good.replace("epochs: 1", "epochs: 1:30:00"),
        "60k unknown keys": good
        + "evaluate2: {"
        + ", ".join(f"k{i}: 1" for i in range(60_000))
        + "}\n",
        "bomb 6 at lr": _bomb(6, ("train", "lr")),
        "bomb 9 at lr": _bomb(9, ("train", "lr")),
        "bomb 9 at hidden": _bomb(9, ("model", "hidden")),
        "tab indent": good.replace("  ", "\t"),
        "unclosed bracket": good.replace("lr: 0.01", "lr: [0.01", 1),
        "seeds 1e9": good.replace("seeds: 2", "seeds: 1000000000"),
        "grid step 1e-12": good.replace("sampler: random", "sampler: grid").replace(
            "log: true", "step: 1.0e-12"
        ),
    }
    out = [Case(f"recipe file: {name}", "recipe", _check(data)) for name, data in cases.items()]

    def special(kind: str) -> Callable[[Path], list[str]]:
        def make(d: Path) -> list[str]:
            if kind == "directory":
                return ["recipe", "check", str(d)]
            if kind == "fifo":
                os.mkfifo(d / "fifo.yaml")
                return ["recipe", "check", str(d / "fifo.yaml")]
            if kind == "missing":
                return ["recipe", "check", str(d / "none.yaml")]
            return ["recipe", "check", "/dev/zero"]

        return make

    out += [
        Case(f"recipe file: {k}", "recipe", special(k), 20)
        for k in ("directory", "fifo", "missing", "/dev/zero")
    ]
    out.append(
        Case(
            "recipe file: fifo to run",
            "run",
            lambda d: (
                os.mkfifo(d / "f.yaml"),
                ["run", str(d / "f.yaml"), "--store", f"sqlite:///{d / 'r.db'}"],
            )[1],
            20,
        )
    )
    return out


def recipe_value_cases(count: int | None, seed: int = 0) -> list[tuple[str, dict]]:
    """(name, recipe) pairs: one value from VALUES put at one place of BASE, plus unknown and
    missing keys; ``count`` of them drawn at random (all when None)."""
    mutants: list[tuple[str, dict]] = []
    for path in _paths(BASE):
        place = ".".join(map(str, path))
        for value in VALUES:
            shown = repr(value) if len(repr(value)) < 40 else repr(value)[:37] + "…"
            mutants.append((f"{place} = {shown}", _set(BASE, path, value)))
        if isinstance(path[-1], str):
            parent = BASE
            for key in path[:-1]:
                parent = parent[key]
            pruned = _set(BASE, path, None)
            node = pruned
            for key in path[:-1]:
                node = node[key]
            del node[path[-1]]
            mutants.append((f"{place} removed", pruned))
            mutants.append((f"{place}_typo added", _set(BASE, (*path[:-1], f"{path[-1]}_typo"), 1)))
    if count is not None and count < len(mutants):
        mutants = random.Random(seed).sample(mutants, count)
    return mutants


# -- data files ---------------------------------------------------------------------------------


def _frame(n: int = 60):
    import pandas as pd

    rng = np.random.default_rng(0)
    return pd.DataFrame(
        {
            "a": rng.normal(size=n).round(4),
            "b": rng.uniform(size=n).round(4),
            "colour": np.array(["red", "green", "blue"])[np.arange(n) % 3],
            "label": np.array(["x", "y"])[np.arange(n) % 2],
        }
    )


def _csv(frame, **kw) -> bytes:
    return frame.to_csv(index=False, **kw).encode()


def _evaluate(path: Path, *options: str) -> list[str]:
    argv = ["evaluate", "--task", str(path), "--model", "mlp", "--epochs", "1", "--seeds", "1"]
    for option in options:
        argv += ["--task-option", option]
    return argv


def _png_header(width: int, height: int) -> bytes:
    import zlib

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return (
        b"\x89PNG\r\n\x1a\n"
        + struct.pack(">I", len(ihdr))
        + chunk
        + struct.pack(">I", zlib.crc32(chunk))
        + b"\x00\x00\x00\x00IEND\xaeB`\x82"
    )


def _idx(array: np.ndarray) -> bytes:
    codes = {np.dtype(np.uint8): 0x08}
    head = struct.pack(">BBBB", 0, 0, codes[array.dtype], array.ndim)
    return head + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def data_cases() -> list[Case]:
    frame = _frame()
    csvs: dict[str, tuple[bytes, tuple[str, ...]]] = {
        "empty": (b"", ("target=label",)),
        "header only": (b"a,b,label\n", ("target=label",)),
        "no target": (_csv(frame), ()),
        "unknown target": (_csv(frame), ("target=lable",)),
        "target only": (_csv(frame[["label"]]), ("target=label",)),
        "missing numbers": (_csv(frame.assign(a=[None, *frame.a[1:]])), ("target=label",)),
        "infinite numbers": (_csv(frame.assign(a=[np.inf, *frame.a[1:]])), ("target=label",)),
        "missing target": (_csv(frame.assign(label=[None, *frame.label[1:]])), ("target=label",)),
        "one class": (_csv(frame.assign(label="x")), ("target=label",)),
        "a one-row class": (_csv(frame.assign(label=["z", *frame.label[1:]])), ("target=label",)),
        "semicolons and decimal commas": (_csv(frame, sep=";", decimal=","), ("target=label",)),
        "dates": (
            _csv(frame.assign(c=[f"2020-01-{i % 28 + 1:02d}" for i in range(60)])),
            ("target=label",),
        ),
        "free text": (
            _csv(frame.assign(c=[f"note {i} here" for i in range(60)])),
            ("target=label",),
        ),
        "text is the target": (_csv(frame), ("text=label", "target=label")),
        "binary": (random.Random(1).randbytes(3000), ("target=label",)),
        "latin-1": (
            _csv(frame.assign(colour="café")).decode().encode("latin-1"),
            ("target=label",),
        ),
        "utf-16": (_csv(frame).decode().encode("utf-16"), ("target=label",)),
        "unterminated quote": (b'a,b,label\n1,"2,x\n3,4,y\n', ("target=label",)),
        "ragged rows": (b"a,b,label\n1,2,x\n3,4,5,6,y\n7,x\n", ("target=label",)),
        "duplicate columns": (b"a,a,label\n" + b"1,2,x\n3,4,y\n" * 30, ("target=label",)),
        "10,000 columns": (
            (",".join(f"c{i}" for i in range(10_000)) + ",label\n").encode()
            + b"".join(
                (",".join("1" for _ in range(10_000)) + f",{'xy'[r % 2]}\n").encode()
                for r in range(20)
            ),
            ("target=label",),
        ),
        "test_size 0": (_csv(frame), ("target=label", "test_size=0")),
        "val_size 0.99": (_csv(frame), ("target=label", "val_size=0.99")),
        "test_size text": (_csv(frame), ("target=label", "test_size=half")),
        "split column without test": (
            _csv(frame.assign(s=["train"] * 40 + ["val"] * 20)),
            ("target=label", "split_column=s"),
        ),
        "split column junk": (_csv(frame.assign(s="maybe")), ("target=label", "split_column=s")),
        "unknown option": (_csv(frame), ("target=label", "targt=label")),
        "target is a feature too": (_csv(frame.assign(label2=frame.label)), ("target=label",)),
        "a tab file named .csv": (_csv(frame, sep="\t"), ("target=label",)),
        "values of text": (_csv(frame), ("target=label", "target_kind=values")),
        "complex numbers": (
            _csv(frame.assign(a=[complex(1, i) for i in range(60)])),
            ("target=label",),
        ),
        "huge numbers": (_csv(frame.assign(a="1e999")), ("target=label",)),
        "test labels unseen": (
            _csv(
                frame.assign(
                    s=["train"] * 40 + ["val"] * 10 + ["test"] * 10,
                    label=["x", "y"] * 25 + ["z"] * 10,
                )
            ),
            ("target=label", "split_column=s"),
        ),
    }
    out = [
        Case(
            f"csv: {name}",
            "data",
            lambda d, data=data, opts=opts: _evaluate(_write(d, "data.csv", data), *opts),
        )
        for name, (data, opts) in csvs.items()
    ]
    out.append(
        Case(
            "csv: gzip named .csv",
            "data",
            lambda d: _evaluate(_write(d, "data.csv", gzip.compress(_csv(frame))), "target=label"),
        )
    )
    out.append(
        Case(
            "csv: truncated .csv.gz",
            "data",
            lambda d: _evaluate(
                _write(d, "data.csv.gz", gzip.compress(_csv(frame))[:200]), "target=label"
            ),
        )
    )
    out.append(
        Case(
            "csv: a folder named .csv",
            "data",
            lambda d: (os.mkdir(d / "x.csv"), _evaluate(d / "x.csv", "target=label"))[1],
        )
    )
    out.append(
        Case(
            "csv: inspect semicolons",
            "data",
            lambda d: [
                "tasks",
                "inspect",
                str(_write(d, "d.csv", _csv(frame, sep=";", decimal=","))),
                "-o",
                "target=label",
            ],
        )
    )

    rng = np.random.default_rng(0)
    npzs: dict[str, dict[str, Any]] = {
        "widths differ": {
            "x_train": rng.normal(size=(40, 4)),
            "y_train": np.arange(40) % 2,
            "x_test": rng.normal(size=(10, 5)),
            "y_test": np.arange(10) % 2,
        },
        "empty test": {
            "x_train": rng.normal(size=(40, 4)),
            "y_train": np.arange(40) % 2,
            "x_test": np.zeros((0, 4)),
            "y_test": np.zeros(0),
        },
        "object array": {"x": np.array([{"a": 1}] * 40, dtype=object), "y": np.arange(40) % 2},
        "complex": {"x": rng.normal(size=(40, 4)) + 1j, "y": np.arange(40) % 2},
        "y too short": {"x": rng.normal(size=(40, 4)), "y": np.arange(10) % 2},
        "no y": {"x": rng.normal(size=(40, 4))},
        "scalar x": {"x": np.array(3.0), "y": np.array(1)},
        "no feature columns": {"x": np.zeros((40, 0)), "y": np.arange(40) % 2},
        "nan x": {"x": np.full((40, 4), np.nan), "y": np.arange(40) % 2},
        "text x": {"x": np.array(["a"] * 40), "y": np.arange(40) % 2},
    }

    def npz(arrays: dict[str, Any]) -> Callable[[Path], list[str]]:
        def make(d: Path) -> list[str]:
            with open(d / "data.npz", "wb") as handle:
                np.savez(handle, **arrays)
            return _evaluate(d / "data.npz")

        return make

    out += [Case(f"npz: {name}", "data", npz(arrays)) for name, arrays in npzs.items()]
    out.append(
        Case(
            "npz: truncated",
            "data",
            lambda d: (
                npz(npzs["widths differ"])(d),
                _write(d, "data.npz", (d / "data.npz").read_bytes()[:300]),
                _evaluate(d / "data.npz"),
            )[2],
        )
    )
    images = rng.integers(0, 255, size=(20, 8, 8), dtype=np.uint8)
    idxs = {
        "truncated header": _idx(images)[:6],
        "truncated body": _idx(images)[:100],
        "bad magic": b"\x01\x02\x08\x03" + _idx(images)[4:],
        "claims 2^32 rows": b"\x00\x00\x08\x03"
        + struct.pack(">III", 2**32 - 1, 8, 8)
        + images.tobytes(),
    }
    out += [
        Case(
            f"idx: {name}",
            "data",
            lambda d, data=data: _evaluate(
                _write(d, "images-idx3-ubyte", data),
                f"labels={_write(d, 'labels-idx1-ubyte', _idx((np.arange(20) % 2).astype(np.uint8)))}",
            ),
        )
        for name, data in idxs.items()
    ]
    out.append(
        Case(
            "idx: truncated gzip",
            "data",
            lambda d: _evaluate(
                _write(d, "images-idx3-ubyte.gz", gzip.compress(_idx(images))[:120]),
                f"labels={_write(d, 'labels-idx1-ubyte', _idx((np.arange(20) % 2).astype(np.uint8)))}",
            ),
        )
    )

    def image_folder(
        sizes: list[tuple[int, int]], *options: str, bomb: bool = False
    ) -> Callable[[Path], list[str]]:
        def make(d: Path) -> list[str]:
            from PIL import Image

            for c, name in enumerate(["cat", "dog"]):
                (d / "imgs" / name).mkdir(parents=True)
                for i in range(6):
                    w, h = sizes[(c * 6 + i) % len(sizes)]
                    Image.fromarray(np.full((h, w), 40 * i, dtype=np.uint8)).save(
                        d / "imgs" / name / f"{i}.png"
                    )
            if bomb:
                _write(d / "imgs" / "cat", "huge.png", _png_header(40_000, 40_000))
            return _evaluate(d / "imgs", *options)

        return make

    out += [
        Case("images: mixed sizes", "data", image_folder([(8, 8), (9, 7)])),
        Case("images: size 0x0", "data", image_folder([(8, 8)], "size=[0, 0]")),
        Case("images: size 8", "data", image_folder([(8, 8)], "size=8")),
        Case("images: size big", "data", image_folder([(8, 8)], "size=big")),
        Case("images: size 100000", "data", image_folder([(8, 8)], "size=[100000, 100000]")),
        Case("images: 40000 px header", "data", image_folder([(8, 8)], bomb=True)),
        Case(
            "images: one class",
            "data",
            lambda d: (
                image_folder([(8, 8)])(d),
                shutil.rmtree(d / "imgs" / "dog"),
                _evaluate(d / "imgs"),
            )[2],
        ),
        Case(
            "images: not images",
            "data",
            lambda d: (
                image_folder([(8, 8)])(d),
                _write(d / "imgs" / "cat", "5.png", b"not a png"),
                _evaluate(d / "imgs"),
            )[2],
        ),
        Case("images: empty folder", "data", lambda d: (os.mkdir(d / "e"), _evaluate(d / "e"))[1]),
    ]
    return out


# -- model folders ------------------------------------------------------------------------------


def _export(root: Path) -> dict[str, Path]:
    """A tiny run on iris, exported as safetensors and as ONNX, and a CSV of raw inputs."""
    from tidian.cli import main

    recipe = _dump({**{k: BASE[k] for k in ("task", "model", "train")}, "evaluate": {"seeds": 2}})
    path = _write(root, "tiny.yaml", recipe)
    store = f"sqlite:///{root / 'tiny.db'}"
    with _captured() as out:
        codes = [_exit_code(main, ["run", str(path), "--store", store])]
        from tidian.store import Store

        run_id = Store(store).runs()[0]["id"]
        for fmt in ("safetensors", "onnx"):
            codes.append(
                _exit_code(
                    main,
                    ["export", run_id, "--out", str(root / fmt), "--format", fmt, "--store", store],
                )
            )
    if any(codes):
        raise RuntimeError(
            f"the model the cases damage could not be made: {out.getvalue()[-2000:]}"
        )
    from tidian import load_task

    task = load_task("iris")
    columns = task.feature_names or [f"x{i}" for i in range(task.train.x.shape[1])]
    inputs = root / "inputs.csv"
    import pandas as pd

    pd.DataFrame(task.test.x, columns=columns).to_csv(inputs, index=False)
    return {"safetensors": root / "safetensors", "onnx": root / "onnx", "inputs": inputs}


def _safetensors_variants(data: bytes) -> dict[str, bytes]:
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + length])
    body = data[8 + length :]

    def with_header(h: Any, raw: bytes | None = None) -> bytes:
        text = raw if raw is not None else json.dumps(h).encode()
        return struct.pack("<Q", len(text)) + text + body

    name = next(k for k in header if k != "__metadata__")
    far = {**header, name: {**header[name], "data_offsets": [0, 10**12]}}
    bad_dtype = {**header, name: {**header[name], "dtype": "Q99"}}
    bad_shape = {**header, name: {**header[name], "shape": [10**9, 10**9]}}
    return {
        "header length 2^60": struct.pack("<Q", 2**60) + data[8:],
        "header not JSON": with_header(None, b"{not json" + b" " * 20),
        "offsets out of range": with_header(far),
        "unknown dtype": with_header(bad_dtype),
        "huge shape": with_header(bad_shape),
        "truncated": data[: len(data) // 2],
        "empty": b"",
    }


def model_cases() -> list[Case]:
    """Damaged export folders run through ``predict`` and ``transfer``; the model they damage
    (:func:`_export`) is made once, by the first case that runs."""
    holder: dict[str, dict[str, Path]] = {}

    def base(d: Path) -> dict[str, Path]:
        if "x" not in holder:
            holder["x"] = _export(Path(os.environ["TIDIAN_FUZZ_ROOT"]))
        return holder["x"]

    def damaged(
        fmt: str,
        edit: Callable[[Path], Any],
        inputs: Callable[[Path], Path] | None = None,
        resign: bool = False,
    ):
        """``resign``: the manifest's digests are made to match the damaged files (a folder
        written by a faulty tool), so the reader of each file is reached."""

        def make(d: Path) -> list[str]:
            made = base(d)
            folder = d / fmt
            shutil.copytree(made[fmt], folder)
            edit(folder)
            if resign:
                from tidian.export import file_digest

                manifest = json.loads((folder / "manifest.json").read_text())
                manifest["digests"] = {
                    n: file_digest(folder / n) for n in manifest.get("digests") or {}
                }
                (folder / "manifest.json").write_text(json.dumps(manifest))
            data = inputs(d) if inputs else made["inputs"]
            return ["predict", str(folder), str(data)]

        return make

    out = []
    st = "safetensors"
    for name in (
        "header length 2^60",
        "header not JSON",
        "offsets out of range",
        "unknown dtype",
        "huge shape",
        "truncated",
        "empty",
    ):
        for resign in (False, True):

            def edit(f: Path, name: str = name) -> None:
                data = (f / "model.safetensors").read_bytes()
                _write(f, "model.safetensors", _safetensors_variants(data)[name])

            signed = " (digests updated)" if resign else ""
            out.append(
                Case(
                    f"model: safetensors {name}{signed}", "model", damaged(st, edit, resign=resign)
                )
            )

    def edit_json(file: str, change: Callable[[dict], Any]) -> Callable[[Path], Any]:
        def edit(folder: Path) -> None:
            data = json.loads((folder / file).read_text())
            change(data)
            (folder / file).write_text(json.dumps(data))

        return edit

    out += [
        Case(
            "model: manifest without task",
            "model",
            damaged(st, edit_json("manifest.json", lambda m: m.pop("task"))),
        ),
        Case(
            "model: manifest not JSON",
            "model",
            damaged(st, lambda f: _write(f, "manifest.json", b"{")),
        ),
        Case(
            "model: spec with an extra key",
            "model",
            damaged(st, edit_json("tidian.json", lambda m: m.update(extra=1)), resign=True),
        ),
        Case(
            "model: spec without its name",
            "model",
            damaged(st, edit_json("tidian.json", lambda m: m.pop("name", None)), resign=True),
        ),
        Case(
            "model: spec not JSON",
            "model",
            damaged(st, lambda f: _write(f, "tidian.json", b"\x00\x01"), resign=True),
        ),
        Case(
            "model: spec a list",
            "model",
            damaged(st, lambda f: _write(f, "tidian.json", b"[1, 2]"), resign=True),
        ),
        Case(
            "model: manifest task a number",
            "model",
            damaged(st, edit_json("manifest.json", lambda m: m.update(task=5))),
        ),
        Case(
            "model: manifest file elsewhere",
            "model",
            damaged(st, edit_json("manifest.json", lambda m: m.update(file="../../etc/passwd"))),
        ),
        Case(
            "model: onnx truncated",
            "model",
            damaged(
                "onnx",
                lambda f: [_write(f, p.name, p.read_bytes()[:100]) for p in f.glob("*.onnx")],
            ),
        ),
        Case(
            "model: onnx truncated (digests updated)",
            "model",
            damaged(
                "onnx",
                lambda f: [_write(f, p.name, p.read_bytes()[:100]) for p in f.glob("*.onnx")],
                resign=True,
            ),
        ),
        Case(
            "model: onnx junk (digests updated)",
            "model",
            damaged(
                "onnx",
                lambda f: [
                    _write(f, p.name, random.Random(2).randbytes(2000)) for p in f.glob("*.onnx")
                ],
                resign=True,
            ),
        ),
        Case(
            "model: inputs an object NPZ",
            "model",
            damaged(
                st,
                lambda f: None,
                lambda d: (
                    np.savez(d / "in.npz", x=np.array([{"a": 1}], dtype=object)),
                    d / "in.npz",
                )[1],
            ),
        ),
        Case(
            "model: inputs lack columns",
            "model",
            damaged(st, lambda f: None, lambda d: _write(d, "in.csv", b"q\n1\n")),
        ),
        Case(
            "model: inputs text",
            "model",
            damaged(
                st,
                lambda f: None,
                lambda d: _write(
                    d,
                    "in.csv",
                    b"sepal length (cm),sepal width (cm),petal length (cm),petal width (cm)\na,b,c,d\n",
                ),
            ),
        ),
        Case(
            "model: not a folder",
            "model",
            lambda d: ["predict", str(_write(d, "m", b"x")), str(_write(d, "i.csv", b"a\n1\n"))],
        ),
    ]
    transfer = {**{k: BASE[k] for k in ("task", "model", "train")}, "evaluate": {"seeds": 2}}

    def pretrained(where: Callable[[Path], str]) -> Callable[[Path], list[str]]:
        def make(d: Path) -> list[str]:
            recipe = {
                **transfer,
                "stages": [{"transfer": {"pretrained": where(d), "strategy": "finetune"}}],
            }
            return _run(_dump(recipe))(d)

        return make

    def broken_pretrained(d: Path) -> str:
        folder = d / "pre"
        shutil.copytree(base(d)[st], folder)
        _write(
            folder,
            "model.safetensors",
            _safetensors_variants((folder / "model.safetensors").read_bytes())[
                "offsets out of range"
            ],
        )
        return str(folder)

    def junk_pretrained(d: Path) -> str:
        folder = d / "hf"
        folder.mkdir()
        _write(folder, "config.json", json.dumps({"model_type": "bert", "hidden_size": 8}))
        _write(folder, "model.safetensors", struct.pack("<Q", 2**60) + b"{}")
        return str(folder)

    out += [
        Case("model: transfer from /etc", "run", pretrained(lambda d: "/etc")),
        Case("model: transfer from a damaged model", "run", pretrained(broken_pretrained)),
        Case("model: transfer from a damaged HF folder", "run", pretrained(junk_pretrained)),
    ]
    return out


# -- the driver ---------------------------------------------------------------------------------


def cases(form: str, seed: int = 0) -> list[Case]:
    """The reduced form (CI: every file, data and model case, 120 recipe mutants checked and
    6 of those that pass run), or the full form (every mutant checked, 60 that pass run)."""
    reduced = form == "reduced"
    mutants = recipe_value_cases(120 if reduced else None, seed)
    out = recipe_file_cases()
    out += [Case(f"recipe: {name}", "recipe", _check(_dump(data)), 30) for name, data in mutants]
    passing = [(name, data) for name, data in mutants if _passes_check(data)]
    runs = random.Random(seed).sample(passing, min(len(passing), 6 if reduced else 60))
    out += [Case(f"run: {name}", "run", _run(_dump(data)), 240) for name, data in runs]
    out += data_cases()
    out += model_cases()
    return out


def _passes_check(data: dict) -> bool:
    """Whether ``recipe check`` accepts a recipe: such a recipe must also run."""
    from tidian.exceptions import TidianError
    from tidian.recipe import validate_recipe

    try:
        validate_recipe(data)
    except TidianError:
        return False
    return True


class _TimeUp(BaseException):
    """Raised by SIGALRM: a case past its time (BaseException: no handler swallows it)."""


@contextlib.contextmanager
def _captured() -> Iterator[io.StringIO]:
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(buffer):
        yield buffer


def _exit_code(main: Callable[[list[str]], Any], argv: list[str]) -> int:
    try:
        main(argv)
    except SystemExit as done:
        return 0 if done.code is None else done.code if isinstance(done.code, int) else 1
    return 0


def run_case(case: Case, folder: Path) -> dict[str, Any]:
    from tidian.cli import main

    folder.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    here = os.getcwd()
    os.chdir(folder)  # whatever a command writes beside it stays in the case's folder

    def time_up(signum: int, frame: Any) -> None:
        raise _TimeUp

    signal.signal(signal.SIGALRM, time_up)
    signal.setitimer(signal.ITIMER_REAL, case.seconds)
    record: dict[str, Any] = {"case": case.name, "kind": case.kind}
    try:
        with _captured() as out:
            argv = case.make(folder)
            record["argv"] = argv
            code = _exit_code(main, argv)
        text = out.getvalue()
        if "Traceback (most recent call last)" in text:
            record["outcome"] = "traceback"
        elif code == 0:
            record["outcome"] = "ran"
        elif code == 2 and text.strip():
            record["outcome"] = "clear"
        else:
            record["outcome"] = "crash"
        record["message"] = text.strip()[-600:]
        record["exit"] = code
    except _TimeUp:
        record["outcome"] = "hang"
    except MemoryError:
        record["outcome"] = "memory"
    except BaseException as err:
        record["outcome"] = "traceback"
        record["message"] = "".join(traceback.format_exception_only(type(err), err)).strip()[-600:]
        record["where"] = traceback.extract_tb(err.__traceback__)[-1][:3]
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        os.chdir(here)
    record["seconds"] = round(time.monotonic() - started, 2)
    return record


def _limit_memory(extra_gb: float) -> None:
    """Cap the address space at what is mapped now plus ``extra_gb``: a case that asks for
    more gets MemoryError instead of taking the machine down."""
    with open("/proc/self/status") as status:
        size_kb = next(int(line.split()[1]) for line in status if line.startswith("VmSize:"))
    limit = size_kb * 1024 + int(extra_gb * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Run tidian's fuzz cases; one JSON line each.")
    parser.add_argument("--form", choices=("reduced", "full"), default="reduced")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", default=None, help="run the cases whose name holds this text")
    parser.add_argument("--memory-gb", type=float, default=4.0)
    args = parser.parse_args(argv)
    import tidian.cli  # noqa: F401 - imported before the memory cap

    root = args.workdir or Path(os.environ.get("TMPDIR", "/tmp")) / f"tidian-fuzz-{os.getpid()}"
    root.mkdir(parents=True, exist_ok=True)
    os.environ["TIDIAN_FUZZ_ROOT"] = str(root)
    os.environ.setdefault("TIDIAN_STORE", f"sqlite:///{root / 'default.db'}")
    selected = [c for c in cases(args.form, args.seed) if not args.only or args.only in c.name]
    _limit_memory(args.memory_gb)
    with open(args.out, "w") as out:
        for i, case in enumerate(selected):
            out.write(json.dumps({"started": case.name}) + "\n")
            out.flush()
            record = run_case(case, root / f"case-{i}")
            out.write(json.dumps(record, default=str) + "\n")
            out.flush()
            shutil.rmtree(root / f"case-{i}", ignore_errors=True)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    main()
