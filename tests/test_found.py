"""What the search found and the gate did not keep: `runs.best_found`, as `tidian show`, its
JSON and the report say it."""

import json
from types import SimpleNamespace

import pytest

from conftest import run_cli
from tidian.cli import _found_line
from tidian.report import collect, render, to_json
from tidian.runs import best_found

GATE = {"gain": 0.0225, "low": -0.0105, "high": 0.0554, "p_adjusted": 0.079, "accepted": False}
GATE["adjusted_low"] = None  # gated alone (chosen on validation), not among several


def _row(cid, stage, val, test, *, parent=None, metric="accuracy", status="done", gate=None):
    return {
        "id": cid,
        "parent_id": parent,
        "stage": stage,
        "stage_position": 0,
        "label": f"{stage} #{cid}",
        "model": {"name": "linear"},
        "status": status,
        "decision": "rejected" if gate else None,
        "reason": None,
        "gate": gate,
        "quality": {"metric": metric, "mean": test, "val_mean": val},
        "cost": {},
    }


def test_the_best_on_validation_leaves_out_refits_what_is_made_of_them_and_the_final():
    rows = [
        _row(1, "baseline", 0.90, 0.91),
        _row(2, "architecture", 0.95, 0.93, parent=1, gate=GATE),
        _row(3, "architecture", 0.97, 0.92, parent=1, status="failed"),  # not finished
        _row(4, "refit", 0.99, 0.94, parent=1),  # trained on the validation rows
        _row(5, "quantize", 0.99, 0.94, parent=4),  # made from the refit
        _row(6, "confirm", 0.99, 0.95),  # a confirmation's re-run
        _row(7, "architecture", None, 0.99, parent=1),  # no validation score
    ]
    assert best_found(rows, final_id=1)["id"] == 2
    assert best_found(rows, final_id=2) is None  # the final is the best found: nothing to say
    assert best_found(rows[:1] + rows[3:6], final_id=4)["id"] == 1  # the baseline, not the refit
    # an error metric: the lowest validation mean; equal means: the earlier candidate
    errors = [_row(1, "baseline", 60.0, 59.0, metric="rmse")]
    errors += [_row(c, "tune", 55.0, 58.0 - c, metric="rmse") for c in (2, 3)]
    assert best_found(errors, final_id=1)["id"] == 2
    assert best_found([rows[6]], final_id=None) is None


@pytest.fixture(scope="module")
def data(tiny_run):
    store, run_id = tiny_run
    return to_json(collect(store, run_id, analyses=False))


@pytest.mark.slow  # the tiny run: a whole pipeline run
def test_show_and_the_report_say_what_the_gate_did_not_keep(data):
    rows = [_row(1, "baseline", 0.90, 0.91), _row(2, "architecture", 0.95, 0.93, gate=GATE)]
    res = SimpleNamespace(candidates=rows, incumbent=rows[0])
    assert _found_line(res) == (
        "best on validation, not kept: #2 architecture #2 (validation 0.9500, test 0.9300) — "
        "rejected: gain +0.0225 [-0.0105, +0.0554], p=0.079"
    )
    assert _found_line(SimpleNamespace(candidates=rows[:1], incumbent=rows[0])) == ""
    # the report: the tiny run's headline with a candidate the gate turned down
    page = render({**data, "headline": {**data["headline"], "found": rows[1]}})
    final = data["headline"]["final"]["quality"]["mean"]
    assert (
        'best on validation, not kept: <span data-field="found">#2 architecture #2</span> '
        f"(validation 0.9500, test 0.9300 against the final's {final:.4f}): its gain "
        "+0.0225 [-0.0105, +0.0554] was not shown (p=0.079)"
    ) in page


@pytest.mark.slow  # the tiny run: a whole pipeline run
def test_show_json_and_the_report_s_data_name_the_candidate_found(tiny_run, data, capsys):
    store, run_id = tiny_run
    code, out, _ = run_cli(capsys, "show", run_id, "--store", store.url, "--json")
    assert code == 0
    doc = json.loads(out)
    found = best_found(store.candidates(run_id), doc["incumbent"])
    assert doc["found"] == (found["id"] if found else None)
    assert (data["headline"]["found"] or {}).get("id") == doc["found"]  # the report's too
    code, out, _ = run_cli(capsys, "show", run_id, "--store", store.url)
    assert ("best on validation, not kept: #" in out) == (found is not None)
