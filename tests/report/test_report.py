"""The report: collect's numbers against the ledger, the rendered page, bad input, the CLI
commands (report, explain) and the read-only server."""

import json
import re
import threading
import urllib.error
import urllib.request
from html import escape

import numpy as np
import pytest
import torch

from tidian import DataError
from tidian.cli import main
from tidian.evaluation.stats import paired_compare
from tidian.recipe import CONFIRM_STAGE
from tidian.report import collect, render, to_json, write_report
from tidian.report.serve import make_server


@pytest.fixture(scope="module")
def data(tiny_run):
    store, run_id = tiny_run
    return to_json(collect(store, run_id, examples=2))


@pytest.mark.slow  # a whole pipeline run
def test_collect_numbers_equal_the_store(tiny_run, data):
    store, run_id = tiny_run
    run = store.run(run_id)
    rows = {r["id"]: r for r in store.candidates(run_id)}
    final, base = (
        rows[run["incumbent_id"]],
        next(r for r in rows.values() if r["stage"] == "baseline"),
    )
    head = data["headline"]
    assert head["final"]["id"] == final["id"] and head["baseline"]["id"] == base["id"]
    assert head["final"]["quality"]["mean"] == final["quality"]["mean"]
    assert head["final"]["quality"]["low"] == final["quality"]["ci_low"]
    assert head["final"]["cost"]["latency_ms"] == final["cost"]["latency_ms"]
    assert head["baseline"]["cost"]["bytes"] == base["cost"]["size_bytes"]
    gain = paired_compare(
        base["quality"]["per_seed"], final["quality"]["per_seed"], metric="accuracy"
    )
    assert head["gain"]["mean"] == pytest.approx(gain.mean)
    assert head["gain"]["low"] == pytest.approx(gain.low)
    assert head["speedup"] == pytest.approx(
        base["cost"]["latency_ms"] / final["cost"]["latency_ms"]
    )
    # one waterfall step per stage after the baseline; accepted exactly where it changed
    stages = store.stages(run_id)
    assert [w["stage"] for w in data["waterfall"]] == [s["name"] for s in stages[1:]]
    for w, s in zip(data["waterfall"], stages[1:]):
        assert w["accepted"] == (s["incumbent_after"] != s["incumbent_before"])
        if w["accepted"]:
            assert w["candidate"] == s["incumbent_after"]
    # the Pareto points are the finished candidates; the front is the run's
    # (the confirmation's re-runs are not candidates: scored on the holdout, not the test split)
    assert {p["id"] for p in data["pareto"]} == {
        i for i, r in rows.items() if r["stage"] != CONFIRM_STAGE
    }
    assert {p["id"] for p in data["pareto"] if p["front"]} == set(run["pareto"])
    assert [p["id"] for p in data["pareto"] if p["incumbent"]] == [final["id"]]
    # lineage edges are the parent links
    assert sorted(map(tuple, data["lineage"]["edges"])) == sorted(
        (r["parent_id"], r["id"]) for r in rows.values() if r["parent_id"]
    )
    # learning curves: one point per epoch, the mean over seeds
    curve = next(c for c in data["curves"] if c["candidate"] == base["id"])
    histories = [h["history"] for h in store.seed_results(base["id"]).values()]
    assert len(curve["train_loss"]) == 3
    assert curve["train_loss"][0] == pytest.approx(
        np.mean([h["epochs"][0]["train_loss"] for h in histories])
    )
    assert data["tuning"] and "lr" in data["tuning"][0]["importances"]
    # the learning curve: rows grow with the fraction; at 1.0 it retrains the incumbent's
    # recipe on the full split with the same seeds, so it reproduces its scores exactly
    (lc,) = data["learning_curves"]
    small, full = lc["points"]
    assert (small["fraction"], full["fraction"]) == (0.25, 1.0)
    assert small["rows"] < full["rows"] == data["task"]["train"]
    assert full["per_seed"] == pytest.approx(final["quality"]["per_seed"][:2])
    assert data["environment"]["versions"]["torch"]
    where = data["environment"]["executor"]
    assert where == {"executor": "local", "workers": 1, "threads": torch.get_num_threads()}
    assert data["reproduce"]["recipe_yaml"].startswith("task:")


def test_collect_analyses_of_the_final_model(data):
    test_rows = data["task"]["test"]
    confusion = np.array(data["confusion"]["matrix"])
    assert confusion.sum() == test_rows * data["confusion"]["seeds"] == test_rows * 3
    assert sum(b["count"] for b in data["reliability"]["bins"]) == test_rows * 3
    assert 0 <= data["reliability"]["ece"] <= 1
    assert data["errors"]["errors"] == round((1 - data["errors"]["accuracy"]) * test_rows)
    a = data["attributions"]
    assert len(a["examples"]) == 2 and a["permutation"]
    assert all(ex["relative_delta"] < 0.05 for ex in a["examples"])
    assert len(a["examples"][0]["integrated_gradients"]) == 4  # iris has four features
    if "flips" in data:
        f = data["flips"]
        assert not set(f["newly_right"]) & set(f["newly_wrong"])
    # every finished candidate with a parent has its flips against that parent
    flips = data["candidate_flips"]
    children = [c for st in data["stages"] for c in st["candidates"] if c["parent"]]
    assert set(flips) == {str(c["id"]) for c in children}
    for c in children:
        f = flips[str(c["id"])]
        assert f["against"] == c["parent"] and f["net"] == f["newly_right"] - f["newly_wrong"]
        # summed over every seed: the net change in correct rows is the change in the
        # summed per-seed accuracies, in rows
        parent = next(
            p for st in data["stages"] for p in st["candidates"] if p["id"] == c["parent"]
        )
        assert f["seeds"] == [0, 1, 2]
        moved = sum(
            (mine - theirs) * test_rows
            for mine, theirs in zip(c["quality"]["per_seed"], parent["quality"]["per_seed"])
        )
        assert f["net"] == round(moved)


def test_render_is_self_contained_and_shows_the_headline(data):
    page = render(data)
    assert page.startswith("<!doctype html>")
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)  # nothing fetched
    assert "<script" not in page
    assert "local, 1 job(s) at a time, " in page  # where the jobs ran (a cluster: its nodes)
    final = data["headline"]["final"]["quality"]
    assert f"{final['mean']:.4f} [{final['low']:.4f}, {final['high']:.4f}]" in page
    # the headline's first number is the confirmation's (iris is too small for a holdout:
    # fresh seeds on the test split, and the page says so), then the selection-time gain
    c = data["headline"]["confirmation"]
    big = re.findall(r'<span class="big" data-field="([^"]+)">([^<]+)</span>', page)
    g = c["gate"]
    assert big == [("confirmed-gain", f"{g['gain']:+.4f} [{g['low']:+.4f}, {g['high']:+.4f}]")]
    assert (
        c["scored_on"] == "test" and escape("(no holdout: 15% of the task's 150 rows is 22") in page
    )
    assert f'data-field="optimism">{c["optimism"]:+.4f}<' in page
    assert "at selection: " in page
    plots = re.findall(r'data-plot="([^"]+)"', page)
    for name in (
        "waterfall",
        "pareto-latency",
        "pareto-size",
        "curves-loss",
        "confusion",
        "reliability",
        "lineage",
        "permutation",
    ):
        assert name in plots


@pytest.mark.slow  # a whole pipeline run
def test_ledger_only_report_loads_no_model(tiny_run):
    store, run_id = tiny_run
    data = collect(store, run_id, analyses=False)
    assert "confusion" not in data and "attributions" not in data
    assert "not requested" in data["skipped"]["analyses"]
    assert "<svg" in render(to_json(data))


@pytest.mark.slow  # a whole pipeline run
def test_unknown_run_lists_recent_ones(tiny_run):
    store, run_id = tiny_run
    with pytest.raises(DataError, match=f"no run 'nope'.*recent runs: {run_id}"):
        collect(store, "nope")


@pytest.mark.slow  # a whole pipeline run
def test_unwritable_output_is_a_clear_error(tiny_run, tmp_path):
    store, run_id = tiny_run
    with pytest.raises(DataError, match="does not exist"):
        write_report(store, run_id, tmp_path / "missing" / "r.html", analyses=False)
    with pytest.raises(DataError, match="is a folder"):
        write_report(store, run_id, tmp_path, analyses=False)


def run_cli(capsys, *argv):
    with pytest.raises(SystemExit) as exit_:
        main(list(argv))
    out = capsys.readouterr()
    return exit_.value.code, out.out, " ".join(out.err.split())  # rich wraps long lines


@pytest.mark.slow  # a whole pipeline run
def test_report_and_explain_commands(tiny_run, tmp_path, capsys):
    store, run_id = tiny_run
    out = tmp_path / "r.html"
    code, text, _ = run_cli(
        capsys, "report", run_id, "--store", store.url, "--out", str(out), "--examples", "1"
    )
    assert code == 0 and "wrote" in text and out.read_text().count('class="plot"') >= 8
    code, text, _ = run_cli(
        capsys, "report", run_id, "--store", store.url, "--json", "--no-analyses"
    )
    assert code == 0 and json.loads(text)["run"]["id"] == run_id
    code, text, _ = run_cli(
        capsys, "explain", run_id, "--store", store.url, "--rows", "0,5", "--json"
    )
    doc = json.loads(text)
    assert code == 0 and [e["row"] for e in doc["examples"]] == [0, 5]
    assert doc["candidate"]["id"] == store.run(run_id)["incumbent_id"]
    code, text, _ = run_cli(capsys, "explain", run_id, "--store", store.url)
    assert code == 0 and "completeness gap" in text and "permutation importance" in text
    code, _, err = run_cli(capsys, "explain", run_id, "--store", store.url, "--rows", "9999")
    assert code == 2 and "test rows in 0.." in err
    code, _, err = run_cli(capsys, "report", "nope", "--store", store.url)
    assert code == 2 and "recent runs" in err


@pytest.mark.slow  # a whole pipeline run
def test_explain_names_missing_artifacts(tiny_run, tmp_path, capsys):
    from tidian.store import Store

    store, run_id = tiny_run
    other = Store(f"sqlite:///{tmp_path / 'other.db'}")
    rid = other.create_run(store.run(run_id)["recipe"])
    cand = other.candidate(rid, 0, "baseline", "baseline", None, {"name": "linear"}, {}, {})
    code, _, err = run_cli(
        capsys, "explain", rid, "--store", other.url, "--candidate", str(cand["id"])
    )
    assert code == 2 and "has no saved model" in err and "--resume" in err


@pytest.fixture(scope="module")
def server(tiny_run):
    store, _ = tiny_run
    srv = make_server(store, port=0)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{srv.server_port}"
    srv.shutdown()
    srv.server_close()


def _get(url: str, method: str = "GET") -> tuple[int, str]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method=method)) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


@pytest.mark.slow  # a whole pipeline run
def test_serve_lists_runs_and_serves_reports_read_only(tiny_run, server):
    store, run_id = tiny_run
    code, page = _get(server + "/")
    assert code == 200 and f"/runs/{run_id}" in page
    code, page = _get(f"{server}/runs/{run_id}?analyses=0")
    assert code == 200 and 'data-plot="waterfall"' in page
    code, body = _get(f"{server}/runs/{run_id}.json?analyses=0")
    doc = json.loads(body)
    final = store.get_candidate(store.run(run_id)["incumbent_id"])
    assert doc["headline"]["final"]["quality"]["mean"] == final["quality"]["mean"]
    assert _get(f"{server}/runs/0123abc")[0] == 404
    assert "recent runs" in _get(f"{server}/runs/0123abc")[1]
    assert _get(f"{server}/runs/{run_id}", "POST")[0] == 405
    assert _get(server + "/etc/passwd")[0] == 404


@pytest.mark.parametrize("method", ["HEAD", "OPTIONS", "TRACE", "PUT", "PROPFIND"])
def test_serve_answers_every_method_but_get_with_405(server, method):
    import http.client

    conn = http.client.HTTPConnection(server.removeprefix("http://"), timeout=30)
    conn.request(method, "/")
    answer = conn.getresponse()
    assert answer.status == 405 and answer.getheader("Allow") == "GET"
    conn.close()


def test_serve_bounds_its_threads_drops_idle_sockets_and_logs_a_hang_up_in_one_line(tiny_run):
    import socket
    import struct
    import time

    store, run_id = tiny_run
    lines: list[str] = []
    srv = make_server(store, port=0, threads=4, timeout=0.5, log=lines.append)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    address = ("127.0.0.1", srv.server_port)
    try:
        before = threading.active_count()
        idle = [socket.create_connection(address) for _ in range(40)]  # connect, say nothing
        for sock in idle:  # each is closed by the server once idle for its timeout, ...
            sock.settimeout(60)
            assert sock.recv(1) == b""
            sock.close()
            assert threading.active_count() <= before + 4  # ... while 4 threads answer
        # A client that asks for a report and hangs up (RST) before the answer.
        rude = socket.create_connection(address)
        rude.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        rude.sendall(f"GET /runs/{run_id}?analyses=0 HTTP/1.0\r\n\r\n".encode())
        rude.close()
        deadline = time.time() + 60
        while not lines and time.time() < deadline:
            time.sleep(0.01)
        assert len(lines) == 1 and "dropped" in lines[0] and "Traceback" not in lines[0]
        assert _get(f"http://127.0.0.1:{srv.server_port}/")[0] == 200  # still serving
    finally:
        srv.shutdown()
        srv.server_close()


@pytest.mark.parametrize("kind", ["sequence", "image", "text"])
def test_attribution_maps_of_every_input_kind(tiny_tasks, tmp_path, kind):
    import torch

    import tidian
    from tidian.report import explain_examples
    from tidian.report.render import _attribution_map

    task = tiny_tasks[kind]
    name = {"sequence": "cnn1d", "image": "cnn2d", "text": "embedding_bag"}[kind]
    torch.manual_seed(0)
    tidian.save_model(tidian.create_model(name, task), tmp_path / "m")
    data = to_json(explain_examples(tmp_path / "m", task, examples=2))
    assert len(data["examples"]) == 2 and "permutation" not in data
    ex = data["examples"][0]
    assert ex["relative_delta"] < 0.05
    page = _attribution_map("a", "IG", ex["integrated_gradients"], data, ex.get("tokens"))
    cells = np.asarray(ex["integrated_gradients"]).size
    if kind == "image":
        cells //= task.input_shape[0]  # channels summed per pixel
    if kind == "text":
        cells = sum(t not in ("[PAD]", "<pad>") for t in ex["tokens"]) or cells
        assert ex["tokens"][0] in task.vocab
    assert page.count('class="mark"') == cells


def test_a_tree_model_is_explained_by_permutation_alone(tiny_tasks, tmp_path):
    import tidian
    from tidian.report import explain_examples
    from tidian.report.render import _attributions
    from tidian.training.build import train_new

    task = tiny_tasks["vector"]  # the class is in feature 0
    model = train_new({"name": "random_forest", "n_estimators": 20}, task, {}, 0)[0]
    tidian.save_model(model, tmp_path / "m")
    data = to_json(explain_examples(tmp_path / "m", task, examples=2))
    assert data["examples"] == [] and "random_forest is a tree model" in data["gradient_free"]
    drops = {p["feature"]: p["drop"] for p in data["permutation"]}
    assert max(drops, key=drops.get) == "x0" and drops["x0"] > 0.2
    page = _attributions({"attributions": data, "metric": "accuracy", "skipped": {}})
    assert "piecewise constant" in page and "Permutation importance" in page
    with pytest.raises(tidian.ConfigError, match="permutation importance is for tabular"):
        image = tiny_tasks["image"]
        tidian.save_model(train_new({"name": "extra_trees"}, image, {}, 0)[0], tmp_path / "i")
        explain_examples(tmp_path / "i", image)


@pytest.mark.slow  # a whole pipeline run
def test_render_says_what_the_flips_sum_and_hides_slices_that_say_nothing(data):
    import copy

    page = render(data)
    assert "test rows right / wrong vs parent (summed over 3 seeds)" in page
    flat = copy.deepcopy(data)
    flat["errors"]["slices"] = [
        {"feature": "x", "slice": "[1, 2]", "count": 5, "accuracy": 0.9, "gap": 0.0},
        {"feature": "y", "slice": "[3, 4]", "count": 5, "accuracy": 0.9, "gap": 0.0},
    ]
    assert "Weakest feature slices" not in render(flat)
    flat["errors"]["slices"][0]["accuracy"] = 0.5
    assert "Weakest feature slices" in render(flat)
