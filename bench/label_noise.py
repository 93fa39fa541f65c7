"""Label-noise detection: 10% of the training labels flipped on purpose — how many does the
``clean`` stage find (precision / recall), and how much quality do its candidates regain?

Data: scikit-learn's digits (1,797 rows; the built-in split: 60/20/20, stratified), written to
a CSV with a split column after flipping a random 10% of the *training* labels to another
class (validation and test keep their true labels, so quality is measured honestly). One
tidian run: an MLP baseline trained on the noisy labels, then ``clean`` (confident learning on
5-fold out-of-fold probabilities, cleanlab) proposing the model retrained without the suspects
and with them down-weighted. The same MLP trained on the true labels is the ceiling.

    python bench/label_noise.py [--noise 0.1] [--seeds 5] [--jobs 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

import tidian
from common import candidate_rows, print_table

MODEL = {"name": "mlp", "hidden": [64]}
TRAIN = {"epochs": 40, "lr": 0.003, "batch_size": 64}


def write_task(folder: Path, noise: float, seed: int = 0) -> tuple[str, np.ndarray, Path]:
    task = tidian.load_task("digits")
    rng = np.random.default_rng(seed)
    y = task.train.y.copy()
    flipped = np.sort(rng.choice(len(y), int(noise * len(y)), replace=False))
    y[flipped] = (y[flipped] + rng.integers(1, task.n_classes, len(flipped))) % task.n_classes
    frames = []
    for split, part, labels in (
        ("train", task.train, y),
        ("val", task.val, task.val.y),
        ("test", task.test, task.test.y),
    ):
        frame = pd.DataFrame(part.x.reshape(len(part), -1), columns=[f"p{i}" for i in range(64)])
        frame["label"] = labels
        frame["split"] = split
        frames.append(frame)
    path = folder / "digits_noisy.csv"
    pd.concat(frames).to_csv(path, index=False)
    clean = folder / "digits_clean.csv"
    frames[0]["label"] = task.train.y
    pd.concat(frames).to_csv(clean, index=False)
    return str(path), flipped, clean


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--noise", type=float, default=0.1)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        path, flipped, clean_path = write_task(folder, args.noise)
        store = tidian.Store(f"sqlite:///{folder / 'ledger.db'}")
        task = {"path": path, "target": "label", "split_column": "split"}
        result = tidian.run(
            {
                "task": task,
                "model": MODEL,
                "train": TRAIN,
                "evaluate": {"seeds": args.seeds},
                "stages": [{"clean": {"duplicates": False}}],
            },
            store=store,
            jobs=args.jobs,
        )
        ceiling = tidian.evaluate(
            MODEL,
            tidian.load_task(str(clean_path), target="label", split_column="split"),
            TRAIN,
            seeds=args.seeds,
            n_jobs=args.jobs,
        )["accuracy"]
    minutes = (time.perf_counter() - start) / 60
    issues = result.stages[1]["report"]["clean"]["label_issues"]
    found = {i["row"] for i in issues}
    hits = len(found & set(flipped.tolist()))
    rows = candidate_rows(result, "trained on the noisy labels")
    rows.append(
        [
            "ceiling: trained on the true labels",
            f"{ceiling.mean:.4f} [{ceiling.low:.4f}, {ceiling.high:.4f}]",
            "",
            "",
        ]
    )
    print_table(
        f"Label noise on digits: {len(flipped)} of the training labels flipped "
        f"({args.noise:.0%}), {args.seeds} seeds ({minutes:.1f} min)",
        ["candidate", "test accuracy (95% CI)", "paired gain", "gate"],
        rows,
        note=f"suspects found: {len(found)}; flipped among them: {hits} — precision "
        f"{hits / max(len(found), 1):.1%}, recall {hits / len(flipped):.1%}.",
    )


if __name__ == "__main__":
    main()
