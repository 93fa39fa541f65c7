"""The report and the ``serve`` pages in a real browser: headless Chromium (the system's
``/usr/bin/chromium``, driven by Playwright) opens them offline; no console errors, the headline
numbers match the store, every plot has drawn marks of non-zero size; screenshots are kept.

``.ci/run`` installs Chromium and sets TIDIAN_REQUIRE_BROWSER=1, so in CI a missing browser
fails the suite instead of skipping these tests. Screenshots go to $TIDIAN_TEST_ARTIFACTS
(default: ``test-artifacts/`` in the working directory).
"""

import os
import shutil
import threading
from pathlib import Path

import pytest

from tidian.report import write_report
from tidian.report.serve import make_server

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


@pytest.mark.slow  # a whole pipeline run
def test_report_file_renders_in_chromium(browser, tiny_run, tmp_path, artifacts):
    store, run_id = tiny_run
    out = tmp_path / "report.html"
    write_report(store, run_id, out, examples=2)
    page, errors, failed = _open(browser, out.as_uri())
    assert errors == [] and failed == []
    plots = _check_report_page(page, store, run_id)
    names = {p["name"] for p in plots}
    assert {"waterfall", "pareto-latency", "confusion", "reliability", "lineage"} <= names
    assert {"attribution-ig-0", "permutation", "curves-loss", "learning-curve-4"} <= names
    page.screenshot(path=str(artifacts / "report.png"), full_page=True)
    assert (artifacts / "report.png").stat().st_size > 10_000
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
        page.screenshot(path=str(artifacts / "serve-index.png"), full_page=True)
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
