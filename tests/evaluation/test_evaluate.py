import pytest

import tidian
from tidian import ConfigError, compare, evaluate


def test_evaluate_over_seeds_summarises_val_and_test(vector_task):
    result = evaluate(
        {"name": "mlp", "hidden": [16]},
        vector_task,
        {"epochs": 15, "lr": 0.01, "batch_size": 16},
        seeds=3,
        keep_models=True,
    )
    assert result.seeds == [0, 1, 2] and result.metric == "accuracy"
    acc = result["accuracy"]
    assert acc.n == 3 and acc.low <= acc.mean <= acc.high
    assert acc.values == tuple(result.scores("accuracy"))
    assert set(result.summary) == {"val", "test"}
    assert set(result.summary["test"]) >= {"accuracy", "f1_macro", "log_loss", "ece"}
    assert all(r.state is not None and len(r.history.epochs) == 15 for r in result.runs)
    assert acc.mean > 0.8
    doc = result.to_dict()
    assert doc["summary"]["test"]["accuracy"]["mean"] == acc.mean


def test_seeds_in_worker_processes_give_the_same_scores(vector_task):
    config = {"epochs": 4, "batch_size": 16}
    serial = evaluate("mlp", vector_task, config, seeds=[3, 4])
    parallel = evaluate("mlp", vector_task, config, seeds=[3, 4], n_jobs=2)
    assert serial.scores("log_loss") == parallel.scores("log_loss")


def test_compare_pairs_by_seed_and_detects_a_real_gain(vector_task):
    config = {"epochs": 15, "lr": 0.01, "batch_size": 16}
    weak = evaluate(
        {"name": "mlp", "hidden": [16]}, vector_task, {**config, "epochs": 1, "lr": 1e-4}, seeds=4
    )
    strong = evaluate({"name": "mlp", "hidden": [16]}, vector_task, config, seeds=4)
    result = compare(weak, strong)
    assert result.metric == "accuracy" and result.n == 4
    assert result.superior() and result.p_ttest < 0.05
    # on the test split the comparison counts its rows too: every seed kept their pseudo-values
    rows = len(vector_task.test)
    assert [len(r) for r in strong.row_table()] == [min(50, rows)] * 4
    assert result.row_groups == min(50, rows) and result.row_share <= 1
    crossed = tidian.paired_compare(
        weak.scores(), strong.scores(), rows=(weak.row_table(), strong.row_table())
    )
    assert (result.low, result.high) == (crossed.low, crossed.high)
    seeds_alone = tidian.paired_compare(weak.scores(), strong.scores())
    assert result.row_share > 0 and result.low != seeds_alone.low
    assert compare(weak, strong, split="val").row_groups == 0  # kept for test rows only
    with pytest.raises(ConfigError, match="same seeds"):
        compare(weak, evaluate("linear", vector_task, config, seeds=[7, 8, 9, 10]))


def test_evaluate_accepts_a_factory_and_a_metric(regression_task):
    def factory(task):
        return tidian.create_model("mlp", task, hidden=[8])

    result = evaluate(
        factory, regression_task, {"epochs": 20, "lr": 0.01}, seeds=2, metrics=["mae"]
    )
    assert result.metric == "rmse" and set(result.summary["test"]) == {"rmse", "mae"}
    assert result.name == "factory"


def test_evaluate_bad_arguments(vector_task):
    with pytest.raises(ConfigError, match="seeds"):
        evaluate("mlp", vector_task, seeds=[1, 1])
    with pytest.raises(ConfigError, match="n_jobs"):
        evaluate("mlp", vector_task, seeds=2, n_jobs=0)
    with pytest.raises(ConfigError, match="'name' key"):
        evaluate({"width": 3}, vector_task)
    with pytest.raises(ConfigError, match="metric 'rmse' is for values"):
        evaluate("mlp", vector_task, metric="rmse")
