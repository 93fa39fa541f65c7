"""Support-vector machines as torch modules: scikit-learn's ``SVC`` / ``SVR`` with an RBF
kernel, trained by scikit-learn and held as tensors.

On small, dense numeric tables a kernel machine is often the strongest model there is and a
small one: on digits (64 pixel features, 1,797 rows) an RBF SVM is as accurate as extra trees
(98.2–98.3% by 5-fold CV twice, against 98.25%; `bench/vs_autogluon.py`'s digits rows, a
script over scikit-learn) with ~850 support vectors — about 0.4 MB where the forest is 5.5 MB.

The trained machine keeps what its decision function needs and nothing else: the support
vectors, one column of coefficients per decision (scikit-learn's ``dual_coef_`` laid out per
decision) and the intercepts. Its outputs are what scikit-learn's ``decision_function`` gives:

* regression: the predicted value (trained on the standardised target, scaled back);
* two classes: ``[0, d]`` with d the signed distance (tidian's binary logits, as trees give);
* more classes: the one-vs-one decisions turned into one score per class the way
  scikit-learn's ``decision_function_shape="ovr"`` does (votes plus a confidence term below
  1/3), so the argmax is scikit-learn's prediction. As logits these are not calibrated
  probabilities (and, like a tree model, it has no output head a ``calibrate`` stage could
  scale).

It runs in float64 in torch and in the ONNX graph (the same plain ops, cast up), so the two
runtimes decide each vote alike; the conversion is checked against scikit-learn's own
decision values (``_check``). Saved as safetensors plus JSON like every model: scikit-learn's
own format is a pickle, so no library file is kept.

Training time grows with the square of the rows (the kernel matrix): the family refuses a
table above ``max_rows`` training rows with what to do instead, rather than run for hours.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from tidian.exceptions import ConfigError, bad_value
from tidian.models.base import (
    FITTED,
    MODELS,
    TABLES,
    Signature,
    class_weight_option,
    refuse_disagreement,
    refuse_multi_target,
    refuse_unseen_classes,
)
from tidian.models.spec import create_model

MAX_ROWS = 20_000  # default training rows above which the svm family refuses (see docstring)
KINDS = ("values", "binary", "ovo")
# each family and the module its library installs (what a recipe suggestion checks for)
KERNEL_FAMILIES = {"svm": "sklearn"}


def _pairs(classes: int) -> list[tuple[int, int]]:
    """The one-vs-one decisions in libsvm's order: (0, 1), (0, 2), …, (1, 2), …"""
    return [(i, j) for i in range(classes) for j in range(i + 1, classes)]


class KernelMachine(nn.Module):
    """``vectors`` support vectors of ``features`` numbers; ``decisions`` decision functions
    ``d = exp(−γ‖x − v‖²) · coef + intercept``; ``kind`` says how they become outputs."""

    def __init__(self, vectors: int, features: int, classes: int, kind: str, gamma: float):
        super().__init__()
        if kind not in KINDS:
            raise bad_value("kind", f"one of {KINDS}", kind)
        self.kind, self.gamma = kind, float(gamma)
        decisions = len(_pairs(classes)) if kind == "ovo" else 1
        # float32: the training rows were float32; the arithmetic below is float64
        self.register_buffer("vectors", torch.zeros(vectors, features))
        self.register_buffer("coef", torch.zeros(vectors, decisions, dtype=torch.float64))
        self.register_buffer("intercept", torch.zeros(decisions, dtype=torch.float64))
        first = torch.zeros(decisions, max(classes, 1), dtype=torch.float64)
        second = torch.zeros_like(first)
        for p, (i, j) in enumerate(_pairs(classes) if kind == "ovo" else []):
            first[p, i], second[p, j] = 1.0, 1.0
        # which class each one-vs-one decision votes for: derived, not saved
        self.register_buffer("first", first, persistent=False)
        self.register_buffer("second", second, persistent=False)
        # the vectors as the arithmetic reads them (float64, transposed) and their squared
        # norms: derived, not saved, so an exported graph holds one copy of them
        self.register_buffer("columns", torch.zeros(features, vectors, dtype=torch.float64), False)
        self.register_buffer("norms", torch.zeros(vectors, dtype=torch.float64), False)
        self.register_load_state_dict_post_hook(lambda module, _: module.derive())

    @torch.no_grad()
    def derive(self) -> None:
        """Refresh the derived buffers from ``vectors`` (after they are filled or loaded)."""
        v = self.vectors.double()
        self.columns = v.T.contiguous()
        self.norms = (v * v).sum(1)

    def decisions(self, x: torch.Tensor) -> torch.Tensor:
        """The decision values, (n, decisions), in float64."""
        x = x.flatten(1).double()
        distance = (x * x).sum(1, keepdim=True) - 2 * x @ self.columns + self.norms
        kernel = torch.exp(distance.clamp_min(0) * -self.gamma)
        return kernel @ self.coef + self.intercept

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d = self.decisions(x)
        if self.kind == "values":
            return d.float()
        if self.kind == "binary":
            return torch.cat([torch.zeros_like(d), d], dim=1).float()
        # scikit-learn's one-vs-one → one-vs-rest: d ≥ 0 votes for the pair's first class
        won = (d >= 0).double()
        votes = won @ self.first + (1 - won) @ self.second
        confidence = d @ (self.first - self.second)
        return (votes + confidence / (3 * (confidence.abs() + 1))).float()


def _kind(sig: Signature) -> tuple[str, int]:
    if sig.target_kind == "values":
        return "values", 0
    return ("binary" if sig.n_outputs == 2 else "ovo"), sig.n_outputs


@MODELS.register("kernel_machine", inputs=TABLES, instead="a network", trainable=False)
def kernel_machine(sig: Signature, *, vectors: int = 1, gamma: float = 1.0) -> nn.Module:
    """A trained support-vector machine held as tensors (what the svm family's training
    gives; the options give its number of support vectors and its kernel width)."""
    refuse_multi_target(sig, "svm")
    kind, classes = _kind(sig)
    features = int(np.prod(sig.input_shape))
    return KernelMachine(vectors, features, classes, kind, gamma)


# ----------------------------------------------------------------------------- training


def _checked_gamma(gamma: Any) -> float | str:
    if gamma == "scale":
        return gamma
    if isinstance(gamma, bool) or not isinstance(gamma, int | float) or gamma <= 0:
        raise bad_value("svm gamma", "a positive number or 'scale'", gamma)
    return float(gamma)


def _gamma(gamma: float | str, x: np.ndarray) -> float:
    """scikit-learn's ``gamma="scale"`` (1 / (features × variance of x)) as a number, so the
    saved model needs nothing of the library; a number is taken as it is."""
    if gamma == "scale":
        variance = float(x.var())
        return 1.0 / (x.shape[1] * variance) if variance > 0 else 1.0
    return float(gamma)


def _layout(estimator: Any, classes: int) -> tuple[np.ndarray, np.ndarray]:
    """(coef, intercept) of a fitted SVC with one column per one-vs-one decision. libsvm
    keeps, for a support vector of class c, its coefficients in the (c, other) decisions as
    rows of ``dual_coef_`` (scikit-learn's documented layout): decision (i, j) uses row j − 1
    for class i's vectors and row i for class j's."""
    starts = np.concatenate([[0], np.cumsum(estimator.n_support_)])
    dual = estimator.dual_coef_
    coef = np.zeros((dual.shape[1], len(_pairs(classes))))
    for p, (i, j) in enumerate(_pairs(classes)):
        ours, theirs = slice(starts[i], starts[i + 1]), slice(starts[j], starts[j + 1])
        coef[ours, p] = dual[j - 1, ours]
        coef[theirs, p] = dual[i, theirs]
    return coef, np.asarray(estimator.intercept_, dtype=np.float64)


def _check(model: KernelMachine, library: np.ndarray, x: np.ndarray) -> KernelMachine:
    """Refuse a conversion whose decisions differ from scikit-learn's own."""
    with torch.no_grad():
        mine = model.decisions(torch.as_tensor(x)).numpy()
    refuse_disagreement("svm", "scikit-learn", mine, library, "decision values")
    return model


def _fit_svm(task: Any, seed: int, params: dict[str, Any]) -> tuple[nn.Module, dict[str, Any]]:
    from sklearn.svm import SVC, SVR  # a core dependency

    params = dict(params)
    limit = params.pop("max_rows")
    x = np.asarray(task.train.x, dtype=np.float32).reshape(len(task.train), -1)
    if len(x) > limit:
        raise ConfigError(
            f"svm: {len(x):,} training rows, above its max_rows ({limit:,}): a kernel "
            "machine's training grows with the square of the rows (hours at this size). Use a "
            "tree family (lightgbm, extra_trees) or an mlp, or raise max_rows."
        )
    gamma = _gamma(params.pop("gamma"), x.astype(np.float64))
    classes = task.target_kind == "classes"
    epsilon = params.pop("epsilon")
    if classes:
        # deterministic: the seed would only drive Platt scaling, which is not used
        estimator = SVC(kernel="rbf", gamma=gamma, decision_function_shape="ovo", **params)
        estimator.fit(x, task.train.y)
        seen = len(estimator.classes_)  # scikit-learn refuses a single class itself
        refuse_unseen_classes(task, seen, "svm")
        if seen == 2:
            coef = estimator.dual_coef_.T.astype(np.float64)
            intercept = np.asarray(estimator.intercept_, dtype=np.float64)
        else:
            coef, intercept = _layout(estimator, seen)
        shift, scale = 0.0, 1.0
    else:
        y = np.asarray(task.train.y, dtype=np.float64).reshape(len(x))
        shift, scale = float(y.mean()), float(y.std()) or 1.0
        # epsilon in the standardised target's units, so one default fits any scale
        estimator = SVR(kernel="rbf", gamma=gamma, epsilon=epsilon, **params)
        estimator.fit(x, (y - shift) / scale)
        coef = estimator.dual_coef_.T.astype(np.float64) * scale
        intercept = np.asarray(estimator.intercept_, dtype=np.float64) * scale + shift
    vectors = estimator.support_vectors_.astype(np.float32)
    if not len(vectors):  # every row inside the margin: a constant, kept as one idle vector
        vectors, coef = np.zeros((1, x.shape[1]), np.float32), np.zeros((1, coef.shape[1]))
    model = create_model("kernel_machine", task, vectors=len(vectors), gamma=gamma)
    with torch.no_grad():
        model.vectors.copy_(torch.as_tensor(vectors))
        model.coef.copy_(torch.as_tensor(coef))
        model.intercept.copy_(torch.as_tensor(intercept))
        model.derive()
    sample = x[: min(len(x), 256)]
    if classes:
        library = estimator.decision_function(sample)
    else:
        library = estimator.predict(sample) * scale + shift
    _check(model, library, sample)
    return model, {"support_vectors": int(estimator.support_vectors_.shape[0])}


class _Unfitted(KernelMachine):
    """What ``create_model`` gives for the svm family: no support vectors yet (outputs are
    zeros) and ``fit_with(task, seed)``, which has scikit-learn train it and returns the
    ``kernel_machine`` model holding it, with what the training reported."""

    def __init__(self, sig: Signature, params: dict[str, Any]) -> None:
        kind, classes = _kind(sig)
        super().__init__(1, int(np.prod(sig.input_shape)), classes, kind, 1.0)
        self._params = params

    def fit_with(self, task: Any, seed: int) -> tuple[nn.Module, dict[str, Any]]:
        return _fit_svm(task, seed, self._params)


@MODELS.register("svm", instead="a network (an svm takes numbers, not token ids)", **FITTED)
def svm(
    sig: Signature,
    *,
    C: float = 1.0,  # scikit-learn's name for it
    gamma: float | str = "scale",
    epsilon: float = 0.1,
    class_weight: str | None = None,
    max_rows: int = MAX_ROWS,
    params: dict | None = None,
) -> nn.Module:
    """A support-vector machine with an RBF kernel by scikit-learn (SVC for classes, SVR for
    values; ``epsilon`` in units of the target's standard deviation; ``params``: any other
    SVC / SVR parameter)."""
    refuse_multi_target(sig, "svm")
    if isinstance(C, bool) or not isinstance(C, int | float) or C <= 0:
        raise bad_value("svm C", "a positive number", C)
    if isinstance(max_rows, bool) or not isinstance(max_rows, int) or max_rows < 1:
        raise bad_value("svm max_rows", "a positive integer", max_rows)
    named = {
        "C": float(C),
        "gamma": _checked_gamma(gamma),
        "epsilon": float(epsilon),
        "max_rows": max_rows,
    }
    named.update(class_weight_option(sig, "svm", class_weight))
    clash = sorted(set(params or {}) & {*named, "kernel", "class_weight"})
    if clash:
        raise bad_value("params", "scikit-learn parameters other than the named options", clash)
    return _Unfitted(sig, {**named, **(params or {})})
