"""``tidian serve``: the runs of a store and each run's report over HTTP on 127.0.0.1,
read-only — for a team sharing one (PostgreSQL) store. Standard library only.

``/`` lists the runs, ``/runs/RUN_ID`` renders a run's report (collected on request, with its
analyses unless ``?analyses=0``), ``/runs/RUN_ID.json`` is the same data as JSON. Nothing the
server does writes to the store.
"""

from __future__ import annotations

import json
import re
import threading
from html import escape
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
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


def make_handler(store: Any, analyses: bool = True) -> type[BaseHTTPRequestHandler]:
    lock = threading.Lock()  # one report at a time: analyses load models and use the CPU

    class Handler(BaseHTTPRequestHandler):
        server_version = "tidian"

        def log_message(self, fmt: str, *args: Any) -> None:  # quiet; errors still answered
            pass

        def _send(self, code: int, body: str, kind: str = "text/html") -> None:
            data = body.encode("utf-8")
            self.send_response(code)
            self.send_header("Content-Type", f"{kind}; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Cache-Control", "no-store")
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

        def do_POST(self) -> None:
            self._send(405, "<p>tidian serve is read-only.</p>")

        do_PUT = do_DELETE = do_PATCH = do_POST

    return Handler


def make_server(store: Any, port: int = 8765, analyses: bool = True) -> ThreadingHTTPServer:
    """A server bound to 127.0.0.1 (``port`` 0: any free port; ``server.server_port`` says)."""
    return ThreadingHTTPServer(("127.0.0.1", port), make_handler(store, analyses))
