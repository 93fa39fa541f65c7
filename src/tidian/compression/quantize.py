"""Quantisation for deployment on ONNX Runtime: int8 dynamic / static (QDQ), QAT, fp16.

On CPUs the fast int8 path is ONNX Runtime's: torch's own int8 CPU paths were slower than
fp32 eager on the reference machine and ``torch.ao.quantization`` is deprecated. So a model
is exported to ONNX in float and quantised there:

* ``dynamic`` — int8 weights, activations quantised per batch at run time (no calibration);
* ``static``  — int8 weights and activations with ranges calibrated on the training split,
  in QDQ format (``per_channel`` weights as an option);
* ``qat``     — quantisation-aware fine-tuning in torch (weights fake-quantised per channel,
  layer inputs per tensor with running ranges, straight-through gradients), then the same
  static int8 export with per-channel weights;
* ``fp16``    — half-precision weights and compute (inputs and outputs stay float32); CPUs
  without fp16 arithmetic gain size, not speed — the measured cost says which.

``keep_float`` names nodes left in float; ``keep_float: auto`` runs a per-layer sensitivity
analysis on the validation split and keeps the most damaging layers in float until the
quantised model is within ``tolerance`` of the float one (a mixed-precision model).
"""

from __future__ import annotations

import fnmatch
import functools
import logging
import platform
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tidian.compression.apply import ONNX_FILE, StepContext, transform_step
from tidian.compression.finetune import check_distill, finetune, teacher_outputs
from tidian.exceptions import ConfigError, bad_value, require
from tidian.export import OnnxModel, compact_onnx, export_onnx
from tidian.metrics import (
    check_amount,
    compute_metrics,
    default_amount,
    greater_is_better,
    quality_amount,
)
from tidian.models.structure import set_module

MODES = ("dynamic", "static", "qat", "fp16")
CALIBRATIONS = ("minmax", "entropy", "percentile")
QUANTIZABLE_OPS = ("MatMul", "Gemm", "Conv", "LSTM", "GRU", "Attention")


@dataclass(frozen=True)
class QuantizeConfig:
    """mode: dynamic | static | qat | fp16. per_channel: per-output-channel weight scales
    (static and qat). calibration: minmax | entropy | percentile; calibration_samples: how
    many training inputs calibrate the ranges. keep_float: node-name patterns left in float,
    or ``auto`` (sensitivity analysis; ``tolerance`` on the validation split: a number in the
    metric's units, '0.5pt' or '1%' of the float model's score; default 0.5pt, else 1%).
    qat_epochs / finetune: quantisation-aware fine-tuning length and config changes.
    reduce_range: 7-bit weights (true), 8-bit (false), or auto: 7-bit for static int8 and QAT
    on an x86-64 CPU without 8-bit dot-product instructions (VNNI), whose int8 kernels
    otherwise saturate."""

    mode: str = "dynamic"
    per_channel: bool = False
    calibration: str = "minmax"
    calibration_samples: int = 512
    keep_float: list[str] | str = field(default_factory=list)
    tolerance: float | str | None = None
    qat_epochs: int = 5
    finetune: dict[str, Any] = field(default_factory=dict)
    distill: dict[str, Any] | None = None  # QAT towards the float model's outputs
    reduce_range: bool | str = "auto"

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise bad_value("quantize.mode", f"one of {MODES}", self.mode)
        if self.calibration not in CALIBRATIONS:
            raise bad_value("quantize.calibration", f"one of {CALIBRATIONS}", self.calibration)
        n = self.calibration_samples
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise bad_value("quantize.calibration_samples", "an integer >= 1", n)
        if not (self.keep_float == "auto" or isinstance(self.keep_float, list | tuple)):
            raise bad_value(
                "quantize.keep_float", "a list of node patterns or 'auto'", self.keep_float
            )
        if self.tolerance is not None:
            check_amount(self.tolerance, "quantize.tolerance")
        if self.reduce_range not in (True, False, "auto"):
            raise bad_value("quantize.reduce_range", "true, false or auto", self.reduce_range)
        check_distill(self.distill, "quantize")


# -- quantisation-aware training -------------------------------------------------------------


class FakeQuant(nn.Module):
    """Wraps a Linear/Conv during QAT: int8 per-channel symmetric weights and a per-tensor
    8-bit input range tracked as a running min/max (momentum 0.9), both simulated in float
    with straight-through gradients (``torch.fake_quantize_*`` are core ops)."""

    def __init__(self, inner: nn.Module, momentum: float = 0.9) -> None:
        super().__init__()
        self.inner, self.momentum = inner, momentum
        self.register_buffer("low", torch.tensor(float("inf")))
        self.register_buffer("high", torch.tensor(float("-inf")))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()  # under autocast the input may be bf16/fp16; quantise in float32
        if self.training:
            low, high = x.detach().min(), x.detach().max()
            if torch.isinf(self.low):
                self.low.copy_(low), self.high.copy_(high)
            else:
                self.low.lerp_(low, 1 - self.momentum), self.high.lerp_(high, 1 - self.momentum)
        low, high = torch.clamp(self.low, max=0.0), torch.clamp(self.high, min=0.0)
        scale = float(torch.clamp((high - low) / 255.0, min=1e-8))
        zero = int(torch.round(-low / scale).clamp(0, 255))
        x = torch.fake_quantize_per_tensor_affine(x, scale, zero, 0, 255)
        w = self.inner.weight
        w_scale = w.detach().abs().flatten(1).amax(1).clamp_min(1e-8) / 127.0
        w = torch.fake_quantize_per_channel_affine(
            w, w_scale, torch.zeros_like(w_scale, dtype=torch.int32), 0, -127, 127
        )
        if isinstance(self.inner, nn.Linear):
            return F.linear(x, w, self.inner.bias)
        return self.inner._conv_forward(x, w, self.inner.bias)


def qat_(model: nn.Module, task: Any, train: Any, config: QuantizeConfig, seed: int) -> nn.Module:
    """Fine-tune ``model`` in place for ``config.qat_epochs`` with fake quantisation on its
    Linear and Conv layers; returns it, unwrapped, in float. With ``config.distill``, towards
    the float model's own outputs."""
    teacher = teacher_outputs(model, task) if config.distill is not None else None
    paths = [
        p
        for p, m in model.named_modules()
        if p
        and isinstance(m, nn.Linear | nn.Conv1d | nn.Conv2d)
        and not isinstance(m, nn.modules.linear.NonDynamicallyQuantizableLinear)
    ]
    if not paths:
        raise ConfigError("QAT found no Linear or Conv layer in this model.")
    for p in paths:
        set_module(model, p, FakeQuant(model.get_submodule(p)))
    try:
        finetune(model, task, train, config, config.qat_epochs, seed + 2000, teacher)
    finally:
        for p in paths:
            set_module(model, p, model.get_submodule(p).inner)
    return model.eval()


# -- ONNX Runtime quantisation ---------------------------------------------------------------


class _Calibration:
    """Feeds calibration batches to ONNX Runtime's calibrator."""

    def __init__(self, name: str, x: np.ndarray, batch: int = 64) -> None:
        self.batches = iter([{name: x[i : i + batch]} for i in range(0, len(x), batch)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self.batches, None)

    def rewind(self) -> None:  # pragma: no cover - not used by the calibrators we call
        pass


def onnx_nodes(path: str | Path, ops: tuple[str, ...] = QUANTIZABLE_OPS) -> list[str]:
    """Names of the nodes of the given op types (what quantisation would touch)."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    return [n.name for n in graph.node if n.op_type in ops]


def _excluded(path: Path, patterns: list[str]) -> list[str]:
    if not patterns:
        return []
    nodes = onnx_nodes(path)
    out = [n for n in nodes if any(fnmatch.fnmatchcase(n, p) for p in patterns)]
    if not out:
        raise ConfigError(
            f"quantize.keep_float {patterns} matches no node; quantisable nodes: {nodes[:20]}."
        )
    return out


def saturates(machine: str | None = None, cpuinfo: str | None = None) -> bool:
    """Whether ONNX Runtime's int8 kernels may saturate on this CPU: an x86-64 CPU without
    8-bit dot-product instructions (AVX-512 VNNI, AVX-VNNI, AMX) adds pairs of u8 × s8
    products in 16 bits (ONNX Runtime's and OpenVINO's documentation). Measured here (AMD
    EPYC, AVX2 only): a per-channel static int8 mnist1d CNN lost 2–4 accuracy points on some
    seeds with 8-bit weights and nothing with 7-bit ones (``reduce_range``). ``machine``
    and ``cpuinfo`` default to this machine's (``platform.machine()``, ``/proc/cpuinfo``)."""
    if machine is None and cpuinfo is None:
        return _this_cpu_saturates()
    machine = platform.machine() if machine is None else machine
    if machine.lower() not in ("x86_64", "amd64", "i386", "i686"):
        return False
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:  # not Linux: no flags to read, so assume the common case
            return True
    flags = set(cpuinfo.split())
    return not flags & {"avx512_vnni", "avx_vnni", "amx_int8"}


@functools.cache
def _this_cpu_saturates() -> bool:
    """:func:`saturates` for this machine, read once (the sensitivity analysis quantises once
    per node)."""
    return saturates(platform.machine(), None)


def _quiet_ort(record: logging.LogRecord) -> bool:
    """Drop ORT's root-logger lines that say nothing to a user: the pre-processing hint, and
    one multi-line type dump per tensor it leaves alone for not being float32 (a kernel
    machine's float64 arithmetic) — the stage's verdict says whether anything got smaller."""
    message = record.getMessage()
    return not any(
        hint in message
        for hint in ("pre-processing before quantization", "unsupported type to quantize")
    )


def quantize_onnx(
    source: str | Path,
    target: str | Path,
    mode: str,
    *,
    calibration: np.ndarray | None = None,
    per_channel: bool = False,
    method: str = "minmax",
    exclude: list[str] | None = None,
    reduce_range: bool | None = None,
) -> Path:
    """Quantise the float ONNX model ``source`` into ``target`` (written atomically).
    ``reduce_range``: 7-bit weights; None: :func:`auto_reduce_range`."""
    if reduce_range is None:
        reduce_range = auto_reduce_range(mode)
    require("onnxruntime", "onnx", "ONNX Runtime quantisation")
    from onnxruntime import quantization as q

    source, target = Path(source), Path(target)
    tmp_dir = Path(tempfile.mkdtemp(dir=target.parent))
    out = tmp_dir / "model.onnx"
    try:
        if mode == "dynamic":
            # ORT logs a warning on the root logger for every model not pre-processed, which
            # dynamic quantisation does not need: one line per seed in a run's log otherwise
            logging.getLogger().addFilter(_quiet_ort)
            q.quantize_dynamic(
                source,
                out,
                weight_type=q.QuantType.QInt8,
                nodes_to_exclude=exclude or [],
                reduce_range=reduce_range,
            )
        elif mode in ("static", "qat"):
            import onnxruntime as ort

            session = ort.InferenceSession(str(source), providers=["CPUExecutionProvider"])
            meta = session.get_inputs()[0]
            if calibration is None:
                raise ConfigError("static quantisation needs calibration inputs.")
            calibration = np.ascontiguousarray(
                calibration, dtype=np.int64 if "int64" in meta.type else np.float32
            )
            expected = tuple(d for d in meta.shape[1:])
            if tuple(calibration.shape[1:]) != expected:
                raise bad_value(
                    "calibration inputs", f"samples of shape {expected}", calibration.shape[1:]
                )
            prepared = tmp_dir / "prepared.onnx"
            try:
                q.quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
            except Exception:  # pre-processing is an optimisation; quantise the plain graph
                shutil.copy(source, prepared)
            q.quantize_static(
                prepared,
                out,
                _Calibration(meta.name, calibration),
                quant_format=q.QuantFormat.QDQ,
                per_channel=per_channel,
                reduce_range=reduce_range,
                activation_type=q.QuantType.QUInt8,
                weight_type=q.QuantType.QInt8,
                nodes_to_exclude=exclude or [],
                calibrate_method={
                    "minmax": q.CalibrationMethod.MinMax,
                    "entropy": q.CalibrationMethod.Entropy,
                    "percentile": q.CalibrationMethod.Percentile,
                }[method],
            )
        elif mode == "fp16":
            import onnx
            from onnxruntime.transformers.float16 import convert_float_to_float16

            half = convert_float_to_float16(
                onnx.load(str(source)), keep_io_types=True, node_block_list=exclude or None
            )
            onnx.save(half, str(out))
        else:
            raise bad_value("quantize mode", f"one of {MODES}", mode)

        compact_onnx(out)
        out.replace(target)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return target


def _score(path: Path, task: Any, metric: str) -> float:
    split = task.val if len(task.val) else task.test
    return compute_metrics(split.y, OnnxModel(path).predict(split.x), [metric])[metric]


def sensitivity(
    source: Path,
    task: Any,
    metric: str,
    config: QuantizeConfig,
    calibration: np.ndarray | None,
    workdir: Path,
) -> dict[str, Any]:
    """Per-layer sensitivity on the validation split: the metric when every quantisable node
    but one is quantised, for each node. Larger recovery = more sensitive layer."""

    sign = 1 if greater_is_better(metric) else -1

    def quantized(exclude: list[str]) -> float:
        target = workdir / "probe.onnx"
        _quantize(source, target, config, calibration, exclude)
        return _score(target, task, metric)

    full = _score(source, task, metric)
    every = quantized([])
    nodes = onnx_nodes(source)
    per_node = {n: quantized([n]) for n in nodes}
    ranked = sorted(nodes, key=lambda n: -sign * (per_node[n] - every))
    return {"float": full, "quantized": every, "without_node": per_node, "ranked": ranked}


def quantize_model(
    model: nn.Module,
    task: Any,
    config: QuantizeConfig | dict[str, Any],
    target: str | Path,
    *,
    metric: str | None = None,
    train: Any = None,
    seed: int = 0,
) -> tuple[nn.Module, dict[str, Any]]:
    """Quantise ``model`` for ONNX Runtime into the file ``target``.

    Returns the float model it was made from (changed by QAT) and a report: the float ONNX
    model's output check, the nodes kept in float and, with ``keep_float: auto``, the
    sensitivity analysis.
    """

    config = config if isinstance(config, QuantizeConfig) else QuantizeConfig(**config)
    metric = metric or task.metric
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    if config.mode == "qat":
        qat_(model, task, train, config, seed)
    calibration = None
    if config.mode in ("static", "qat"):
        x = np.asarray(task.train.x)
        order = np.random.default_rng(seed).permutation(len(x))[: config.calibration_samples]
        calibration = x[np.sort(order)]
    work = Path(tempfile.mkdtemp(dir=target.parent))
    try:
        source = work / "float.onnx"
        check = export_onnx(model, task, source)
        report: dict[str, Any] = {"mode": config.mode, "export_check": check.to_dict()}
        if config.keep_float == "auto":
            analysis = sensitivity(source, task, metric, config, calibration, work)
            sign = 1 if greater_is_better(metric) else -1
            keep: list[str] = []
            value = analysis["quantized"]
            tolerance = quality_amount(
                default_amount(metric, 0.5) if config.tolerance is None else config.tolerance,
                metric,
                analysis["float"],
                "quantize.tolerance",
                guard=True,
            )
            for node in analysis["ranked"]:
                if sign * (analysis["float"] - value) <= tolerance:
                    break
                keep.append(node)
                _quantize(source, work / "mixed.onnx", config, calibration, keep)
                value = _score(work / "mixed.onnx", task, metric)
            report["sensitivity"] = {**analysis, "kept_float": keep, "mixed": value}
            exclude = keep
        else:
            exclude = _excluded(source, list(config.keep_float))
        _quantize(source, target, config, calibration, exclude)
        report["kept_float"] = exclude
        report["reduce_range"] = _reduce_range(config)
        return model, report
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _quantize(source, target, config, calibration, exclude) -> None:
    quantize_onnx(
        source,
        target,
        "static" if config.mode == "qat" else config.mode,
        calibration=calibration,
        per_channel=config.per_channel or config.mode == "qat",
        method=config.calibration,
        exclude=exclude,
        reduce_range=_reduce_range(config),
    )


def auto_reduce_range(mode: str) -> bool:
    """``reduce_range: auto``: 7-bit weights for static int8 (and QAT, quantised statically)
    where the kernels saturate. Dynamic int8 keeps 8 bits: its activation ranges are taken
    per batch, the mnist1d CNN lost nothing with it, and 7 bits cost a tiny iris model its
    margin (tests/compression: test_pipeline_compresses_seed_by_seed_and_gates)."""
    return mode in ("static", "qat") and saturates()


def _reduce_range(config: QuantizeConfig) -> bool:
    if config.reduce_range == "auto":
        return auto_reduce_range(config.mode)
    return bool(config.reduce_range)


@transform_step(
    "quantize",
    config=QuantizeConfig,
    last="it produces an ONNX Runtime model that torch steps (prune, lowrank) cannot change",
    requires=(("onnx", "onnx"), ("onnxruntime", "onnx")),
)
def quantize_step(model: nn.Module, config: dict[str, Any], ctx: StepContext):
    """The ``quantize`` step of a transform: the parent's model as ``model.onnx`` in the
    seed's folder (the float model it came from is saved beside it)."""
    return quantize_model(
        model,
        ctx.task,
        config,
        ctx.workdir / ONNX_FILE,
        metric=ctx.metric,
        train=ctx.train,
        seed=ctx.seed,
    )
