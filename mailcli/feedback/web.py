"""The unsubscribe endpoint: a plain WSGI app and the waitress server around it.

What the endpoint promises (CLI.md "Unsubscribe endpoint", RFC 8058):

* ``POST`` with ``List-Unsubscribe=One-Click`` (urlencoded or multipart) and a
  valid token unsubscribes the contact from the token's list and answers 200 —
  no redirect, cookie, login or confirmation (B06, B07, B15). Repeating it
  answers the same 200 (B09); so does a token whose contact was erased.
* ``GET``/``HEAD`` render a page whose button POSTs; they never change
  anything, so link scanners unsubscribe no one (B08). They do not even read
  the database.
* A missing, malformed or tampered token gets one uniform 400 page, whatever
  was wrong with it; the MAC is compared in constant time
  (``tokens.parse_unsubscribe_token``, B09, F13).
* Only the path of ``[unsubscribe] url`` is served; everything else is 404.
  Bodies over 64 KiB are refused (413), clients that keep sending invalid
  tokens are slowed down with 429 (F35), and the access log carries a short
  hash of the token, never an address or a client IP (E26, F35).

Why waitress: it is a pure-Python, production-grade WSGI server with a
thread pool, request-size limits, slow-client handling and years of use behind
reverse proxies; it needs no C extension and no framework. The app itself is a
single small WSGI callable, so no web framework is needed either.

SQLite connections are not shared between waitress' worker threads: each
thread opens its own ``Store`` on first use, and they are all closed on
shutdown.
"""

from __future__ import annotations

import base64
import hashlib
import html
import logging
import signal
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import FrameType
from typing import Any
from urllib.parse import parse_qs, urlsplit

from .. import clock
from ..config import Settings
from ..store import Store, open_store
from ..tokens import parse_unsubscribe_token
from . import actions

log = logging.getLogger("mailcli.serve")

MAX_BODY = 64 * 1024
ONE_CLICK = ("List-Unsubscribe", "One-Click")

_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:32rem;margin:3rem auto;padding:0 1rem;line-height:1.5;color:#222}"
    "button{font-size:1rem;padding:.6rem 1.2rem;border:0;border-radius:.3rem;background:#1a5fb4;color:#fff;cursor:pointer}"
)
_STYLE_HASH = base64.b64encode(hashlib.sha256(_STYLE.encode()).digest()).decode()

SECURITY_HEADERS = [
    ("Cache-Control", "no-store"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("X-Frame-Options", "DENY"),
    ("Content-Security-Policy",
     f"default-src 'none'; style-src 'sha256-{_STYLE_HASH}'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"),
]

StartResponse = Callable[[str, list[tuple[str, str]]], Any]


def _page(title: str, body: str) -> bytes:
    return (
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">"
        "<meta name=\"robots\" content=\"noindex,nofollow\">"
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head>"
        f"<body><main>{body}</main></body></html>\n"
    ).encode()


def token_ref(token: str | None) -> str:
    """A short, non-reversible reference to a token for the access log."""
    if not token:
        return "-"
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()[:12]


class FailureLimiter:
    """Per-client budget of invalid requests in a sliding window (F35).

    Valid one-click POSTs are never limited: mailbox providers send them from
    a few shared addresses. Only clients that keep presenting bad tokens are
    answered 429 for a while. The table is bounded, oldest client first out.
    """

    def __init__(self, limit: int = 30, window: float = 60.0, *, max_clients: int = 10_000,
                 now: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.window = window
        self.max_clients = max_clients
        self._now = now
        self._lock = threading.Lock()
        self._hits: OrderedDict[str, list[float]] = OrderedDict()

    def _recent(self, client: str, moment: float) -> list[float]:
        hits = [t for t in self._hits.get(client, []) if moment - t < self.window]
        return hits

    def blocked(self, client: str) -> bool:
        with self._lock:
            return len(self._recent(client, self._now())) >= self.limit

    def failed(self, client: str) -> None:
        with self._lock:
            moment = self._now()
            hits = self._recent(client, moment)
            hits.append(moment)
            self._hits[client] = hits
            self._hits.move_to_end(client)
            while len(self._hits) > self.max_clients:
                self._hits.popitem(last=False)


@dataclass(frozen=True, slots=True)
class Reply:
    status: str
    body: bytes
    outcome: str  # for the log: page, unsubscribed, already, gone, invalid, ...
    extra_headers: tuple[tuple[str, str], ...] = ()
    token: str | None = None  # the token a POST used (query or form), for the log


class BadRequest(Exception):
    def __init__(self, status: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class UnsubscribeApp:
    """The WSGI application behind ``mailcli serve``."""

    def __init__(self, settings: Settings, *, limiter: FailureLimiter | None = None) -> None:
        self.settings = settings
        self.path = urlsplit(settings.unsubscribe.url).path.rstrip("/") or "/"
        self.limiter = limiter or FailureLimiter()
        self._local = threading.local()
        self._stores: list[Store] = []
        self._stores_lock = threading.Lock()
        name = html.escape(settings.project.name)
        self._invalid = _page(
            "Link not valid",
            "<h1>This unsubscribe link is not valid</h1>"
            "<p>It may have been cut off. Open the whole link from the message again, or reply to the "
            "message and ask to be unsubscribed.</p>",
        )
        self._done = _page(
            "Unsubscribed",
            f"<h1>You are unsubscribed</h1><p>You will receive no more messages of this list from {name}.</p>",
        )

    # -- stores ----------------------------------------------------------
    def store(self) -> Store:
        store: Store | None = getattr(self._local, "store", None)
        if store is None:
            store = open_store(self.settings.project.database, create=False)
            self._local.store = store
            with self._stores_lock:
                self._stores.append(store)
        return store

    def close(self) -> None:
        with self._stores_lock:
            for store in self._stores:
                store.close()
            self._stores.clear()

    # -- WSGI ------------------------------------------------------------
    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "GET").upper()
        path = environ.get("PATH_INFO", "") or "/"
        token: str | None = None
        try:
            if (path.rstrip("/") or "/") != self.path:
                reply = Reply("404 Not Found", _page("Not found", "<h1>Not found</h1>"), "not-found")
            elif method not in ("GET", "HEAD", "POST"):
                reply = Reply("405 Method Not Allowed", _page("Not allowed", "<h1>Method not allowed</h1>"),
                              "method", (("Allow", "GET, HEAD, POST"),))
            else:
                client = str(environ.get("REMOTE_ADDR", ""))
                if self.limiter.blocked(client):
                    reply = Reply("429 Too Many Requests", _page("Too many requests", "<h1>Too many requests</h1>"
                                  "<p>Please try again in a minute.</p>"), "limited", (("Retry-After", "60"),))
                else:
                    query = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
                    token = (query.get("t") or [None])[0]
                    if method == "POST":
                        reply = self._post(environ, token)
                        token = reply.token or token
                    else:
                        reply = self._get(token)
                    if reply.outcome == "invalid":
                        self.limiter.failed(client)
        except BadRequest as exc:
            reply = Reply(exc.status, _page("Bad request", f"<h1>{html.escape(exc.message)}</h1>"), "bad-request")
        except Exception:  # never a traceback to the client; the log keeps it
            log.exception("error while handling %s %s", method, self.path)
            reply = Reply("503 Service Unavailable", _page("Try again", "<h1>Please try again in a minute</h1>"),
                          "error", (("Retry-After", "60"),))
        headers = [
            ("Content-Type", "text/html; charset=utf-8"),
            ("Content-Length", str(len(reply.body))),
            *SECURITY_HEADERS,
            *reply.extra_headers,
        ]
        start_response(reply.status, headers)
        log.info("%s %s %s %s token=%s outcome=%s", clock.now_iso(), method, path[:100], reply.status.split()[0],
                 token_ref(token), reply.outcome)
        return [] if method == "HEAD" else [reply.body]

    def _get(self, token: str | None) -> Reply:
        parsed = parse_unsubscribe_token(self.settings.secret(), token) if token else None
        if parsed is None:
            return Reply("400 Bad Request", self._invalid, "invalid")
        safe = html.escape(token or "", quote=True)
        body = _page(
            "Unsubscribe",
            "<h1>Unsubscribe</h1>"
            f"<p>Stop receiving this list from {html.escape(self.settings.project.name)}?</p>"
            f"<form method=\"post\" action=\"?t={safe}\">"
            f"<input type=\"hidden\" name=\"{ONE_CLICK[0]}\" value=\"{ONE_CLICK[1]}\">"
            f"<input type=\"hidden\" name=\"t\" value=\"{safe}\">"
            "<button type=\"submit\">Unsubscribe</button></form>",
        )
        return Reply("200 OK", body, "page")

    def _post(self, environ: dict[str, Any], token: str | None) -> Reply:
        form = read_form(environ)
        if form.get(ONE_CLICK[0], "").strip() != ONE_CLICK[1]:
            # Checked before the token, so this answer says nothing about it.
            raise BadRequest("400 Bad Request", "Expected the form field List-Unsubscribe=One-Click")
        token = token or form.get("t")
        parsed = parse_unsubscribe_token(self.settings.secret(), token) if token else None
        if parsed is None:
            return Reply("400 Bad Request", self._invalid, "invalid", token=token)
        store = self.store()
        contact = actions.contact_by_uid(store.conn, parsed.contact_uid)
        if contact is None or actions.list_name_of(store.conn, parsed.list_id) is None:
            # Erased since the message was sent: there is nothing left to
            # unsubscribe, and the suppression list already holds them.
            return Reply("200 OK", self._done, "gone", token=token)
        campaign = actions.latest_campaign(store.conn, contact.id, parsed.list_id)
        changed = actions.unsubscribe(store, self.settings, contact.id, list_id=parsed.list_id, channel="one-click",
                                      campaign_id=campaign, command="serve")
        return Reply("200 OK", self._done, "unsubscribed" if changed else "already", token=token)


def read_form(environ: dict[str, Any]) -> dict[str, str]:
    """The POST body as a flat form: urlencoded or multipart/form-data, ≤ 64 KiB."""
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        raise BadRequest("400 Bad Request", "Invalid Content-Length") from None
    if length > MAX_BODY:
        raise BadRequest("413 Content Too Large", "Request body too large")
    stream = environ.get("wsgi.input")
    body = stream.read(length) if (stream is not None and length > 0) else b""
    ctype = environ.get("CONTENT_TYPE", "") or "application/x-www-form-urlencoded"
    mime = ctype.split(";", 1)[0].strip().lower()
    if mime == "application/x-www-form-urlencoded":
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise BadRequest("400 Bad Request", "The form is not UTF-8") from None
        return {key: values[0] for key, values in parse_qs(text, keep_blank_values=True).items()}
    if mime == "multipart/form-data":
        return _multipart(ctype, body)
    raise BadRequest("415 Unsupported Media Type", "Send the form as urlencoded or multipart/form-data")


def _multipart(ctype: str, body: bytes) -> dict[str, str]:
    """Parse multipart/form-data with the stdlib MIME parser (no cgi module)."""
    from email import policy
    from email.parser import BytesParser

    if "\r" in ctype or "\n" in ctype:
        raise BadRequest("400 Bad Request", "Invalid Content-Type")
    message = BytesParser(policy=policy.HTTP).parsebytes(b"Content-Type: " + ctype.encode("latin-1") + b"\r\n\r\n" + body)
    if not message.is_multipart() or message.defects:
        raise BadRequest("400 Bad Request", "Invalid multipart form")
    form: dict[str, str] = {}
    for part in message.iter_parts():  # type: ignore[attr-defined]
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str) or part.get_filename():
            continue
        payload = part.get_payload(decode=True)
        if not isinstance(payload, bytes):
            continue
        form.setdefault(name, payload.decode(part.get_content_charset() or "utf-8", "replace"))
    return form


class _Stop(SystemExit):
    """Raised by the signal handler; waitress' loop treats SystemExit as 'shut down'."""


@dataclass(frozen=True, slots=True)
class Listening:
    host: str
    port: int


def run_server(
    settings: Settings,
    host: str,
    port: int,
    *,
    threads: int = 4,
    on_ready: Callable[[list[Listening]], None] | None = None,
) -> None:
    """Serve until SIGTERM or SIGINT, then finish requests in flight and return."""
    import waitress

    open_store(settings.project.database).close()  # create/migrate once, before threads start
    settings.secret()  # fail now (exit 4), not on the first request
    app = UnsubscribeApp(settings)
    server = waitress.create_server(
        app, host=host, port=port, threads=threads, ident="mailcli",
        max_request_body_size=MAX_BODY, channel_timeout=30, connection_limit=200,
        clear_untrusted_proxy_headers=True,
    )
    listen = getattr(server, "effective_listen", None) or [(server.effective_host, server.effective_port)]

    def stop(signum: int, frame: FrameType | None) -> None:
        raise _Stop(0)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        if on_ready:
            on_ready([Listening(str(h), int(p)) for h, p in listen])
        try:
            server.run()  # returns after _Stop: waitress drains its worker threads
        except _Stop:
            pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        try:
            server.close()
        except Exception:  # noqa: BLE001 - already closed by MultiSocketServer.run
            pass
        app.close()

