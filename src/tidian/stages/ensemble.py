"""The ``ensemble`` stage: several models combined into one candidate (``models/ensemble.py``).

Members (``members``):

* ``top`` — the ``k`` best candidates of the run so far on validation (their saved models of
  the same seed, so the ensemble stays paired with the incumbent seed by seed);
* ``seeds`` — the incumbent and ``k − 1`` more trainings of its recipe with other seeds;
* ``bagging`` — ``k`` trainings of the incumbent's recipe, each on a bootstrap resample of
  the training split;
* ``snapshot`` — one training of the incumbent's recipe cut into ``k`` cosine cycles (the
  learning rate restarts at each cycle, Huang et al.'s snapshot ensembles); the model at the
  end of each cycle is a member;
* ``boosting`` — the incumbent beside ``k − 1`` LightGBM models (``booster: xgboost`` for
  XGBoost, from the ``xgboost-cpu`` package; row and column subsampling, each its own seed;
  ``lightgbm: {...}`` passes the booster's parameters), converted to tensors
  (``models/trees.py``) so the ensemble stays one module and one ONNX graph.

Combinations (``combine``, one candidate each): ``vote``, ``average``, ``weighted`` (weights
on the simplex minimising the validation log loss, or MSE for regression — members left with
under 0.1% are dropped; or fixed ``weights``), ``stacking`` (multinomial logistic regression /
ridge on the members' validation outputs, its strength chosen by 5-fold cross-validation
inside the validation split; the members never trained on those rows, so its inputs are
out-of-fold), ``greedy``
(Caruana et al.'s selection with replacement on validation: start empty, add the member that
helps most, keep the best prefix — never worse on validation than the best single member;
members it never picks are dropped, so the ensemble is only as large as it needs to be).

The ensemble is gated like any candidate, and its cost is measured as what it is: one module
running every member. Distilling it afterwards is the usual next step
(``- distill: {teacher: incumbent, student: ...}``).
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from tidian.compression.apply import StepContext, transform_step
from tidian.exceptions import ConfigError, bad_value
from tidian.metrics import METRICS, greater_is_better, predict
from tidian.models import model_spec
from tidian.models.base import trained_by_library
from tidian.models.ensemble import COMBINE, EPS, ensemble_of
from tidian.models.io import load_model, read_spec, seed_folder
from tidian.models.trees import train_boosting
from tidian.stages.base import Context, Proposal, Stage, register_stage
from tidian.store.artifacts import local
from tidian.training.build import seeded_model, train_new
from tidian.training.config import TrainConfig
from tidian.training.loop import fit

MEMBERS = ("top", "seeds", "bagging", "snapshot", "boosting")
MIN_WEIGHT = 1e-3  # fitted weights below this drop their member
FOLDS = 5  # cross-fitting a combination's validation score


@dataclass(frozen=True)
class EnsembleConfig:
    """members: top | seeds | bagging | snapshot; k: how many; combine: one of vote, average,
    weighted, stacking, greedy, or a list (one candidate each); weights: fixed weights for
    ``weighted`` (else fitted on validation); train: training overrides for trained members."""

    members: str = "top"
    k: int = 5
    combine: str | list[str] = "average"
    weights: list[float] | None = None
    train: dict[str, Any] = field(default_factory=dict)
    lightgbm: dict[str, Any] = field(default_factory=dict)  # the booster's parameters
    booster: str = "lightgbm"

    def __post_init__(self) -> None:
        if self.members not in MEMBERS:
            raise bad_value("ensemble.members", f"one of {MEMBERS}", self.members)
        if not isinstance(self.k, int) or self.k < 2:
            raise ConfigError(f"ensemble.k: an ensemble needs at least 2 members; got {self.k!r}.")
        combos = self.combines
        if not combos or len(set(combos)) != len(combos) or set(combos) - set(COMBINE):
            raise bad_value(
                "ensemble.combine", f"one of {COMBINE}, or a list of them", self.combine
            )
        if self.weights is not None:
            w = self.weights
            if "weighted" not in combos:
                raise ConfigError("ensemble.weights: only used with combine: weighted.")
            if (
                not isinstance(w, list)
                or not all(isinstance(v, int | float) and v >= 0 for v in w)
                or not sum(w) > 0
            ):
                raise bad_value("ensemble.weights", "non-negative numbers with a positive sum", w)
            if len(w) != self.k:
                raise bad_value("ensemble.weights", f"one weight per member (k={self.k})", w)
        if self.booster not in ("lightgbm", "xgboost"):
            raise bad_value("ensemble.booster", "lightgbm or xgboost", self.booster)
        if not isinstance(self.train, dict):
            raise bad_value("ensemble.train", "a mapping of training options", self.train)

    @property
    def combines(self) -> list[str]:
        return [self.combine] if isinstance(self.combine, str) else list(self.combine)


@register_stage("ensemble", config=EnsembleConfig, kind="quality")
class EnsembleStage(Stage):
    """Several models combined into one candidate, gated like any other."""

    edits_model = True
    # Its combinations are fitted on validation, but each seed is scored there on outputs
    # cross-fitted over validation folds (``cross_fitted``): the stage chooses one combination
    # on validation and gates it alone, like any quality stage.
    fits_on_validation = False

    def requirements(self) -> list[tuple[str, str]]:
        if self.config.members != "boosting":
            return []
        return [("xgboost" if self.config.booster == "xgboost" else "lightgbm", "boost")]

    example: ClassVar[dict[str, Any]] = {
        "members": "seeds",
        "k": 2,
        "combine": ["average", "weighted"],
    }

    def run(self, incumbent: Proposal, ctx: Context) -> list[Proposal]:
        c: EnsembleConfig = self.config
        if c.members == "boosting" and ctx.task.input_kind == "text":
            raise ConfigError("ensemble.members boosting: gradient boosting takes no token ids.")
        if "vote" in c.combines and ctx.task.target_kind != "classes":
            raise ConfigError(
                "ensemble.combine: 'vote' needs a classification task; use average or weighted."
            )
        folders: list[str] = []
        if c.members == "top":
            sign = -1 if greater_is_better(ctx.metric) else 1
            ranked = sorted(
                (h for h in ctx.history if h.get("folder") and h.get("val_mean") is not None),
                key=lambda h: sign * h["val_mean"],
            )
            folders = [h["folder"] for h in ranked[: c.k]]
            if len(folders) < 2:
                raise ConfigError(
                    f"ensemble.members top: the run has {len(folders)} finished candidate(s) "
                    "before this stage; an ensemble needs at least 2. Put an architecture or "
                    "tuning stage first, or use members: seeds | bagging | snapshot."
                )
        train = {**incumbent.train, **c.train}
        proposals = []
        for combine in c.combines:
            step = {
                "members": c.members,
                "k": c.k,
                "combine": combine,
                "folders": folders,
                "model": dict(incumbent.model),
                "train": train,
                "weights": c.weights if combine == "weighted" else None,
                "lightgbm": dict(c.lightgbm),
                "booster": c.booster,
            }
            size = len(folders) if folders else c.k
            proposals.append(
                Proposal(
                    f"ensemble of {size} ({c.members}), {combine}",
                    {"name": "ensemble", "combine": combine},
                    train,
                    {"ensemble": {"members": c.members, "k": size, "combine": combine}},
                    transform=[{"ensemble": step}],
                )
            )
        return proposals


# -- fitting the combination on validation outputs (plain numpy/torch, testable alone) ---------


def _combined(outs: np.ndarray, w: np.ndarray, classes: bool) -> np.ndarray:
    """Weighted mean of member outputs (k, n, out): probabilities for classes."""
    if classes:
        z = outs - outs.max(-1, keepdims=True)
        p = np.exp(z) / np.exp(z).sum(-1, keepdims=True)
        return np.tensordot(w, p, axes=1)
    return np.tensordot(w, outs, axes=1)


def _loss(combined: np.ndarray, y: np.ndarray, classes: bool) -> float:
    if classes:
        return float(-np.log(np.clip(combined[np.arange(len(y)), y], 1e-7, 1)).mean())
    return float(((combined.reshape(len(y), -1)[:, 0] - y) ** 2).mean())


def fit_weights(outs: np.ndarray, y: np.ndarray, classes: bool) -> np.ndarray:
    """Simplex weights minimising the validation log loss (MSE for regression)."""
    k = outs.shape[0]
    logits = torch.zeros(k, requires_grad=True)
    member = torch.from_numpy(outs.astype(np.float32))
    target = torch.from_numpy(np.asarray(y))
    base = member.softmax(-1) if classes else member
    opt = torch.optim.LBFGS([logits], lr=0.5, max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        mix = (logits.softmax(0).reshape(-1, 1, 1) * base).sum(0)
        if classes:
            loss = nn.functional.nll_loss(mix.clamp_min(1e-7).log(), target)
        else:
            loss = ((mix[:, 0] - target.float()) ** 2).mean()
        loss.backward()
        return loss

    opt.step(closure)
    return logits.detach().softmax(0).numpy()


def greedy_selection(
    outs: np.ndarray, y: np.ndarray, classes: bool, score: Any, greater: bool, rounds: int = 50
) -> tuple[np.ndarray, list[float]]:
    """Caruana's ensemble selection with replacement: returns counts-based weights (zeros for
    members never picked) and the validation score after each round. The kept selection is
    the best prefix, so the result is never worse than the best single member."""
    k = outs.shape[0]
    counts = np.zeros(k)
    path: list[tuple[float, np.ndarray]] = []
    sign = 1.0 if greater else -1.0
    for _ in range(rounds):
        best = None
        for j in range(k):
            trial = counts.copy()
            trial[j] += 1
            combined = _combined(outs, trial / trial.sum(), classes)
            s = score(y, np.log(np.clip(combined, 1e-7, None)) if classes else combined)
            # ties (common for accuracy) go to the lower loss
            key = (sign * s, -_loss(combined, y, classes))
            if best is None or key > best[0]:
                best = (key, j, s)
        counts[best[1]] += 1
        path.append((best[2], counts.copy()))
    i = max(range(len(path)), key=lambda t: (sign * path[t][0], -t))  # earliest best
    kept = path[i][1]
    return kept / kept.sum(), [p[0] for p in path]


def _stacking_inputs(outs: np.ndarray, classes: bool) -> np.ndarray:
    """The meta-model's inputs (n, k × out): each member's log-probabilities (outputs for
    regression), concatenated row by row."""
    feats = outs
    if classes:
        z = outs - outs.max(-1, keepdims=True)
        feats = z - np.log(np.exp(z).sum(-1, keepdims=True))
    return feats.transpose(1, 0, 2).reshape(outs.shape[1], -1)


def fit_stacking(outs: np.ndarray, y: np.ndarray, classes: bool, seed: int) -> tuple[Any, Any]:
    """Meta-model on the members' validation outputs (k, n, out): (weight, bias) of a linear
    layer over their concatenated log-probabilities (outputs for regression)."""
    x = _stacking_inputs(outs, classes)
    if classes:
        from sklearn.linear_model import LogisticRegressionCV

        folds = max(2, min(5, int(np.bincount(y)[np.bincount(y) > 0].min())))
        with warnings.catch_warnings():  # sklearn's attribute-layout notice; convergence noise
            warnings.simplefilter("ignore")
            meta = LogisticRegressionCV(Cs=10, cv=folds, max_iter=2000, random_state=seed)
            meta.fit(x, y)
        n_classes = outs.shape[2]
        weight = np.zeros((n_classes, x.shape[1]))
        bias = np.zeros(n_classes)
        if len(meta.classes_) == 2 and meta.coef_.shape[0] == 1:
            # binary: one row of log-odds for class 1; as two logits: [0, w·x + b]
            weight[meta.classes_[1]] = meta.coef_[0]
            bias[meta.classes_[1]] = meta.intercept_[0]
        else:
            weight[meta.classes_] = meta.coef_
            bias[meta.classes_] = meta.intercept_
        # a class missing from the validation split is never predicted
        missing = np.setdiff1d(np.arange(n_classes), meta.classes_)
        bias[missing] = -30.0
        return weight, bias
    from sklearn.linear_model import RidgeCV

    meta = RidgeCV(alphas=np.logspace(-4, 3, 15)).fit(x, y)
    return meta.coef_.reshape(1, -1), np.atleast_1d(meta.intercept_)


# -- the job (runs in a worker, through compression.apply) --------------------------------------


def _member_spec(folder: Any) -> dict[str, Any]:
    spec = read_spec(folder)
    return {"name": spec["name"], **spec["options"]}


def _trained_members(parent: nn.Module | None, config: dict[str, Any], task: Any, seed: int):
    """Members trained here from the incumbent's recipe (seeds, bagging, snapshot)."""

    model = dict(config["model"])
    name, options = model.pop("name"), model
    train = TrainConfig.from_dict(config["train"])
    spec = {"name": name, **options}
    kind, k = config["members"], int(config["k"])
    own = model_spec(parent) if parent is not None else None
    # the parent as it was saved (pruned, say) — unless its family is fitted by a library
    # (a tree model cannot be trained again; a glm's saved linear network would be trained by
    # the loop instead of solved): then the recipe's model, its family, trains the members
    trainable = own is not None and not (trained_by_library(own.name) or trained_by_library(name))
    if trainable and kind in ("seeds", "boosting"):
        name, options = own.name, dict(own.options)
        spec = {"name": name, **options}
    members = []
    if kind == "seeds":
        if parent is None:
            raise ConfigError("ensemble members seeds: the incumbent's model is missing.")
        members.append(parent)
        for i in range(1, k):
            members.append(train_new(spec, task, train, seed * 1000 + i)[0])
    elif kind == "bagging":
        rng = np.random.default_rng([seed, 104729])
        n = len(task.train)
        for i in range(k):
            rows = rng.integers(0, n, n)
            bag = task.replace(train=task.train.take(rows))
            members.append(train_new(spec, task, train, seed * 1000 + i, data=bag)[0])
    elif kind == "boosting":  # the incumbent beside k - 1 boosted tree models, as tensors
        if parent is None:
            raise ConfigError("ensemble members boosting: the incumbent's model is missing.")
        members, specs = [parent], [(name, options)]
        booster = config.get("booster", "lightgbm")
        sampling = (
            {"subsample": 0.8, "subsample_freq": 1, "colsample_bytree": 0.8}
            if booster == "lightgbm"
            else {"subsample": 0.8, "colsample_bytree": 0.8}
        )
        for i in range(1, k):
            tree_model = train_boosting(
                booster, task, {**sampling, **config.get("lightgbm", {})}, seed * 1000 + i
            )
            tree_spec = model_spec(tree_model)
            members.append(tree_model)
            specs.append((tree_spec.name, dict(tree_spec.options)))
        return specs, members
    else:  # snapshot: k cosine cycles of one training run, a member at the end of each
        cycle = train.replace(schedule="cosine", epochs=max(1, train.epochs // k), patience=None)
        m = seeded_model(spec, task, seed)
        for i in range(k):
            fit(m, task, cycle, seed=seed * 1000 + i)
            members.append(copy.deepcopy(m))
    return [(name, options)] * k, members


def ensemble_(
    parent: nn.Module | None,
    config: dict[str, Any],
    task: Any,
    *,
    train: Any = None,
    seed: int = 0,
    metric: str | None = None,
    held_out: dict[str, Any] | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """Build seed ``seed``'s ensemble: its members, then the combination fitted on ``task.val``
    — and, given ``held_out``, its cross-fitted validation outputs put there as ``"val"``."""

    combine = config["combine"]
    classes = task.target_kind == "classes"
    if config["members"] == "top":
        folders = [local(seed_folder(f, seed)) for f in config["folders"]]
        for f in folders:
            if (f / "model.onnx").exists():
                raise ConfigError(
                    f"ensemble members top: {str(f)!r} is a quantised ONNX Runtime model; "
                    "ensemble before quantising (put quantize last)."
                )
        specs = [_member_spec(f) for f in folders]
        members = [load_model(f) for f in folders]
    else:
        pairs, members = _trained_members(parent, config, task, seed)
        # a member's own spec where it has one: a tree family's trained model is a ``trees``
        # model of its own shape, not the family's untrained placeholder
        own = [model_spec(m) for m in members]
        specs = [
            {"name": o.name, **o.options} if o else {"name": n, **opts}
            for (n, opts), o in zip(pairs, own, strict=True)
        ]
    model = ensemble_of(members, specs, combine, task)  # the trained modules themselves
    shapes = {tuple(np.asarray(predict(m, task.val.x[:2])).shape[1:]) for m in members}
    if len(shapes) != 1:
        raise ConfigError(f"ensemble members give outputs of different shapes: {sorted(shapes)}.")
    report: dict[str, Any] = {"members": len(members), "combine": combine}
    fixed = config.get("weights") if combine == "weighted" else None
    if combine in ("weighted", "greedy", "stacking"):
        if not len(task.val):
            raise ConfigError(
                f"ensemble combine {combine!r} fits on the validation split; this task has "
                "none (load it with val_size > 0), or use average or vote."
            )
        outs = np.stack([predict(m, task.val.x) for m in members])
        y = np.asarray(task.val.y)
        metric = metric or task.metric

        def fit(o: np.ndarray, t: np.ndarray) -> dict[str, Any]:
            return fit_combination(o, t, combine, classes, weights=fixed, metric=metric, seed=seed)

        fitted = fit(outs, y)
        if not fixed and held_out is not None:
            # the seed's validation score comes from combinations fitted without the rows
            # they score, so the stage can choose among its combinations on it
            crossed = cross_fitted(outs, y, classes, fit, seed)
            if crossed is not None:
                held_out["val"] = crossed
                score = METRICS.get(metric)
                report["validation"] = {
                    "folds": min(FOLDS, len(y)),
                    "in_sample": float(score(y, combined_outputs(fitted, outs, classes))),
                    "cross_fitted": float(score(y, crossed)),
                }
        if combine == "stacking":
            with torch.no_grad():
                model.meta.weight.copy_(torch.as_tensor(fitted["weight"], dtype=torch.float32))
                model.meta.bias.copy_(torch.as_tensor(fitted["bias"], dtype=torch.float32))
        else:
            w = fitted["weights"]
            if fitted.get("path") is not None:
                report["validation_path"] = fitted["path"]
            # Members that carry (next to) no weight are dropped: running them costs latency
            # and buys nothing. Fixed weights are kept as given.
            keep = np.flatnonzero(w > 0)
            report["kept"] = keep.tolist()
            if len(keep) == 1:
                report["weights"] = [1.0]
                return model.members[int(keep[0])].eval(), report
            if len(keep) < len(members):
                kept = [model.members[i] for i in keep]
                specs = [specs[i] for i in keep]
                model = ensemble_of(kept, specs, combine, task)
                w = w[keep]
            model.set_weights(w)
        report["weights"] = model.weights.tolist()
    return model.eval(), report


def fit_combination(
    outs: np.ndarray,
    y: np.ndarray,
    combine: str,
    classes: bool,
    *,
    weights: list[float] | None = None,
    metric: str = "accuracy",
    seed: int = 0,
) -> dict[str, Any]:
    """A fitted combination of member outputs ``outs`` (k, n, out) for targets ``y``:
    ``{"weight", "bias"}`` of the stacking meta-model, or ``{"weights"}`` on the simplex (zero
    for dropped members: fitted weights under MIN_WEIGHT) with greedy's validation path."""
    if combine == "stacking":
        weight, bias = fit_stacking(outs, y, classes, seed)
        return {"weight": weight, "bias": bias}
    path = None
    if combine == "weighted":
        w = np.asarray(weights or fit_weights(outs, y, classes), float)
    else:
        w, path = greedy_selection(outs, y, classes, METRICS.get(metric), greater_is_better(metric))
    w = np.where(w > (0 if weights else MIN_WEIGHT), w, 0.0)
    return {"weights": w / w.sum(), "path": path}


def combined_outputs(fitted: dict[str, Any], outs: np.ndarray, classes: bool) -> np.ndarray:
    """What the ensemble module outputs, for member outputs ``outs`` (k, n, out), with the
    combination ``fitted`` (:func:`fit_combination`)."""
    if "weight" in fitted:
        return _stacking_inputs(outs, classes) @ fitted["weight"].T + fitted["bias"]
    mix = _combined(outs, fitted["weights"], classes)
    return np.log(np.clip(mix, EPS, None)) if classes else mix


def cross_fitted(
    outs: np.ndarray, y: np.ndarray, classes: bool, fit: Any, seed: int
) -> np.ndarray | None:
    """The combination's outputs on every validation row from a combination fitted without
    that row's fold (``FOLDS`` folds, stratified when every class has that many rows): an
    honest validation score for a combination fitted on validation. None below 2 rows."""
    from sklearn.model_selection import KFold, StratifiedKFold

    n = len(y)
    folds = min(FOLDS, n)
    if folds < 2:
        return None
    counts = np.bincount(y) if classes else None
    splitter = (
        StratifiedKFold(folds, shuffle=True, random_state=seed)
        if classes and counts[counts > 0].min() >= folds
        else KFold(folds, shuffle=True, random_state=seed)
    )
    crossed = None
    for rest, fold in splitter.split(np.zeros(n), y if classes else None):
        out = combined_outputs(fit(outs[:, rest], y[rest]), outs[:, fold], classes)
        if crossed is None:
            crossed = np.empty((n, *out.shape[1:]), dtype=np.float32)
        crossed[fold] = out
    return crossed


def _check_step(**config: Any) -> None:
    EnsembleConfig(
        members=config.get("members"),
        k=config.get("k"),
        combine=config.get("combine"),
        weights=config.get("weights"),
    )


@transform_step(
    "ensemble",
    config=_check_step,
    new_model=True,
    needs_parent=lambda config: config.get("members") in ("seeds", "boosting"),
)
def ensemble_step(parent: nn.Module | None, config: dict[str, Any], ctx: StepContext):
    """The ``ensemble`` step: :func:`ensemble_` for the seed."""
    return ensemble_(
        parent,
        config,
        ctx.task,
        train=ctx.train,
        seed=ctx.seed,
        metric=ctx.metric,
        held_out=ctx.held_out,
    )
