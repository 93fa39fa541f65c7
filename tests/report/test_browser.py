"""The report and the ``serve`` pages in a real browser: headless Chromium (the system's
``/usr/bin/chromium``, driven by Playwright) opens them offline; no console errors, the headline
numbers match the store, every plot has drawn marks of non-zero size, and every plot can be
read: no text runs out of its chart or its box or over other text, labels are whole, numeric
axes have at least three ticks, every Pareto point is labelled — at 1400 px and at a phone's
390 px (where nothing widens the page: tables and plots scroll in their boxes). Screenshots
are kept.

``.ci/run`` installs Chromium and sets TIDIAN_REQUIRE_BROWSER=1, so in CI a missing browser
fails the suite instead of skipping these tests. Screenshots go to $TIDIAN_TEST_ARTIFACTS
(default: ``test-artifacts/`` in the working directory).
"""

import os
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

import tidian.pipeline as pipeline
from tidian.report import write_report
from tidian.report.serve import make_server
from tidian.store import Store

ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _chromium() -> str | None:
    found = os.environ.get("TIDIAN_CHROMIUM") or shutil.which("chromium")
    if found is None and Path("/usr/bin/chromium").exists():
        found = "/usr/bin/chromium"
    return found


def _need_browser():
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing = "the playwright package (pip install -e '.[dev]')"
    else:
        missing = None if _chromium() else "Chromium (apt-get install chromium)"
    if missing:
        if os.environ.get("TIDIAN_REQUIRE_BROWSER"):
            pytest.fail(f"browser tests required but {missing} is not installed")
        pytest.skip(f"browser tests need {missing}")


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    _need_browser()
    from playwright.sync_api import sync_playwright

    profile = tmp_path_factory.mktemp("chromium-profile")  # a fresh --user-data-dir
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(profile), executable_path=_chromium(), headless=True, args=ARGS
        )
        yield context
        context.close()


@pytest.fixture(scope="module")
def artifacts() -> Path:
    folder = Path(os.environ.get("TIDIAN_TEST_ARTIFACTS", "test-artifacts"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _open(context, url: str):
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    failed: list[str] = []
    page.on("requestfailed", lambda r: failed.append(r.url))
    page.goto(url, wait_until="load")
    return page, errors, failed


def _plots(page) -> list[dict]:
    return page.evaluate(
        """() => [...document.querySelectorAll('svg.plot')].map(s => {
            const box = s.getBoundingClientRect();
            const marks = [...s.querySelectorAll('.mark')].filter(m => {
                const b = m.getBoundingClientRect(); return b.width > 0 && b.height > 0; });
            return {name: s.dataset.plot, width: box.width, height: box.height,
                    marks: marks.length};
        })"""
    )


def _check_report_page(page, store, run_id) -> list[dict]:
    run = store.run(run_id)
    final = store.get_candidate(run["incumbent_id"])
    q = final["quality"]
    shown = page.inner_text("[data-field=final-quality]")
    assert shown == f"{q['mean']:.4f} [{q['ci_low']:.4f}, {q['ci_high']:.4f}]"
    assert page.inner_text("[data-field=run-id]") == run_id
    assert page.inner_text("[data-field=status]") == run["status"]
    assert page.inner_text("[data-field=final-params]") == f"{final['cost']['params']:,}"
    plots = _plots(page)
    assert len(plots) >= 8
    for plot in plots:
        assert plot["width"] > 50 and plot["height"] > 20, plot
        assert plot["marks"] >= 1, plot  # something was drawn
    return plots


# Every <text> of every plot, with its box, the plot's box, and the mark rectangle (if any)
# where the text starts (a lineage node, a heatmap cell).
TEXTS = """() => [...document.querySelectorAll('svg.plot')].map(s => {
    const box = s.getBoundingClientRect();
    const rects = [...s.querySelectorAll('rect.mark')].map(r => r.getBoundingClientRect());
    const texts = [...s.querySelectorAll('text')].map(t => {
        const b = t.getBoundingClientRect();
        const cx = b.left + 2, cy = (b.top + b.bottom) / 2;  // where the text starts
        const home = rects.find(r => r.width > 30 && r.left <= cx && cx <= r.right
                                     && r.top <= cy && cy <= r.bottom);
        return {text: t.textContent, cls: t.getAttribute('class') || '',
                box: [b.left, b.top, b.right, b.bottom],
                home: home ? [home.left, home.top, home.right, home.bottom] : null};
    });
    const titles = [...s.querySelectorAll('.mark > title')].map(t => t.textContent);
    return {name: s.dataset.plot, box: [box.left, box.top, box.right, box.bottom],
            texts: texts.filter(t => t.text.trim()), titles};
})"""


def _inside(inner, outer, slack=1.0) -> bool:
    return (
        inner[0] >= outer[0] - slack
        and inner[1] >= outer[1] - slack
        and inner[2] <= outer[2] + slack
        and inner[3] <= outer[3] + slack
    )


def _overlap(a, b, slack=1.0) -> bool:
    return min(a[2], b[2]) - max(a[0], b[0]) > slack and min(a[3], b[3]) - max(a[1], b[1]) > slack


def _check_readable(page) -> dict[str, dict]:
    """Every plot's text stays inside the plot (and inside the box it labels), no two texts
    overlap, no label is cut with "…", numeric axes have ≥ 3 ticks and every Pareto point has
    its id written next to it. Returns the plots by name."""
    plots = {p["name"]: p for p in page.evaluate(TEXTS)}
    for name, plot in plots.items():
        for t in plot["texts"]:
            assert _inside(t["box"], plot["box"]), (name, t["text"], "runs out of its plot")
            if t["home"]:
                assert _inside(t["box"], t["home"]), (name, t["text"], "runs out of its box")
            assert not t["text"].endswith("…"), (name, t["text"])
        texts = plot["texts"]
        for i, a in enumerate(texts):
            for b in texts[i + 1 :]:
                assert not _overlap(a["box"], b["box"]), (name, a["text"], b["text"])
        if name.startswith(("pareto", "curves", "learning-curve", "reliability", "attribution-ig")):
            for axis in ("x", "y"):
                ticks = [t for t in texts if f"tick {axis}" in t["cls"]]
                if name.startswith("attribution") and not ticks:
                    continue  # attributions of a table are bars (no axis to read)
                assert len(ticks) >= 3, (name, axis, [t["text"] for t in ticks])
        if name.startswith("pareto"):
            drawn = {m.split(" ", 1)[0] for m in plot["titles"]}
            written = {
                w.rstrip(",") for t in texts if "point-label" in t["cls"] for w in t["text"].split()
            }
            assert drawn <= written, (name, drawn - written)
    return plots


def _squash(text: str) -> str:
    return "".join(text.split())


def _check_whole_labels(plots: dict[str, dict], data: dict) -> None:
    """The labels a person reads are whole: lineage nodes, confusion classes, legends."""
    lineage = "".join(_squash(t["text"]) for t in plots["lineage"]["texts"])
    for node in data["lineage"]["nodes"]:
        assert _squash(f"#{node['id']} {node['label']}") in lineage
    if "confusion" in plots:
        shown = {t["text"] for t in plots["confusion"]["texts"]}
        assert set(data["confusion"]["classes"]) <= shown
    legend = "".join(_squash(t["text"]) for t in plots["curves-loss"]["texts"])
    for c in data["curves"]:
        assert _squash(f"#{c['candidate']} {c['label']}") in legend


def _phone(context, url: str, shot: Path) -> None:
    """At a phone's width nothing widens the page and the plots stay readable."""
    page = context.new_page()
    page.set_viewport_size({"width": 390, "height": 800})
    page.goto(url, wait_until="load")
    assert page.evaluate("document.documentElement.scrollWidth") <= 391
    _check_readable(page)
    page.screenshot(path=str(shot), full_page=True)
    page.close()


@pytest.mark.slow  # a whole pipeline run
def test_report_file_renders_in_chromium(browser, tiny_run, tmp_path, artifacts):
    store, run_id = tiny_run
    out = tmp_path / "report.html"
    data = write_report(store, run_id, out, examples=2)
    page, errors, failed = _open(browser, out.as_uri())
    page.set_viewport_size({"width": 1400, "height": 900})
    assert errors == [] and failed == []
    plots = _check_report_page(page, store, run_id)
    names = {p["name"] for p in plots}
    assert {"waterfall", "pareto-latency", "confusion", "reliability", "lineage"} <= names
    assert {"attribution-ig-0", "permutation", "curves-loss", "learning-curve-4"} <= names
    _check_whole_labels(_check_readable(page), data)
    page.screenshot(path=str(artifacts / "report.png"), full_page=True)
    assert (artifacts / "report.png").stat().st_size > 10_000
    page.close()
    _phone(browser, out.as_uri(), artifacts / "report-phone.png")


@pytest.mark.slow  # a whole pipeline run
def test_a_sequence_report_draws_the_signal_under_its_attribution(browser, tmp_path, artifacts):
    store = Store(f"sqlite:///{tmp_path / 'ledger.db'}", artifacts=tmp_path / "runs")
    recipe = {
        "task": "mnist1d",
        "model": {"name": "cnn1d", "width": 8, "depth": 1},
        "train": {"epochs": 2, "lr": 0.01},
        "evaluate": {"seeds": 2},
    }
    result = pipeline.run(recipe, store=store)
    out = tmp_path / "report.html"
    data = write_report(store, result.run_id, out, examples=1)
    page, errors, failed = _open(browser, out.as_uri())
    assert errors == [] and failed == []
    plots = _check_readable(page)
    ig = plots["attribution-ig-0"]
    signal = page.locator("svg[data-plot=attribution-ig-0] polyline.mark")
    assert signal.count() == 1  # the input signal, one channel
    steps = np.asarray(data["attributions"]["examples"][0]["input"]).size  # 40 steps × 1
    cells = page.locator("svg[data-plot=attribution-ig-0] rect.mark").count()
    assert cells == steps == 40  # one attribution cell per time step, under the signal
    assert any(t["text"] == "time step" for t in ig["texts"])
    page.screenshot(path=str(artifacts / "report-sequence.png"), full_page=True)
    page.close()


@pytest.mark.slow  # a whole pipeline run
def test_serve_pages_render_in_chromium(browser, tiny_run, artifacts):
    store, run_id = tiny_run
    server = make_server(store, port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_port}"
        page, errors, failed = _open(browser, base + "/")
        assert page.locator(f"a[href='/runs/{run_id}']").count() == 1
        heads = page.locator("th").all_inner_texts()
        assert [h.rstrip(" ▲▼") for h in heads] == [
            "run",
            "status",
            "task",
            "metric",
            "baseline",
            "final",
            "gain [95% CI]",
            "stages",
            "created (UTC)",
        ]
        row = page.locator("tbody tr").first.locator("td").all_inner_texts()
        final = store.get_candidate(store.run(run_id)["incumbent_id"])["quality"]["mean"]
        assert row[2] == "iris" and row[3] == "accuracy" and row[5] == f"{final:.4f}"
        page.click("th >> text=gain")  # sorting is a link: no script
        page.wait_for_load_state("load")
        assert page.url.endswith("/?sort=gain&order=desc")
        assert page.inner_text("th:nth-child(7)").endswith("▼")
        page.screenshot(path=str(artifacts / "serve-index.png"), full_page=True)
        page.goto(base + "/")
        page.click(f"a[href='/runs/{run_id}']")
        page.wait_for_load_state("load")
        assert page.url == f"{base}/runs/{run_id}"
        _check_report_page(page, store, run_id)
        page.screenshot(path=str(artifacts / "serve-run.png"), full_page=True)
        assert errors == [] and failed == []
        page.close()
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(
    ("marks", "problem"),
    [
        ('<text x="600" y="50" font-size="12">a label running past the edge</text>', "its plot"),
        (
            '<rect class="mark" x="10" y="10" width="60" height="18"/>'
            '<text x="14" y="23" font-size="9">#2 optimizer=adamw, weight_decay=0.01</text>',
            "its box",
        ),
        ('<text x="20" y="50">overlapping</text><text x="30" y="52">text</text>', "overlap"),
        ('<text x="20" y="50">optimizer=a…</text>', "…"),
    ],
)
def test_the_readability_check_sees_clipped_overlapping_and_cut_text(
    browser, tmp_path, marks, problem
):
    page_file = tmp_path / "plot.html"
    page_file.write_text(
        '<!doctype html><html><body><svg class="plot" data-plot="lineage" viewBox="0 0 640 100" '
        f'width="640" height="100" xmlns="http://www.w3.org/2000/svg">{marks}</svg></body></html>'
    )
    page = browser.new_page()
    page.goto(page_file.as_uri())
    with pytest.raises(AssertionError) as failed:
        _check_readable(page)
    page.close()
    assert problem in str(failed.value) or (
        problem == "overlap" and "overlapping" in str(failed.value)
    )
