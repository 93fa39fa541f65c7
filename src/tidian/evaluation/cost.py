"""What a model costs, measured on this machine: size, compute, latency and throughput.

Nothing here is estimated. Sizes come from the actual safetensors serialisation, FLOPs from
PyTorch's flop counter running a real forward pass, latency and throughput from timed runs
after warm-up with a fixed thread count (one thread by default: the deployment case of one
request per core, and far less noisy than a shared thread pool on a busy machine).
"""

from __future__ import annotations

import contextlib
import copy
import gzip
import os
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_model as st_save_model
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from tidian.exceptions import ConfigError, bad_value
from tidian.export import OnnxModel, export_onnx, real_inputs
from tidian.models.io import WEIGHTS, load_model
from tidian.store.artifacts import local


@dataclass(frozen=True)
class Cost:
    """Measured cost of one model. Latency in milliseconds at batch 1; throughput in samples/s.

    ``flops`` counts what PyTorch's flop counter sees: matrix products and convolutions
    (2 per multiply-add), recurrent and attention layers included; ``macs = flops / 2``.
    Element-wise work (activations, norms, gates' sums) is not in it.
    """

    params: int
    nonzero_params: int
    size_bytes: int
    flops: int
    macs: int
    latency_ms: float
    latency_p95_ms: float
    throughput: float
    batch_size: int
    threads: int
    device: str
    repeats: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@contextlib.contextmanager
def torch_threads(n: int):
    """Run with ``n`` intra-op threads, restoring the previous count after."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def serialized_size(model: nn.Module) -> int:
    """Bytes of the model's weights written as safetensors (what ``save_model`` writes)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.safetensors")
        st_save_model(model, path)
        return os.path.getsize(path)


def count_flops(model: nn.Module, example: torch.Tensor) -> int:
    """FLOPs of one forward pass on ``example`` (batch 1), by PyTorch's flop counter."""
    counter = FlopCounterMode(display=False)
    # Fused kernels hide their matrix products from the counter: the transformer's fast path
    # and oneDNN's LSTM. Count with both off (same arithmetic, decomposed into counted ops).
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # oneDNN flag toggling warns about Intel GPUs
            with torch.backends.mkldnn.flags(enabled=False), counter, torch.no_grad():
                model(example)
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
    return int(counter.get_total_flops())


def _timed(call: Any, x: Any, repeats: int, warmup: int) -> np.ndarray:
    """Milliseconds of each of ``repeats`` calls ``call(x)`` after ``warmup`` untimed ones."""
    with torch.inference_mode():
        for _ in range(warmup):
            call(x)
        times = np.empty(repeats)
        for i in range(repeats):
            start = time.perf_counter_ns()
            call(x)
            times[i] = time.perf_counter_ns() - start
    return times / 1e6


def _example(task_or_input: Any, n: int) -> torch.Tensor:
    """Exactly ``n`` real inputs (repeated when there are fewer)."""
    x = torch.as_tensor(real_inputs(task_or_input))
    reps = -(-n // len(x))
    return x.repeat(reps, *([1] * (x.ndim - 1)))[:n].contiguous()


def measure_cost(
    model: nn.Module,
    task_or_input: Any,
    *,
    repeats: int = 200,
    warmup: int = 20,
    batch_size: int = 256,
    threads: int = 1,
) -> Cost:
    """Measure ``model`` on CPU with inputs from ``task`` (its test split) or an input array.

    Latency: median and 95th percentile of ``repeats`` batch-1 calls after ``warmup`` calls.
    Throughput: samples per second at ``batch_size``, median of max(5, repeats // 20) calls.
    The model is measured in eval mode on a CPU copy, so a model on the GPU is left as it is.
    """
    for name, value, low in (
        ("repeats", repeats, 1),
        ("warmup", warmup, 0),
        ("batch_size", batch_size, 1),
        ("threads", threads, 1),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise bad_value(name, f"an integer >= {low}", value)
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    if device.type != "cpu":
        model = copy.deepcopy(model).cpu()
    was_training = model.training
    model.eval()
    params = sum(p.numel() for p in model.parameters())
    nonzero = sum(int(torch.count_nonzero(p)) for p in model.parameters())
    one = _example(task_or_input, 1)
    batch = _example(task_or_input, batch_size)
    flops = count_flops(model, one)
    with torch_threads(threads):
        latency = _timed(model, one, repeats, warmup)
        calls = max(5, repeats // 20)
        per_batch = _timed(model, batch, calls, max(2, warmup // 10))
    model.train(was_training)
    return Cost(
        params=params,
        nonzero_params=nonzero,
        size_bytes=serialized_size(model),
        flops=flops,
        macs=flops // 2,
        latency_ms=float(np.median(latency)),
        latency_p95_ms=float(np.percentile(latency, 95)),
        throughput=float(batch_size / (np.median(per_batch) / 1e3)),
        batch_size=batch_size,
        threads=threads,
        device="cpu",
        repeats=repeats,
    )


@dataclass(frozen=True)
class RuntimeCost:
    """Measured cost of a model file on a runtime (ONNX Runtime here). ``size_bytes`` is the
    file as stored; ``gzip_bytes`` the same file gzip-compressed (what zeroed weights save
    in transfer or on disk — not in memory, and not in speed)."""

    runtime: str
    size_bytes: int
    gzip_bytes: int
    latency_ms: float
    latency_p95_ms: float
    throughput: float
    batch_size: int
    threads: int
    repeats: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def gzip_size(path: str | os.PathLike) -> int:
    with open(path, "rb") as f:
        return len(gzip.compress(f.read(), compresslevel=9, mtime=0))


def measure_onnx_cost(
    path: str | os.PathLike,
    task_or_input: Any,
    *,
    repeats: int = 200,
    warmup: int = 20,
    batch_size: int = 256,
    threads: int = 1,
) -> RuntimeCost:
    """Batch-1 latency (median, p95) and throughput at ``batch_size`` of an ONNX model file
    in ONNX Runtime on CPU with ``threads`` intra-op threads, after ``warmup`` calls."""
    runtime = OnnxModel(path, threads=threads)
    one = _example(task_or_input, 1).numpy().astype(runtime.input_dtype)
    batch = _example(task_or_input, batch_size).numpy().astype(runtime.input_dtype)

    latency = _timed(runtime, one, repeats, warmup)
    per_batch = _timed(runtime, batch, max(5, repeats // 20), max(2, warmup // 10))
    return RuntimeCost(
        runtime="onnxruntime",
        size_bytes=os.path.getsize(path),
        gzip_bytes=gzip_size(path),
        latency_ms=float(np.median(latency)),
        latency_p95_ms=float(np.percentile(latency, 95)),
        throughput=float(batch_size / (np.median(per_batch) / 1e3)),
        batch_size=batch_size,
        threads=threads,
        repeats=repeats,
    )


def resolve_runtime(name: str) -> str:
    """``auto`` → onnxruntime when the onnx extra is installed, else torch."""
    if name != "auto":
        return name
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        return "torch"
    return "onnxruntime"


def deployment_cost(folder: Any, task: Any, deploy: Any = None, repeats: int = 100) -> dict:
    """The cost of a saved candidate on its deployment runtime, with the torch numbers beside.

    Top-level ``latency_ms``, ``throughput`` and ``size_bytes`` are the deployment runtime's
    (``runtime`` says which); ``dense_bytes`` is the fp32 safetensors file; ``gzip_bytes`` the
    deployed file gzip-compressed (zeroed weights shrink it, not the model in memory). A
    quantised candidate (``model.onnx`` in its folder) always deploys on ONNX Runtime; a float
    one is exported to ``model.fp32.onnx`` when the runtime is ONNX Runtime.
    """
    folder = local(folder)  # a remote artifact: its cached local copy (ONNX files go there)
    threads = getattr(deploy, "threads", 1)
    batch_size = getattr(deploy, "batch_size", 256)
    asked = getattr(deploy, "runtime", "auto")
    runtime = resolve_runtime(asked)
    model = load_model(folder)
    base = measure_cost(model, task, repeats=repeats, threads=threads, batch_size=batch_size)
    cost = base.to_dict()
    torch_numbers = {
        k: cost[k] for k in ("latency_ms", "latency_p95_ms", "throughput", "size_bytes")
    }
    torch_numbers["gzip_bytes"] = gzip_size(folder / WEIGHTS)
    cost.update(
        runtime="torch",
        dense_bytes=base.size_bytes,
        gzip_bytes=torch_numbers["gzip_bytes"],
        runtimes={"torch": torch_numbers},
    )
    onnx = folder / "model.onnx"
    if not onnx.exists() and runtime == "onnxruntime":
        onnx = folder / "model.fp32.onnx"
        if not onnx.exists():
            try:
                cost["export_check"] = export_onnx(model, task, onnx).to_dict()
            except ConfigError as err:
                if asked != "auto":
                    raise
                # runtime 'auto': a model ONNX cannot take is measured where it runs, on torch
                cost["onnx_error"] = str(err)
    if onnx.exists():
        if onnx.name == "model.onnx":  # quantised: torch runs only its float source
            cost["runtimes"]["torch"]["model"] = "the float model it was quantised from"
        measured = measure_onnx_cost(
            onnx, task, repeats=repeats, threads=threads, batch_size=batch_size
        ).to_dict()
        cost["runtimes"]["onnxruntime"] = measured
        cost.update(
            runtime="onnxruntime",
            file=onnx.name,
            **{k: measured[k] for k in ("latency_ms", "latency_p95_ms", "throughput")},
            size_bytes=measured["size_bytes"],
            gzip_bytes=measured["gzip_bytes"],
        )
    return cost


def deployed_runner(folder: Any, task: Any, threads: int = 1) -> tuple[Any, Any]:
    """``(call, batch-1 input)`` for a saved candidate on the runtime its cost was measured
    on: its ONNX file (int8 ``model.onnx`` or ``model.fp32.onnx``) when it has one, else the
    torch model in eval mode (``interleaved_latency`` sets its threads once, outside the
    timed calls)."""
    folder = local(folder)
    for name in ("model.onnx", "model.fp32.onnx"):
        if (folder / name).exists():
            runtime = OnnxModel(folder / name, threads=threads)
            return runtime, _example(task, 1).numpy().astype(runtime.input_dtype)
    return load_model(folder).eval(), _example(task, 1)


def interleaved_latency(
    a: tuple[Any, Any],
    b: tuple[Any, Any],
    *,
    rounds: int = 9,
    calls: int = 100,
    threads: int = 1,
) -> float:
    """Median over ``rounds`` of (median latency of b) / (median latency of a), the two timed
    in alternating blocks of ``calls`` so that drift of a shared machine hits both alike.
    Below 1: b is faster."""
    ratios = []
    with torch_threads(threads):  # for torch models; ONNX Runtime sessions carry their own
        for _ in range(rounds):
            ta = np.median(_timed(a[0], a[1], calls, 10))
            tb = np.median(_timed(b[0], b[1], calls, 10))
            ratios.append(tb / ta)
    return float(np.median(ratios))
