"""The ``transfer`` stage: start from a pretrained model instead of from scratch.

``pretrained`` is a local Hugging Face / sentence-transformers directory (a text encoder; the
task must be tokenised by its tokenizer), a tidian model folder, or ``run:RUN_ID`` (that run's
final model) — a model trained on another task, given a new head for this one. Each strategy
is one candidate, trained seed by seed (the new head is seeded; the body is the pretrained one):

* ``linear_probe`` — body frozen; its features are computed once per split and cached, and
  only the head is trained on them (the same result as training through the frozen body);
* ``finetune``     — everything trains;
* ``gradual``      — ULMFiT's gradual unfreezing: the head first, then one more layer from the
                     top every ``every`` epochs;
* ``llrd``         — layer-wise learning-rate decay: lr × ``decay``^k for the k-th layer below
                     the head;
* ``lora``         — low-rank adapters (peft) on the body's linear layers, head trained; the
                     adapters are merged into the weights afterwards, so the saved model is a
                     plain model at the base model's cost.

The job runs in the pipeline's workers through the transform mechanism (``compression.apply``).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from tidian.compression.apply import StepContext, transform_step
from tidian.exceptions import ConfigError, bad_value, require
from tidian.metrics import predict
from tidian.models import ModelSpec, model_spec, set_output_scale, set_spec
from tidian.models.base import Head, Signature
from tidian.models.io import load_model, read_spec
from tidian.models.pretrained import PACKAGED, check_tokenizer, detect_format, resolve_pretrained
from tidian.stages.base import Context, Proposal, Stage, register_stage
from tidian.store import Store
from tidian.store.artifacts import committed
from tidian.tasks.task import Split
from tidian.training.build import seeded_model
from tidian.training.config import TrainConfig
from tidian.training.loop import fit
from tidian.training.optim import LR_SCALE, UNFREEZE_LATER

STRATEGIES = ("linear_probe", "finetune", "gradual", "llrd", "lora")
# Learning rates per strategy for a pretrained transformer (the usual ranges: a new head alone
# takes a large step, a pretrained body a small one); ``lr`` in the config overrides them.
HF_LR = {"linear_probe": 1e-2, "finetune": 3e-5, "gradual": 3e-5, "llrd": 5e-5, "lora": 5e-4}
# For a tidian source, multiples of the incumbent's learning rate.
TIDIAN_LR_SCALE = {"linear_probe": 3.0, "finetune": 0.3, "gradual": 0.3, "llrd": 0.5, "lora": 3.0}
LORA_KEYS = ("r", "alpha", "dropout", "target_modules")


@dataclass(frozen=True)
class TransferConfig:
    """pretrained: a local directory (Hugging Face, sentence-transformers, tidian model) or
    ``run:RUN_ID``. strategy: one of linear_probe | finetune | gradual | llrd | lora, or a
    list (one candidate each). head: {hidden: 0, dropout: 0.1} for a Hugging Face encoder;
    pooling: auto | mean | cls. lr: {strategy: lr} overrides. gradual: {every: 1}; llrd:
    {decay: 0.8}; lora: {r: 8, alpha: 16, dropout: 0.05, target_modules: [query, value]}.
    train: training-config changes (epochs, batch_size…). allow_network: let a hub name
    download once (never by default). gate: superiority | non_inferiority."""

    pretrained: str = ""
    strategy: str | list[str] = "linear_probe"
    head: dict[str, Any] = field(default_factory=dict)
    pooling: str = "auto"
    lr: dict[str, float] = field(default_factory=dict)
    gradual: dict[str, Any] = field(default_factory=dict)
    llrd: dict[str, Any] = field(default_factory=dict)
    lora: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    allow_network: bool = False
    gate: str = "superiority"

    def __post_init__(self) -> None:
        if not isinstance(self.pretrained, str) or not self.pretrained:
            raise bad_value(
                "transfer.pretrained", "a local directory or run:RUN_ID", self.pretrained
            )
        for s in self.strategies:
            if s not in STRATEGIES:
                raise bad_value("transfer.strategy", f"one of {STRATEGIES} (or a list)", s)
        if not self.strategies or len(set(self.strategies)) != len(self.strategies):
            raise bad_value("transfer.strategy", "distinct strategies", self.strategy)
        if not isinstance(self.head, dict) or set(self.head) - {"hidden", "dropout"}:
            raise bad_value("transfer.head", "{hidden: n, dropout: p}", self.head)
        if self.pooling not in ("auto", "mean", "cls"):
            raise bad_value("transfer.pooling", "auto, mean or cls", self.pooling)
        for k, v in self.lr.items():
            if (
                k not in STRATEGIES
                or isinstance(v, bool)
                or not isinstance(v, int | float)
                or v <= 0
            ):
                raise bad_value(f"transfer.lr.{k}", "a positive number for a known strategy", v)
        every = self.gradual.get("every", 1)
        if (
            set(self.gradual) - {"every"}
            or isinstance(every, bool)
            or not isinstance(every, int)
            or every < 1
        ):
            raise bad_value("transfer.gradual", "{every: positive integer}", self.gradual)
        decay = self.llrd.get("decay", 0.8)
        if set(self.llrd) - {"decay"} or isinstance(decay, bool) or not 0 < decay <= 1:
            raise bad_value("transfer.llrd", "{decay: a number in (0, 1]}", self.llrd)
        if set(self.lora) - set(LORA_KEYS):
            raise bad_value("transfer.lora", f"a mapping with keys from {LORA_KEYS}", self.lora)
        r = self.lora.get("r", 8)
        if isinstance(r, bool) or not isinstance(r, int) or r < 1:
            raise bad_value("transfer.lora.r", "a positive integer", r)
        if self.gate not in ("superiority", "non_inferiority"):
            raise bad_value("transfer.gate", "superiority or non_inferiority", self.gate)

    @property
    def strategies(self) -> list[str]:
        return [self.strategy] if isinstance(self.strategy, str) else list(self.strategy)


def resolve_source(pretrained: str, ctx: Context, allow_network: bool) -> dict[str, str]:
    """``{"kind": "hf" | "tidian", "path": local folder}`` for the stage's ``pretrained``."""

    if pretrained.startswith("run:"):
        run_id = pretrained[4:]
        store = Store(ctx.storage)
        row = store.run(run_id)
        if not row.get("incumbent_id"):
            raise ConfigError(f"transfer.pretrained: run {run_id!r} has no final model yet.")
        artifact = store.get_candidate(row["incumbent_id"])["artifact"]
        if not artifact or not committed(artifact):
            raise ConfigError(
                f"transfer.pretrained: the model of run {run_id!r} is not on disk ({artifact})."
            )
        return {"kind": "tidian", "path": str(artifact)}
    path = resolve_pretrained(pretrained, allow_network=allow_network)
    fmt = detect_format(path)
    return {"kind": "tidian" if fmt == "tidian" else "hf", "path": str(path.resolve())}


@register_stage("transfer", config=TransferConfig, kind="quality")
class Transfer(Stage):
    """Transfer learning from a pretrained model: probe, fine-tune, gradual, llrd, LoRA."""

    def requirements(self) -> list[tuple[str, str]]:
        c = self.config
        needs = [("peft", "transfer")] if "lora" in c.strategies else []
        tidian_source = c.pretrained.startswith("run:") or (
            Path(c.pretrained, "tidian.json").exists()
        )
        return needs if tidian_source else [("transformers", "transfer"), *needs]

    @classmethod
    def example_config(cls, ctx: Context) -> dict[str, Any]:
        # a tidian model as the source: the incumbent's own first seed, with a fresh head
        return {"pretrained": ctx.artifacts[ctx.seeds[0]], "strategy": ["linear_probe", "finetune"]}

    def gate_kind(self) -> str:
        return "quality" if self.config.gate == "superiority" else "cost"

    def run(self, incumbent: Proposal, ctx: Context) -> list[Proposal]:
        c = self.config
        source = resolve_source(c.pretrained, ctx, c.allow_network)
        base_lr = float(incumbent.train.get("lr", 1e-3))
        if source["kind"] == "hf":
            if ctx.task.input_kind != "text":
                raise ConfigError(
                    f"transfer: {c.pretrained!r} is a text encoder; this task has "
                    f"{ctx.task.input_kind} inputs."
                )
            check_tokenizer(ctx.task, source["path"])

            # a packaged model's name stays portable in the ledger; a directory is absolute
            where = c.pretrained if c.pretrained in PACKAGED else source["path"]
            model = {"name": "hf_encoder", "path": where, "pooling": c.pooling, **c.head}
        else:
            spec = read_spec(source["path"])
            check_compatible(spec["signature"], ctx.task, source["path"])
            model = {"name": spec["name"], **spec["options"]}
        out = []
        for strategy in c.strategies:
            default = (
                HF_LR[strategy] if source["kind"] == "hf" else base_lr * TIDIAN_LR_SCALE[strategy]
            )
            train = {**incumbent.train, "init": "default", "lr": c.lr.get(strategy, default)}
            train.update(c.train)
            step = {
                "source": source,
                "strategy": strategy,
                "model": model,
                "every": c.gradual.get("every", 1),
                "decay": c.llrd.get("decay", 0.8),
                "lora": dict(c.lora),
            }
            label = f"transfer {strategy} from {Path(c.pretrained).name or c.pretrained}"
            out.append(
                Proposal(
                    label,
                    model,
                    train,
                    {"transfer": {"pretrained": c.pretrained, "strategy": strategy}},
                    transform=[{"transfer": step}],
                )
            )
        return out


def check_compatible(signature: dict[str, Any], task: Any, path: str) -> None:
    """A tidian source model's inputs must be this task's inputs (the head is replaced)."""

    src, dst = Signature.of(signature), Signature.of(task)
    if (src.input_kind, src.input_shape, src.vocab_size) != (
        dst.input_kind,
        dst.input_shape,
        dst.vocab_size,
    ):
        raise ConfigError(
            f"transfer: the model at {path!r} takes {src.input_kind} inputs of shape "
            f"{src.input_shape} (vocabulary {src.vocab_size}); this task gives "
            f"{dst.input_kind} {dst.input_shape} (vocabulary {dst.vocab_size}). Only the head "
            "is replaced, so the inputs must match."
        )


# -- the job -------------------------------------------------------------------------------------


def _new_head(model: nn.Module, task: Any) -> nn.Module:
    """Replace a tidian model's output head with a fresh one for ``task`` (seeded by caller)."""

    old = getattr(model, "head", None)
    if not isinstance(old, Head):
        raise ConfigError("transfer: the source model has no zoo output head ('head') to replace.")
    sig = Signature.of(task)
    model.head = Head(old.linear.in_features, sig)
    if sig.target_kind == "values":
        set_output_scale(model, np.asarray(task.train.y, dtype=np.float64))
    spec = model_spec(model)
    set_spec(model, ModelSpec(spec.name, spec.options, sig.to_dict()))
    return model


def build(step: dict[str, Any], task: Any, seed: int) -> nn.Module:
    """The seed's starting model: the encoder with a fresh head, or the source model of
    the run with its head replaced."""
    if step["source"]["kind"] == "hf":
        return seeded_model(step["model"], task, seed)
    torch.manual_seed(seed)
    model = load_model(step["source"]["path"])
    torch.manual_seed(seed)
    return _new_head(model, task)


def _top(model: nn.Module) -> nn.Module:
    """What sits on top of the body: the neck and head of an encoder, or the zoo's head."""
    neck = getattr(model, "neck", None)
    return nn.Sequential(neck, model.head) if neck is not None else model.head


def layer_groups(model: nn.Module) -> list[list[nn.Parameter]]:
    """The model's parameters in layers, bottom to top (the head last). A module holding a
    ModuleList (at any depth) is split into its children; any other module is one layer."""

    def has_list(module: nn.Module) -> bool:
        return any(isinstance(m, nn.ModuleList) for m in module.modules())

    def split(module: nn.Module) -> list[nn.Module]:
        if isinstance(module, nn.ModuleList) or (has_list(module) and list(module.children())):
            return [leaf for child in module.children() for leaf in split(child)]
        return [module]

    top = _top(model)
    top_ids = {id(p) for p in top.parameters()}
    seen: set[int] = set()
    groups = []
    for layer in [m for child in model.children() for m in split(child)]:
        params = [p for p in layer.parameters() if id(p) not in seen and id(p) not in top_ids]
        seen.update(id(p) for p in params)
        if params:
            groups.append(params)
    groups.append(list(top.parameters()))
    return groups


def _probe(model: nn.Module, task: Any, config: Any, seed: int) -> Any:
    """Train only the top on the body's features, computed once per split (cached)."""

    top = _top(model)
    first = top[0] if isinstance(top, nn.Sequential) else top
    store: list[torch.Tensor] = []
    handle = first.register_forward_pre_hook(lambda mod, args: store.append(args[0].detach()))
    try:

        def features(x: np.ndarray) -> np.ndarray:
            store.clear()
            predict(model, x, batch_size=config.eval_batch_size)
            return torch.cat(store).numpy().astype(np.float32) if len(x) else np.zeros((0, 0))

        splits = {s: getattr(task, s) for s in ("train", "val", "test")}
        cached = {s: Split(features(sp.x), sp.y) for s, sp in splits.items() if len(sp)}
    finally:
        handle.remove()
    width = cached["train"].x.shape[1]
    empty = Split(np.zeros((0, width), np.float32), task.val.y[:0])
    features_task = dataclasses.replace(
        task,
        train=cached["train"],
        val=cached.get("val", empty),
        test=cached.get("test", empty),
        input_kind="vector",
        vocab=None,
    )
    return fit(top, features_task, config, seed=seed)


def lora_wrap(model: nn.Module, options: dict[str, Any]) -> tuple[nn.Module, dict[str, Any]]:
    """Wrap the body's linear layers with LoRA adapters; returns (the module to train, report).
    Only adapter and head parameters train."""
    peft = require("peft", "transfer", "transfer strategy lora")
    body = getattr(model, "backbone", model)
    linear = [n for n, m in body.named_modules() if isinstance(m, nn.Linear)]
    head_ids = {id(m) for m in _top(model).modules()}
    candidates = [
        n for n, m in body.named_modules() if isinstance(m, nn.Linear) and id(m) not in head_ids
    ]
    targets = options.get("target_modules") or (
        ["query", "value"] if hasattr(model, "backbone") else candidates
    )
    matched = [
        n
        for n in candidates
        if any(n.split(".")[-1] == t or fnmatch.fnmatch(n, t) for t in targets)
    ]
    if not matched:
        raise ConfigError(
            f"transfer.lora.target_modules {targets} match no linear layer of the body; its "
            f"linear layers are: {', '.join(linear[:12])}{' …' if len(linear) > 12 else ''}."
        )
    r = int(options.get("r", 8))
    config = peft.LoraConfig(
        r=r,
        lora_alpha=int(options.get("alpha", 2 * r)),
        lora_dropout=float(options.get("dropout", 0.05)),
        target_modules=matched,
    )
    modules = dict(body.named_modules())
    expected = sum(r * (modules[n].in_features + modules[n].out_features) for n in matched)
    with warnings.catch_warnings():  # peft calls an API transformers marks as deprecated
        warnings.simplefilter("ignore", FutureWarning)
        wrapped = peft.get_peft_model(body, config)
    encoder = hasattr(model, "backbone")
    if encoder:  # the encoder keeps its pooling and head; only the backbone is wrapped
        model.backbone = wrapped
    trained = model if encoder else wrapped
    for p in _top(model).parameters():
        p.requires_grad_(True)
    trainable = sum(p.numel() for p in trained.parameters() if p.requires_grad)
    report = {"lora_layers": len(matched), "lora_params": expected, "trainable_params": trainable}
    return trained, report


def transfer_(
    parent: nn.Module | None, step: dict[str, Any], task: Any, *, train: Any, seed: int
) -> tuple[nn.Module, dict[str, Any]]:
    """Build the pretrained model with a new head and train it by ``step["strategy"]``."""

    config = TrainConfig.coerce(train).replace(init="default")
    model = build(step, task, seed)
    strategy = step["strategy"]
    report: dict[str, Any] = {"strategy": strategy, "source": step["source"]}
    groups = layer_groups(model)
    total = sum(p.numel() for p in model.parameters())
    if strategy == "linear_probe":
        for p in model.parameters():
            p.requires_grad_(False)
        if hasattr(model, "freeze_backbone"):
            model.freeze_backbone()
        for p in _top(model).parameters():
            p.requires_grad_(True)
        history = _probe(model, task, config, seed)
        report["trainable_params"] = sum(p.numel() for p in _top(model).parameters())
    elif strategy == "lora":
        trained, info = lora_wrap(model, step.get("lora") or {})
        report.update(info)
        history = fit(trained, task, config, seed=seed)
        if hasattr(model, "backbone"):
            model.backbone = model.backbone.merge_and_unload()
        else:
            model = trained.merge_and_unload()
    else:
        on_epoch = None
        if strategy == "gradual":
            every = int(step.get("every", 1))
            for group in groups[:-1]:
                for p in group:
                    p.requires_grad_(False)
                    setattr(p, UNFREEZE_LATER, True)

            def on_epoch(epoch: int, row: dict[str, float]) -> None:
                thawed = min(len(groups) - 1, epoch // every)
                for group in groups[len(groups) - 1 - thawed : -1]:
                    for p in group:
                        p.requires_grad_(True)
                row["unfrozen_layers"] = thawed

        elif strategy == "llrd":
            decay = float(step.get("decay", 0.8))
            for depth, group in enumerate(reversed(groups)):
                for p in group:
                    setattr(p, LR_SCALE, decay**depth)
        history = fit(model, task, config, seed=seed, on_epoch=on_epoch)
        for p in model.parameters():
            for attr in (LR_SCALE, UNFREEZE_LATER):
                if hasattr(p, attr):
                    delattr(p, attr)
        report["trainable_params"] = total
    for p in model.parameters():
        p.requires_grad_(True)
    if hasattr(model, "freeze_backbone"):
        model.freeze_backbone(False)
    report.update(
        layers=len(groups), params=total, epochs=len(history.epochs), best_epoch=history.best_epoch
    )
    return model.eval(), report


def _check_step(**config: Any) -> None:
    if config.get("strategy") not in STRATEGIES or not config.get("source"):
        raise bad_value("transfer step", "{source: ..., strategy: ...}", config)


@transform_step("transfer", config=_check_step, new_model=True, needs_parent=False)
def transfer_step(parent: nn.Module | None, config: dict[str, Any], ctx: StepContext):
    """The ``transfer`` step: :func:`transfer_` for the seed."""
    return transfer_(parent, config, ctx.task, train=ctx.train, seed=ctx.seed)
