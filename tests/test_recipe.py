"""Recipe validation: broken recipes and the message fragment each must produce."""

import gzip
import json
import os
import re
from pathlib import Path

import pytest

from tidian.recipe import DEFAULT_RECIPE, RecipeError, load_recipe, recipe_schema

BASE = "task: iris\nmodel: {name: mlp}\n"

BROKEN = [
    (
        BASE + "stages:\n  - architecture: {candidates: [{name: cnn}]}",
        "stages[0].architecture.candidates[0].name: unknown model 'cnn' (did you mean",
    ),
    (
        BASE + "stages:\n  - architecture: {candidats: []}",
        "stages[0].architecture: unknown option 'candidats' (did you mean 'candidates'?)",
    ),
    (
        BASE + "stages:\n  - archtecture: {}",
        "stages[0]: unknown stage 'archtecture' (did you mean architecture?)",
    ),
    (BASE + "stages:\n  - baseline: {}", "'baseline' always runs first"),
    (BASE + "stages:\n  - {architecture: {}, train_variants: {}}", "one-key mapping"),
    (
        BASE + "stages:\n  - train_variants: {candidates: 3}",
        "stages[0].train_variants.candidates: Input should be a valid list",
    ),
    (
        BASE + "stages:\n  - train_variants: {candidates: [{optimizer: adm}]}",
        "stages[0].train_variants.candidates[0].optimizer must be one of",
    ),
    (BASE + "trian: {}", "unknown key 'trian' (did you mean 'train'?)"),
    (BASE + "train: {lr: -1}", "train.lr must be a number > 0"),
    (BASE + "train: {learning_rate: 0.1}", "unknown option 'learning_rate'"),
    (BASE + "evaluate: {confidence: 2}", "evaluate.confidence: Input should be less than 1"),
    (BASE + "evaluate: {seeds: 1}", "at least 2 seeds"),
    (BASE + "evaluate: {seeds: [1, 1]}", "distinct"),
    (
        BASE + "evaluate: {metric: rsme}",
        "evaluate.metric: unknown metric 'rsme' (did you mean rmse",
    ),
    (BASE + "evaluate: {seeds: three}", "evaluate.seeds"),
    (
        BASE + "constraints: {max_latency: 1}",
        "unknown key 'max_latency' (did you mean 'max_latency_ms'?)",
    ),
    ("task: irs\nmodel: {name: mlp}", "task: unknown task 'irs' (did you mean iris?)"),
    ("task: {target: y}\nmodel: {name: mlp}", "needs 'name' (a built-in task) or 'path'"),
    ("task: iris\nmodel: {name: mlp, widht: 3}", "'widht' (did you mean 'width'?)"),
    ("task: iris\nmodel: mlp", "model: Input should be a valid dictionary"),
    ("task: iris\nmodel: {width: 3}", "model: a model is a mapping with a 'name'"),
    ("task: iris\nmodel: [name: mlp", "malformed YAML at line 2, column"),
    ("task: iris\nmodel: !!python/object/apply:os.system [echo hi]", "malformed YAML"),
    ("- just\n- a list", "must be a mapping"),
]


@pytest.mark.parametrize(("text", "fragment"), BROKEN)
def test_broken_recipes_name_their_place(text, fragment):
    with pytest.raises(RecipeError) as err:
        load_recipe(text)
    assert fragment in str(err.value)


def test_default_recipe_and_file_round_trip(tmp_path):
    recipe = load_recipe(DEFAULT_RECIPE)
    assert [name for name, _ in recipe.stage_entries()] == ["train_variants", "architecture"]
    path = tmp_path / "r.yaml"
    import yaml

    path.write_text(yaml.safe_dump(recipe.to_dict()))
    again = load_recipe(path)
    assert again.to_dict() == recipe.to_dict() and again.seed_list() == [0, 1, 2]
    with pytest.raises(RecipeError, match="no recipe file"):
        load_recipe(tmp_path / "missing.yaml")


def test_schema_lists_stages_and_models():
    schema = recipe_schema()
    json.dumps(schema)
    stage_names = [
        next(iter(v["properties"])) for v in schema["properties"]["stages"]["items"]["oneOf"]
    ]
    assert {"train_variants", "architecture"} <= set(stage_names)
    assert "cnn1d" in schema["properties"]["model"]["properties"]["name"]["enum"]


def test_every_example_recipe_is_valid():
    from pathlib import Path

    folder = Path(__file__).resolve().parents[1] / "recipes"
    files = sorted(folder.glob("*.yaml"))
    assert files
    for path in files:
        assert load_recipe(path).stage_entries()
    assert load_recipe(folder / "mnist1d.yaml").to_dict() == load_recipe(DEFAULT_RECIPE).to_dict()


GOOD = b"task: iris\nmodel: {name: linear}\n"
NINES = "[" + ", ".join(["*a"] * 9) + "]"
BOMB = "a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1]\n" + "".join(
    f"{x}: &{x} {NINES.replace('*a', '*' + p)}\n" for p, x in zip("abcdefgh", "bcdefghi")
)


def _file(tmp_path, data: bytes):
    path = tmp_path / "r.yaml"
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: d, "is a directory"),
        (lambda d: (os.mkfifo(d / "fifo.yaml"), d / "fifo.yaml")[1], "not a regular file"),
        (lambda d: Path("/dev/zero"), "not a regular file"),
        (lambda d: _file(d, gzip.compress(GOOD)), "gzip-compressed"),
        (lambda d: _file(d, GOOD.decode().encode("utf-16")), "NUL bytes"),
        (lambda d: _file(d, GOOD.decode().encode("utf-32")), "NUL bytes"),
        (lambda d: _file(d, GOOD + b"# caf\xe9\n"), "not UTF-8 text (line 3"),
        (lambda d: _file(d, GOOD + b"# \xed\xa0\x80\n"), "not UTF-8 text"),  # lone surrogate
        (lambda d: _file(d, GOOD + b"# \xc0\xaf\n"), "not UTF-8 text"),  # overlong '/'
        (lambda d: _file(d, bytes(range(1, 256)) * 4), "not UTF-8 text"),
        (lambda d: _file(d, GOOD + b"#" * (1 << 20)), "larger than 1024 KiB"),
    ],
)
def test_what_is_not_a_recipe_file_is_refused_without_reading_it_whole(tmp_path, make, message):
    with pytest.raises(RecipeError, match=re.escape(message)):
        load_recipe(make(tmp_path))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("train: {lr: 0.01, lr: 5}", "the key 'lr' is given twice (first on line 3)"),
        ("train: {lr: !!int 0x}", "a value cannot be read"),
        ("train: {lr: !!float abc}", "a value cannot be read: could not convert"),
        ("train: {lr: " + "9" * 5000 + "}", "a value cannot be read"),
        ("x: " + "[" * 1000 + "]" * 1000, "nested more than 64 levels deep"),
        (BOMB + "train: {lr: *i}", "holds or expands to more than 100,000 values"),
        ("train: {epochs: 1:30:00}", "train.epochs"),  # text (YAML 1.2), not 5400
        ("constraints: {max_params: true}", "constraints.max_params: a number or text is"),
        ("constraints: {max_bytes: .inf}", "constraints.max_bytes: a positive size in bytes"),
        ("constraints: {max_bytes: 1 XB}", "or text like 500kB, 1MB, 2MiB; got '1 XB'"),
        ("evaluate: {seeds: 1000000000}", "evaluate.seeds: at most 1,000 seeds"),
        ("deploy: {threads: 1000000}", "deploy.threads: Input should be less than or equal"),
    ],
)
def test_recipe_yaml_is_read_within_bounds_and_as_written(text, message):
    with pytest.raises(RecipeError, match=re.escape(message)):
        load_recipe(GOOD.decode() + text + "\n")


def test_numbers_read_as_yaml_1_2_and_merges_still_work():
    from tidian.recipe import read_yaml

    data = read_yaml("a: 1e-4\nb: 1_000\nc: 0x1F\nd: &d {x: 1}\ne: {<<: *d, x: 2}\nf: 1:30\n")
    assert data == {"a": 1e-4, "b": 1000, "c": 31, "d": {"x": 1}, "e": {"x": 2}, "f": "1:30"}


def test_a_message_lists_the_first_problems_and_counts_the_rest():
    keys = "".join(f"  k{i}: 1\n" for i in range(5000))
    with pytest.raises(RecipeError) as err:
        load_recipe(GOOD.decode() + "evaluate:\n" + keys)
    lines = str(err.value).splitlines()
    assert len(lines) == 11 and lines[-1] == "… and 4,990 more problems"
    assert len(str(err.value)) < 3000


def test_every_problem_of_a_recipe_is_reported_in_one_message():
    text = (
        "task: irs\nmodel: {name: mpl}\ntrain: {optimzer: adam}\n"
        "stages:\n  - tune: {trials: 2, space: {lr: {float: [1, 0.1]}}}\n  - architcture: {}\n"
    )
    with pytest.raises(RecipeError) as err:
        load_recipe(text)
    lines = str(err.value).splitlines()
    assert [line.split(":")[0] for line in lines] == [
        "task",
        "model.name",
        "train",
        "stages[0].tune",
        "stages[1]",
    ]
    assert "did you mean iris" in lines[0] and "did you mean mlp" in lines[1]
    assert "did you mean 'optimizer'" in lines[2] and "architecture" in lines[4]


_TUNE = "stages:\n  - tune: {{{}}}\n"
_LR = "space: {lr: {float: [0.001, 0.1]}}"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("model: {name: mlp, hidden: false}", "option 'hidden' is a list of whole numbers"),
        ("model: {name: mlp, hidden: [1.0e12]}", "option 'hidden' is a list of whole numbers in"),
        ("model: {name: cnn1d, width: 8.5}", "option 'width' is a whole number"),
        ("model: {name: gru, bidirectional: 1}", "option 'bidirectional' is a flag"),
        ("model: {name: mlp, norm: 5}", "option 'norm' is text"),
        ("model: {name: mlp, dropout: -1}", "option 'dropout' is a probability in [0, 1)"),
        ("model: {name: transformer, dropout: 1.0e30}", "'dropout' is a probability in [0, 1)"),
        ("model: {name: linear}\ntrain: {lr: 1.0e40}", "train.lr must be a number > 0 and <= 1"),
        ("model: {name: linear}\ntrain: {warmup_epochs: .inf}", "train.warmup_epochs must be"),
        ("model: {name: linear}\ntrain: {device: 'cuda:x'}", "train.device must be"),
        ("model: {name: linear}\nevaluate: {metric: rmse, margin: 1pt}", "rmse has none"),
        ("model: {name: linear}\nevaluate: {margin: -1}", "evaluate.margin: a number in"),
        ("model: {name: linear}\nevaluate: {min_effect: lots}", "evaluate.min_effect: a number"),
        # tune: bounded budgets, finite ranges, values the training options take
        (
            "model: {name: linear}\n" + _TUNE.format("trials: 1000000000000, " + _LR),
            "trials must be a whole",
        ),
        (
            "model: {name: linear}\n" + _TUNE.format("trials: 2, top_k: 3, " + _LR),
            "top_k must be a whole",
        ),
        ("model: {name: linear}\n" + _TUNE.format("timeout_s: .nan, " + _LR), "timeout_s must be"),
        ("model: {name: linear}\n" + _TUNE.format("space: {lr: {float: [0.001, .inf]}}"), "finite"),
        ("model: {name: linear}\n" + _TUNE.format("space: {lr: -1}"), "space.lr: train.lr must"),
        ("model: {name: linear}\n" + _TUNE.format("space: {lr: {}}"), "space.lr: train.lr must"),
        (
            "model: {name: linear}\n" + _TUNE.format("space: {lr: {choice: [0.1, 1.0e9]}}"),
            "got 1000000000.0",
        ),
        (
            "model: {name: linear}\n" + _TUNE.format("space: {epochs: {int: [1, 9], step: 0.5}}"),
            "whole numbers",
        ),
        (
            "model: {name: linear}\n"
            + _TUNE.format("sampler: grid, space: {lr: {float: [0.001, 0.1], step: 1.0e-12}}"),
            "the grid has 99,000,000,001 points",
        ),
    ],
)
def test_check_refuses_values_the_run_could_not_use(text, message):
    with pytest.raises(RecipeError, match=re.escape(message)):
        load_recipe("task: iris\n" + text + "\n")


@pytest.mark.parametrize(
    "model",
    [
        "{name: mlp, hidden: [32, 16], dropout: 0}",
        "{name: cnn1d, kernel_size: [3, 5]}",
        "{name: cnn1d, kernel_size: 3}",
        "{name: mlp, hidden: null, dropout: 0.1}",
    ],
)
def test_check_keeps_the_values_models_take(model):
    import yaml

    assert load_recipe(f"task: iris\nmodel: {model}\n").model == yaml.safe_load(model)


def test_a_searched_model_takes_distributions_and_checks_what_they_draw():
    text = (
        "task: iris\nmodel: {name: mlp}\nstages:\n  - tune:\n      trials: 2\n      space:\n"
        "        model:\n          choice:\n"
        "            - {name: cnn1d, width: {int: [16, 128], log: true}, depth: {int: [2, 5]}}\n"
        "            - {name: mlp, hidden: {choice: [[8], [16, 8]]}, dropout: {float: [0, 0.5]}}\n"
    )
    branches = load_recipe(text).stage_entries()[0][1].space["model"]["choice"]
    assert branches[1]["hidden"] == {"choice": [[8], [16, 8]]}
    hidden, dropout = "hidden: {choice: [[8], [16, 8]]}", "dropout: {float: [0, 0.5]}"
    for good, bad, message in [
        (hidden, "hidden: {choice: [[8], [1.0e12]]}", "option 'hidden' is a list of whole numb"),
        (hidden, "hidden: {int: [8, 32]}", "option 'hidden' is a list of whole numbers; got 8"),
        (dropout, "dropout: {choice: [0.1, yes]}", "option 'dropout' is a finite number; got True"),
    ]:
        with pytest.raises(RecipeError, match=re.escape(message)):
            load_recipe(text.replace(good, bad))
    for space, message in [
        ("{model: 5}", "space.model: a model is a mapping with a 'name'"),
        ("{model: {choice: 5}}", "space.model.choice: must be a non-empty list"),
        ("{model: {choice: []}}", "space.model.choice: must be a non-empty list"),
    ]:
        with pytest.raises(RecipeError, match=re.escape(message)):
            load_recipe(
                f"task: iris\nmodel: {{name: mlp}}\nstages:\n  - tune: {{trials: 2, space: {space}}}\n"
            )


@pytest.mark.parametrize(
    ("task", "message"),
    [
        ("{name: iris, val_size: .inf}", "'val_size' is a finite"),
        ("{name: iris, val_size: false}", "'val_size' is a finite"),
        ("{name: iris, test_size: -1}", "a fraction in [0, 1)"),
        ("{name: iris, val_size: 0.6, test_size: 0.5}", "below 1"),
        ("{name: synthetic, n_samples: 1.0e9}", "a whole number"),
    ],
)
def test_check_refuses_task_options_the_loader_could_not_use(task, message):
    with pytest.raises(RecipeError, match=re.escape(message)):
        load_recipe(f"task: {task}\nmodel: {{name: linear}}\n")
