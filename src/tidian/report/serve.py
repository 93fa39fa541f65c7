"""``tidian serve``: the runs of a store and each run's report over HTTP on 127.0.0.1,
read-only — for a team sharing one (PostgreSQL) store. Standard library only: the standard
``http.server`` with a socket timeout on every connection and a bounded pool of worker threads
(the server has one static read-only job; an ASGI stack would add dependencies, not safety).

``/`` lists the runs, ``/runs/RUN_ID`` renders a run's report (collected on request, with its
analyses unless ``?analyses=0``), ``/runs/RUN_ID.json`` is the same data as JSON. Nothing the
server does writes to the store.
"""

from __future__ import annotations

import json
import math
import re
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from html import escape
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tidian.exceptions import TidianError
from tidian.report.collect import collect, to_json
from tidian.report.render import CSS, render
from tidian.report.svg import fmt
from tidian.runs import gain_text, overview

RUN = re.compile(r"^/runs/([0-9a-f]{1,32})(\.json)?$")


# the runs table's columns: (key in the query string, heading, sort key of a runs.overview row)
COLUMNS: tuple[tuple[str, str, Callable[[dict[str, Any]], Any]], ...] = (
    ("run", "run", lambda r: r["run_id"]),
    ("status", "status", lambda r: r["status"]),
    ("task", "task", lambda r: r["task"]),
    ("metric", "metric", lambda r: r["metric"] or ""),
    ("baseline", "baseline", lambda r: _number(r["baseline"])),
    ("final", "final", lambda r: _number(r["final"])),
    ("gain", "gain [95% CI]", lambda r: _number((r["gain"] or {}).get("mean"))),
    ("stages", "stages", lambda r: len(r["stages"])),
    ("created", "created (UTC)", lambda r: r["created"]),
)


def _number(v: float | None) -> float:
    return -math.inf if v is None else v


def index_page(store: Any, sort: str = "created", descending: bool = True) -> str:
    """The store's runs as a table sorted by column ``sort``; every heading is a link that
    sorts by it (again: the other way round) — no script."""
    keys = {key: get for key, _, get in COLUMNS}
    if sort not in keys:
        sort, descending = "created", True
    rows = sorted(overview(store), key=keys[sort], reverse=descending)
    head = []
    for key, heading, _ in COLUMNS:
        flip = key == sort and descending
        arrow = (" ▼" if descending else " ▲") if key == sort else ""
        head.append(
            f"<th><a href='/?sort={key}&amp;order={'asc' if flip else 'desc'}'>"
            f"{escape(heading)}{arrow}</a></th>"
        )
    body = []
    for r in rows:
        state = f"stale: {r['stale']}" if r["stale"] else r["status"]
        cells = [
            f"<a href='/runs/{escape(r['run_id'])}'>{escape(r['run_id'])}</a>",
            escape(state),
            escape(r["task"]),
            escape(r["metric"] or "—"),
            fmt(r["baseline"], 4),
            fmt(r["final"], 4),
            gain_text(r["gain"]),
            escape(", ".join(r["stages"]) or "—"),
            escape(r["created"][:19].replace("T", " ")),
        ]
        left = {0, 1, 2, 3, 7}
        body.append(
            "<tr>"
            + "".join(
                f"<td class='l'>{c}</td>" if i in left else f"<td>{c}</td>"
                for i, c in enumerate(cells)
            )
            + "</tr>"
        )
    table = (
        f"<div class='scroll'><table class='runs'><thead><tr>{''.join(head)}</tr></thead>"
        f"<tbody>{''.join(body)}</tbody></table></div>"
        if rows
        else "<p>No runs in this store yet: <code>tidian run</code> makes one.</p>"
    )
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>tidian runs</title><style>{CSS}th a{{color:inherit}}</style></head><body><main>"
        f"<h1>tidian runs</h1><p class='muted'>{escape(store.display_url())}; baseline and "
        "final: mean test quality over the run's seeds; gain: final − baseline, paired.</p>"
        f"{table}</main></body></html>"
    )


def make_handler(
    store: Any, analyses: bool = True, timeout: float = 10.0
) -> type[BaseHTTPRequestHandler]:
    lock = threading.Lock()  # one report at a time: analyses load models and use the CPU

    class Handler(BaseHTTPRequestHandler):
        server_version = "tidian"
        # A connection that sends nothing for this long is closed (an idle socket must not
        # hold a worker thread for ever).
        timeout = None  # set below, per server

        def log_message(self, fmt: str, *args: Any) -> None:  # quiet; errors still answered
            pass

        def _send(self, code: int, body: str, kind: str = "text/html") -> None:
            data = body.encode("utf-8")
            self.send_response(code)
            self.send_header("Content-Type", f"{kind}; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Cache-Control", "no-store")
            if code == 405:
                self.send_header("Allow", "GET")
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            try:
                query = parse_qs(url.query)
                if url.path in ("/", "/runs"):
                    order = query.get("order", ["desc"])[0]
                    sort = query.get("sort", ["created"])[0]
                    return self._send(200, index_page(store, sort, order != "asc"))
                if url.path == "/favicon.ico":
                    return self._send(204, "")
                match = RUN.match(url.path)
                if not match:
                    return self._send(404, "<p>Not found. <a href='/'>All runs</a></p>")
                run_id, as_json = match.group(1), bool(match.group(2))
                want = query.get("analyses", ["1"])[0] not in ("0", "false")
                with lock:
                    data = to_json(collect(store, run_id, analyses=analyses and want))
                if as_json:
                    return self._send(200, json.dumps(data), "application/json")
                return self._send(200, render(data))
            except TidianError as err:
                return self._send(404, f"<p>{escape(str(err))}</p><p><a href='/'>All runs</a></p>")

        def _read_only(self) -> None:
            self._send(405, "<p>tidian serve is read-only: GET only.</p>")

        def __getattr__(self, name: str) -> Any:
            # Every method but GET (HEAD, OPTIONS, TRACE, POST, …, and made-up ones) is 405
            # with "Allow: GET", not the base class's 501.
            if name.startswith("do_"):
                return self._read_only
            raise AttributeError(name)

    Handler.timeout = timeout
    return Handler


class ReportServer(HTTPServer):
    """An HTTP server answering on at most ``threads`` threads at once (more connections wait
    in the queue), closing connections idle for ``timeout`` seconds, and logging a client that
    hung up as one line (``log``), not a traceback."""

    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[BaseHTTPRequestHandler],
        threads: int = 8,
        log: Callable[[str], None] | None = None,
    ) -> None:
        super().__init__(address, handler)
        self.pool = ThreadPoolExecutor(threads, thread_name_prefix="tidian-serve")
        self.log = log or (lambda line: print(line, file=sys.stderr, flush=True))

    def process_request(self, request: Any, client_address: Any) -> None:
        self.pool.submit(self._answer, request, client_address)

    def _answer(self, request: Any, client_address: Any) -> None:
        try:
            self.finish_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            self.shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        error = sys.exc_info()[1]
        host, port = client_address[:2]
        if isinstance(error, (ConnectionError, TimeoutError)):
            self.log(f"serve: client {host}:{port} dropped ({type(error).__name__})")
        else:
            self.log(f"serve: error answering {host}:{port}: {type(error).__name__}: {error}")

    def server_close(self) -> None:
        super().server_close()
        self.pool.shutdown(wait=False, cancel_futures=True)


def make_server(
    store: Any,
    port: int = 8765,
    analyses: bool = True,
    *,
    threads: int = 8,
    timeout: float = 10.0,
    log: Callable[[str], None] | None = None,
) -> ReportServer:
    """A server bound to 127.0.0.1 (``port`` 0: any free port; ``server.server_port`` says),
    answering ``threads`` connections at once, closing one idle for ``timeout`` seconds."""
    return ReportServer(
        ("127.0.0.1", port), make_handler(store, analyses, timeout), threads=threads, log=log
    )
