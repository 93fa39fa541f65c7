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

RUN = re.compile(r"^/runs/([0-9a-f]{1,32})(\.json)?$")


def index_page(store: Any) -> str:
    rows = []
    for r in reversed(store.runs()):
        rec = r["recipe"]
        stages = ", ".join(next(iter(s)) for s in rec.get("stages", []))
        rows.append(
            f"<tr><td><a href='/runs/{escape(r['id'])}'>{escape(r['id'])}</a></td>"
            f"<td>{escape(r['status'])}</td><td>{escape(r['created'].isoformat()[:19])}</td>"
            f"<td class='l'>{escape(str(rec.get('task')))}</td>"
            f"<td class='l'>{escape(rec['model']['name'])}</td>"
            f"<td class='l'>{escape(stages)}</td></tr>"
        )
    table = (
        "<table class='runs'><thead><tr><th>run</th><th>status</th><th>created</th>"
        "<th>task</th><th>baseline</th><th>stages</th></tr></thead><tbody>"
        + "".join(rows)
        + "</tbody></table>"
        if rows
        else "<p>No runs in this store yet: <code>tidian run</code> makes one.</p>"
    )
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'><title>tidian runs</title>"
        f"<style>{CSS}</style></head><body><main><h1>tidian runs</h1>"
        f"<p class='muted'>{escape(store.display_url())}</p>{table}</main></body></html>"
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
                if url.path in ("/", "/runs"):
                    return self._send(200, index_page(store))
                if url.path == "/favicon.ico":
                    return self._send(204, "")
                match = RUN.match(url.path)
                if not match:
                    return self._send(404, "<p>Not found. <a href='/'>All runs</a></p>")
                run_id, as_json = match.group(1), bool(match.group(2))
                want = parse_qs(url.query).get("analyses", ["1"])[0] not in ("0", "false")
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
