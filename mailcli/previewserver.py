"""``mailcli render --serve``: a preview page on this machine that reloads on save.

A small HTTP server on 127.0.0.1 (never another address) renders the
template afresh for every request, so the page always shows what would be
sent now. The page carries a few lines of script that ask ``/stamp`` once a
second and reload when a file under ``templates/`` (or the data file) has
changed. A template that does not render shows its error, naming the file and
line, and reloads too once the file is fixed. Only requests addressed to the
loopback host are answered, so a web page elsewhere cannot read the preview
through a rebound DNS name. ``/text`` shows the text part.
"""

from __future__ import annotations

import hashlib
import html
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from .errors import MailcliError

_RELOAD = """<script>(function(){{var s="{stamp}";setInterval(function(){{fetch("/stamp",{{cache:"no-store"}})
.then(function(r){{return r.text()}}).then(function(t){{if(t!==s)location.reload()}}).catch(function(){{}})}},1000)}})();
</script>"""


@dataclass(frozen=True, slots=True)
class Preview:
    """What one render produced: the HTML and text parts."""

    html: str
    text: str


def stamp(paths: list[Path]) -> str:
    """A value that changes whenever a file under ``paths`` is saved, added or removed."""
    parts = []
    for root in paths:
        if root.is_file():
            parts.append(f"{root}:{root.stat().st_mtime_ns}:{root.stat().st_size}")
            continue
        for folder, _, files in os.walk(root):
            for name in sorted(files):
                path = Path(folder) / name
                try:
                    info = path.stat()
                except OSError:
                    continue
                parts.append(f"{path}:{info.st_mtime_ns}:{info.st_size}")
    return hashlib.sha256("\n".join(sorted(parts)).encode("utf-8", "surrogateescape")).hexdigest()[:16]


def _with_reload(page: str, current: str) -> str:
    script = _RELOAD.format(stamp=current)
    index = page.lower().rfind("</body>")
    return page[:index] + script + page[index:] if index >= 0 else page + script


def _error_page(message: str) -> str:
    return ("<!doctype html><html><head><meta charset=\"utf-8\"><title>Template error</title></head>"
            "<body style=\"font-family:system-ui,sans-serif;max-width:48rem;margin:2rem auto\">"
            f"<h1>The template does not render</h1><pre style=\"white-space:pre-wrap\">{html.escape(message)}</pre>"
            "<p>Fix it and save: this page reloads.</p></body></html>")


class PreviewServer:
    """Serves ``render()`` on 127.0.0.1 until ``stop()``."""

    def __init__(self, render: Callable[[], Preview], watched: list[Path], *, port: int = 0) -> None:
        self.render = render
        self.watched = watched
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the stdlib's name
                pass  # the preview is for one person at one browser: no access log

            def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
                host = (self.headers.get("Host") or "").rsplit(":", 1)[0].strip("[]").lower()
                if host not in ("127.0.0.1", "localhost"):
                    self._send(403, "text/plain", "This preview answers only on this machine.\n")
                    return
                current = stamp(server.watched)
                path = self.path.split("?", 1)[0]
                if path == "/stamp":
                    self._send(200, "text/plain", current)
                    return
                if path not in ("/", "/text"):
                    self._send(404, "text/plain", "Not found: the preview is at / and the text part at /text\n")
                    return
                try:
                    preview = server.render()
                except MailcliError as exc:
                    self._send(500, "text/html", _with_reload(_error_page(exc.message), current))
                    return
                if path == "/text":
                    self._send(200, "text/plain", preview.text)
                else:
                    self._send(200, "text/html", _with_reload(preview.html, current))

            def _send(self, status: int, kind: str, body: str) -> None:
                data = body.encode("utf-8")
                self.send_response(status)
                self.send_header("Content-Type", f"{kind}; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Cache-Control", "no-store")
                self.send_header("X-Content-Type-Options", "nosniff")
                self.end_headers()
                self.wfile.write(data)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._httpd.daemon_threads = True
        self.port = int(self._httpd.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}/"

    def serve(self, stop: threading.Event) -> None:
        """Answer requests until ``stop`` is set."""
        thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)
        thread.start()
        try:
            while not stop.wait(0.2):
                pass
        finally:
            self._httpd.shutdown()
            self._httpd.server_close()
            thread.join()
