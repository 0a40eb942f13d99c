"""The unsubscribe endpoint: a plain WSGI app and the waitress server around it.

What the endpoint promises (RFC 8058; ``docs/guarantees.md#the-unsubscribe-endpoint``):

* ``POST`` with ``List-Unsubscribe=One-Click`` (urlencoded or multipart) and a
  valid token unsubscribes the contact from the token's list and answers 200 —
  no redirect, cookie, login or confirmation: one request is the whole
  opt-out. Repeating it answers the same 200; so does a token whose contact
  was erased.
* ``GET``/``HEAD`` render a page whose button POSTs; they never change
  anything, so link scanners unsubscribe no one. They read the database
  only to find the list's language when some list has its own.
* A missing, malformed or tampered token gets one uniform 400 page, whatever
  was wrong with it; the MAC is compared in constant time
  (``tokens.parse_unsubscribe_token``), so the answer tells nothing about
  which tokens exist.
* Only the path of ``[unsubscribe] url`` is served, and the sign-up and
  confirmation routes (:mod:`mailcli.consent.web`); everything else is 404.
  Every page is in the language of the project or the list.
  Bodies over 64 KiB are refused (413), clients that keep sending invalid
  tokens are slowed down with 429, and the access log carries a short
  hash of the token, never an address or a client IP. A valid
  token is never limited, and the client is the real one behind a trusted
  reverse proxy (see :mod:`mailcli.feedback.clients`).
* No opt-out is lost or refused. The token alone says who and which list
  (its MAC is checked without the database). The POST is then written to the
  database, waiting at most ``WRITE_WAIT`` seconds for another process's
  write (an import, a restore, a vacuum, a long purge); if it cannot, it is
  written to the fsynced spool beside the database
  (:mod:`mailcli.store.spool`) and only then answered 200. A background thread
  applies the spool as soon as the database is free again, and while it
  holds entries new POSTs join it directly, so they keep their order. A
  running send reads the spool too.
* A database swapped underneath (a restore that had to replace the file) is
  noticed on the next request, by the file's inode, and reopened.

Waitress dispatches only complete requests to its worker threads, so idle or
slow connections hold no thread: they cost one socket each, up to
``CONNECTION_LIMIT`` at once. A connection is closed after ``IDLE_TIMEOUT``
seconds without a byte, and (``serve_channel``) when a request has not
arrived whole ``REQUEST_DEADLINE`` seconds after its first byte, so sending a
byte now and then keeps no connection open. One client that is not a trusted
proxy holds at most ``CONNECTIONS_PER_CLIENT`` connections; a further one is
closed before a byte is read. Clients behind a proxy all come from its
address: there the proxy has to limit each client's connections.

Why waitress: it is a pure-Python, production-grade WSGI server with a
thread pool, request-size limits, slow-client handling and years of use behind
reverse proxies; it needs no C extension and no framework. The app itself is a
single small WSGI callable, so no web framework is needed either.

SQLite connections are not shared between waitress' worker threads: each
thread opens its own ``Store`` on first use, and they are all closed on
shutdown.
"""

from __future__ import annotations

import contextlib
import hashlib
import html
import logging
import os
import signal
import sqlite3
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import FrameType
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import parse_qs, urlsplit

from .. import clock, interrupts
from ..config import Settings
from ..consent import pages
from ..locales import text
from ..send.clicks import click_path
from ..store import Store, StoreError, open_store, spool
from ..store.clicks import link_url, record_click
from ..store.db import is_busy, waited_too_long
from ..tokens import ClickToken, UnsubscribeToken, parse_click_token, parse_unsubscribe_token
from . import actions
from .clients import FailureLimiter, Network, client_key, peer_key
from .forms import MAX_BODY, BadRequest, read_form

if TYPE_CHECKING:
    from ..consent.web import Answer

log = logging.getLogger("mailcli.serve")
_T = TypeVar("_T")

ONE_CLICK = ("List-Unsubscribe", "One-Click")
WRITE_WAIT = 1.0  # seconds a POST waits for the database before it is spooled
APPLY_EVERY = 1.0  # seconds between attempts to apply the spool
CONNECTION_LIMIT = 1000  # open connections at once; waitress' default is 100
IDLE_TIMEOUT = 30  # seconds an idle connection is kept open
REQUEST_DEADLINE = 30  # seconds from a request's first byte until the whole request is in
CONNECTIONS_PER_CLIENT = 50  # open connections of one client that is not a trusted proxy

StartResponse = Callable[[str, list[tuple[str, str]]], Any]


def token_ref(token: str | None) -> str:
    """A short, non-reversible reference to a token for the access log."""
    if not token:
        return "-"
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()[:12]


@dataclass(frozen=True, slots=True)
class Reply:
    status: str
    body: bytes
    outcome: str  # for the log: page, unsubscribed, already, gone, invalid, ...
    extra_headers: tuple[tuple[str, str], ...] = ()
    token: str | None = None  # the token a POST used (query or form), for the log


class UnsubscribeApp:
    """The WSGI application behind ``mailcli serve``."""

    def __init__(self, settings: Settings, *, limiter: FailureLimiter | None = None) -> None:
        self.settings = settings
        self.database = settings.project.database
        # A PostgreSQL server instead of the file: no file to watch, no spool
        # (the server makes a writer wait for rows, not for the database).
        self.url = settings.project.database_url
        self.path = urlsplit(settings.unsubscribe.url).path.rstrip("/") or "/"
        self.click_path = click_path(settings.unsubscribe.url)  # "/c/": the links of tracked clicks
        self.limiter = limiter or FailureLimiter()
        self.proxies = settings.serve.trusted_proxies
        self._local = threading.local()
        self._stores: list[Store] = []
        self._stores_lock = threading.Lock()
        # Set while opt-outs wait in the spool: new ones join them there.
        self._spooling = threading.Event()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._applier: threading.Thread | None = None
        from ..consent.mailer import ConfirmationMailer
        from ..consent.web import SignupRoutes

        self.language = settings.project.language
        self.sender = settings.sender.from_name or settings.project.name
        self.mailer = ConfirmationMailer(settings, self.store)
        self.signup = SignupRoutes(settings, self.store, self.mailer.wake)

    # -- stores ----------------------------------------------------------
    def _file_id(self) -> tuple[int, int] | None:
        if self.url is not None:
            return None
        try:
            st = os.stat(self.database)
        except OSError:
            return None
        return (st.st_dev, st.st_ino)

    def store(self) -> Store:
        """This thread's store, reopened when the database file was replaced."""
        store: Store | None = getattr(self._local, "store", None)
        current = self._file_id()
        if store is not None and getattr(self._local, "file_id", None) != current:
            log.info("%s the database file was replaced; reopening it", clock.now_iso())
            self._forget(store)
            store = None
        if store is None:
            store = open_store(self.url if self.url is not None else self.database, create=False, timeout=WRITE_WAIT)
            self._local.store = store
            self._local.file_id = current
            with self._stores_lock:
                self._stores.append(store)
        return store

    def _forget(self, store: Store) -> None:
        store.close()
        self._local.store = None
        with self._stores_lock:
            if store in self._stores:
                self._stores.remove(store)

    def _language_of(self, list_id: int) -> str:
        """The language of a list's pages (a database read only when some list has its own)."""
        if not any(entry.language for entry in self.settings.consent.lists.values()):
            return self.language
        from ..store.lists import list_name

        name = list_name(self.store().conn, list_id)
        return self.settings.language(name) if name else self.language

    def _message(self, status: str, key: str, outcome: str, *extra: tuple[str, str]) -> Reply:
        words = text(self.language, key)
        return Reply(status, pages.page(self.language, words, f"<h1>{html.escape(words)}</h1>"), outcome, extra)

    def close(self) -> None:
        self.mailer.stop()
        self._stopping.set()
        self._wake.set()
        if self._applier is not None:
            self._applier.join(timeout=10)
        with self._stores_lock:
            for store in self._stores:
                store.close()
            self._stores.clear()

    # -- the spool -------------------------------------------------------
    def start_applier(self) -> None:
        """Apply what the spool holds now and whenever it fills, in a thread."""
        if self.url is not None:
            return
        if spool.has_pending(self.database):
            self._spooling.set()
        self._applier = threading.Thread(target=self._apply_loop, name="mailcli-spool", daemon=True)
        self._applier.start()

    def _apply_loop(self) -> None:
        while not self._stopping.is_set():
            if self._spooling.is_set() or spool.has_pending(self.database):
                self._apply_spool()
            self._wake.wait(APPLY_EVERY)
            self._wake.clear()

    def _apply_spool(self) -> None:
        try:
            applied = actions.apply_spooled_optouts(self.store(), self.settings)
        except (StoreError, sqlite3.OperationalError) as exc:
            if isinstance(exc, sqlite3.OperationalError) and not is_busy(exc):
                log.exception("cannot apply the spooled opt-outs yet")
            return  # busy: try again in a moment
        except Exception:  # noqa: BLE001 - keep serving; the spool keeps the opt-outs
            log.exception("cannot apply the spooled opt-outs yet")
            return
        if applied:
            log.info("%s applied %d spooled opt-out(s)", clock.now_iso(), applied)
        if not spool.has_pending(self.database):
            self._spooling.clear()

    def _spool(self, parsed: UnsubscribeToken) -> None:
        spool.spool_optout(self.database, contact_uid=parsed.contact_uid, list_id=parsed.list_id,
                           at=clock.now_iso(), channel="one-click")
        self._spooling.set()
        self._wake.set()

    # -- WSGI ------------------------------------------------------------
    # Complexity: the request's routing (path, method, GET/POST) and the bad-token limit, in the order they apply.
    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "GET").upper()
        path = environ.get("PATH_INFO", "") or "/"
        token: str | None = None
        try:
            if path.startswith(self.click_path) and path != self.path:
                token = path[len(self.click_path):]
                reply = self._click(method, token, environ)
            elif (path.rstrip("/") or "/") != self.path and self.signup.handles(path):
                reply = self._signup(method, path, environ)
            elif (path.rstrip("/") or "/") != self.path:
                reply = self._message("404 Not Found", "page.not_found", "not-found")
            elif method not in ("GET", "HEAD", "POST"):
                reply = self._message("405 Method Not Allowed", "page.method", "method", ("Allow", "GET, HEAD, POST"))
            else:
                query = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
                token = (query.get("t") or [None])[0]
                if method == "POST":
                    reply = self._post(environ, token)
                    token = reply.token or token
                else:
                    reply = self._get(token)
            if reply.outcome == "invalid":
                # Only bad tokens count against a client, and only they
                # are ever refused for it: a valid token always works.
                client = client_key(environ, self.proxies)
                if self.limiter.blocked(client):
                    reply = self._message("429 Too Many Requests", "page.too_many", "limited", ("Retry-After", "60"))
                else:
                    self.limiter.failed(client)
        except BadRequest as exc:
            reply = Reply(exc.status, pages.page(self.language, exc.message, f"<h1>{html.escape(exc.message)}</h1>"),
                          "bad-request")
        except Exception as exc:  # never a traceback to the client
            reply = self._unavailable(exc, method, path)
        headers = [
            ("Content-Type", "text/html; charset=utf-8"),
            ("Content-Length", str(len(reply.body))),
            *pages.SECURITY_HEADERS,
            *reply.extra_headers,
        ]
        start_response(reply.status, headers)
        # A click path holds its token (which may name a person): the log shows its hash only.
        shown = self.click_path + "…" if path.startswith(self.click_path) and path != self.path else path[:100]
        log.info("%s %s %s %s token=%s outcome=%s", clock.now_iso(), method, shown, reply.status.split()[0],
                 token_ref(token), reply.outcome)
        return [] if method == "HEAD" else [reply.body]

    def _unavailable(self, exc: Exception, method: str, path: str) -> Reply:
        """503, try again. A database another process kept busy (a sign-up
        while an import writes) is expected: the access line says so
        (outcome=busy). Anything else is logged (its traceback with --debug)."""
        busy = waited_too_long(exc)
        if not busy:
            log.error("error while handling %s %s", method, path[:100], exc_info=exc)
        return self._message("503 Service Unavailable", "page.try_again", "busy" if busy else "error",
                             ("Retry-After", "60"))

    def _signup(self, method: str, path: str, environ: dict[str, Any]) -> Reply:
        answer: Answer = self.signup(method, path, environ)
        return Reply(answer.status, answer.body, "invalid" if answer.invalid_token else answer.outcome,
                     answer.headers)

    def _get(self, token: str | None) -> Reply:
        parsed = parse_unsubscribe_token(self.settings.secret(), token) if token else None
        if parsed is None:
            return Reply("400 Bad Request", pages.unsubscribe_invalid(self.language), "invalid")
        body = pages.unsubscribe_button(self._language_of(parsed.list_id), sender=self.sender, token=token or "",
                                        field=ONE_CLICK)
        return Reply("200 OK", body, "page")

    # Complexity: the form checked before the token, then one path per engine: recorded at once, or spooled when busy.
    def _post(self, environ: dict[str, Any], token: str | None) -> Reply:
        form = read_form(environ)
        if form.get(ONE_CLICK[0], "").strip() != ONE_CLICK[1]:
            # Checked before the token, so this answer says nothing about it.
            raise BadRequest("400 Bad Request", "Expected the form field List-Unsubscribe=One-Click")
        token = token or form.get("t")
        parsed = parse_unsubscribe_token(self.settings.secret(), token) if token else None
        if parsed is None:
            return Reply("400 Bad Request", pages.unsubscribe_invalid(self.language), "invalid", token=token)
        if self.url is not None:
            recorded = self._record_on_server(parsed)
            return Reply("200 OK", self._done(parsed.list_id), recorded, token=token)
        if not self._spooling.is_set():
            try:
                outcome = self._record(parsed)
            except (StoreError, sqlite3.OperationalError) as exc:
                if isinstance(exc, sqlite3.OperationalError) and not is_busy(exc):
                    raise
                outcome = None  # the database is busy: the spool takes it
            if outcome is not None:
                return Reply("200 OK", self._done(parsed.list_id), outcome, token=token)
        self._spool(parsed)
        return Reply("200 OK", self._done(parsed.list_id), "spooled", token=token)

    def _done(self, list_id: int) -> bytes:
        try:
            language = self._language_of(list_id)
        except (StoreError, sqlite3.OperationalError):  # the database is busy: the project's language
            language = self.language
        return pages.unsubscribed(language, sender=self.sender)

    def _record_on_server(self, parsed: UnsubscribeToken) -> str:
        """On PostgreSQL: record it now; a lost connection is opened again once.
        Anything else fails the request (503, try again), never a 200 for an
        opt-out that was not recorded."""
        return self._reconnecting(lambda: self._record(parsed))

    def _reconnecting(self, work: Callable[[], _T]) -> _T:
        """``work()``; where it failed because the connection to the server
        was lost, once more on a new one."""
        try:
            return work()
        except Exception:
            store = getattr(self._local, "store", None)
            if store is None or store.alive():
                raise
            log.info("%s the connection to the database was lost; opening a new one", clock.now_iso())
            self._forget(store)
            return work()

    def _click(self, method: str, token: str, environ: dict[str, Any]) -> Reply:
        """``GET /c/TOKEN``: 302 to the link the token names, counted (see
        :mod:`mailcli.send.clicks`). A bad or tampered token gets the one
        400; the destination always comes from the database, never from the
        request. HEAD redirects without counting: link scanners use it."""
        if method not in ("GET", "HEAD"):
            return self._message("405 Method Not Allowed", "page.method", "method", ("Allow", "GET, HEAD"))
        parsed = parse_click_token(self.settings.secret(), token)
        if parsed is None:
            return Reply("400 Bad Request", pages.message(self.language, text(self.language, "page.bad_link"),
                                                          text(self.language, "page.bad_link_body")), "invalid")
        url = self._reconnecting(lambda: link_url(self.store().conn, parsed.campaign_id, parsed.link_no))  # a read: never waits
        if url is None:
            return self._message("404 Not Found", "page.link_gone", "unknown-link")
        outcome = "redirect"
        if method == "GET":
            outcome = self._count_click(parsed, environ)
        return Reply("302 Found", b"", outcome, (("Location", location_header(url)),))

    def _count_click(self, parsed: ClickToken, environ: dict[str, Any]) -> str:
        """Count the click (and, with per-contact clicks on, who); a database
        busy for more than ``WRITE_WAIT`` costs the count, never the redirect."""
        per_contact = self.settings.tracking.per_contact and parsed.contact_uid is not None
        network = client_network(client_key(environ, self.proxies)) if per_contact else None
        try:
            store = self.store()
            with store.transaction() as conn:
                record_click(conn, parsed.campaign_id, parsed.link_no, clock.now_iso(),
                             contact_uid=parsed.contact_uid if per_contact else None, ip_network=network)
        except (StoreError, sqlite3.OperationalError) as exc:
            if isinstance(exc, sqlite3.OperationalError) and not is_busy(exc):
                raise
            return "click-not-counted"
        return "click"

    def _record(self, parsed: UnsubscribeToken) -> str:
        changed = actions.unsubscribe_by_token(self.store(), self.settings, parsed.contact_uid, parsed.list_id,
                                               channel="one-click", command="serve")
        if changed is None:
            # Erased since the message was sent: there is nothing left to
            # unsubscribe, and the suppression list already holds them.
            return "gone"
        return "unsubscribed" if changed else "already"


def location_header(url: str) -> str:
    """A stored link as a Location header: exactly as sent, with a non-ASCII
    host in its IDNA form and other non-ASCII characters percent-encoded (a
    header carries ASCII only)."""
    if url.isascii():
        return url
    from urllib.parse import quote

    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = parts.netloc
    if host and not host.isascii():
        try:
            netloc = netloc.replace(host, host.encode("idna").decode("ascii"))
        except UnicodeError:
            pass
    rest = url[len(f"{parts.scheme}://{parts.netloc}"):]
    return f"{parts.scheme}://{quote(netloc, safe=_ASCII)}{quote(rest, safe=_ASCII)}"


_ASCII = "".join(chr(c) for c in range(33, 127))


def client_network(key: str) -> str | None:
    """The network of a client (its /24, or /48 for IPv6) from its limiter key."""
    import ipaddress

    try:
        network = ipaddress.ip_network(key, strict=False)
    except ValueError:
        return None
    prefix = 24 if network.version == 4 else 48
    return str(network.supernet(new_prefix=prefix)) if network.prefixlen > prefix else str(network)


class LogLines(logging.Formatter):
    """serve's log: one line a record. An error that carries an exception
    shows its type and message; its traceback only with ``--debug`` (no
    command prints a traceback without it)."""

    def __init__(self, *, debug: bool = False) -> None:
        super().__init__("%(message)s")
        self.debug = debug

    def format(self, record: logging.LogRecord) -> str:
        if self.debug or not record.exc_info or record.exc_info[1] is None:
            return super().format(record)
        exc = record.exc_info[1]
        detail = " ".join(str(exc).split())
        return f"{record.getMessage()}: {type(exc).__name__}" + (f": {detail}" if detail else "")


def serve_channel(proxies: Iterable[Network]) -> type:
    """waitress' connection (``HTTPChannel``) with serve's deadline for a
    request and its cap on the connections of one client (see above)."""
    import time

    from waitress.channel import HTTPChannel
    from waitress.parser import HTTPRequestParser

    trusted = tuple(proxies)

    class Channel(HTTPChannel):
        began: float | None = None  # the first byte of the request arriving now (blank lines before it too)

        def __init__(self, server: Any, sock: Any, addr: Any, adj: Any, map: Any = None) -> None:
            super().__init__(server, sock, addr, adj, map)
            self.parsers: list[Any] = []
            peer = addr[0] if isinstance(addr, tuple) and addr else None
            self.client = peer_key(str(peer), trusted) if isinstance(peer, str) else None
            if self.client is not None:
                held = sum(1 for other in list(server.active_channels.values())
                           if getattr(other, "client", None) == self.client)
                if held > CONNECTIONS_PER_CLIENT:  # this one included
                    self.will_close = True  # waitress closes it on its next turn, before reading

        def parser_class(self, adj: Any) -> Any:  # waitress makes each request's parser with this
            parser = HTTPRequestParser(adj)
            self.parsers.append(parser)
            return parser

        def received(self, data: bytes) -> Any:
            if self.began is None and data:
                self.began = time.monotonic()
            self.parsers = [self.request] if self.request is not None else []
            result = super().received(data)
            if any(parser.completed and not parser.empty for parser in self.parsers):
                # A whole request is in (blank lines are none): the next one's time starts now, if it has begun.
                self.began = time.monotonic() if self.request is not None else None
            return result

        def readable(self) -> bool:
            if self.began is not None and not self.requests and time.monotonic() - self.began > REQUEST_DEADLINE:
                self.will_close = True
            return bool(super().readable())

    return Channel


class _Stop(SystemExit):
    """Raised by the signal handler; waitress' loop treats SystemExit as 'shut down'."""


@dataclass(frozen=True, slots=True)
class Listening:
    host: str
    port: int


def _connection_limit() -> int:
    """CONNECTION_LIMIT, within what the process may open (raising its soft limit if it can)."""
    with contextlib.suppress(ImportError, ValueError, OSError):
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        wanted = CONNECTION_LIMIT + 64  # the database, the log, the listening sockets
        if soft != resource.RLIM_INFINITY and soft < wanted:
            new = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
            resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
            soft = new
        if soft != resource.RLIM_INFINITY:
            return max(16, min(CONNECTION_LIMIT, soft - 64))
    return CONNECTION_LIMIT


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

    settings.secret()  # fail now (exit 4), not on the first request
    app = UnsubscribeApp(settings)
    # Proxy headers are read by the app (clients.client_key), which trusts a
    # list of proxies; waitress would trust one address at most. poll()
    # rather than select(), which cannot watch descriptors past 1024.
    sockets: dict[int, Any] = {}
    server = waitress.create_server(
        app, map=sockets, host=host, port=port, threads=threads, ident="mailcli",
        max_request_body_size=MAX_BODY, channel_timeout=IDLE_TIMEOUT, cleanup_interval=5,
        connection_limit=_connection_limit(), asyncore_use_poll=True, clear_untrusted_proxy_headers=False,
    )
    channel = serve_channel(settings.serve.trusted_proxies)
    for listener in list(sockets.values()):  # one for each address listened on
        if hasattr(listener, "channel_class"):
            listener.channel_class = channel
    listen = getattr(server, "effective_listen", None) or [(server.effective_host, server.effective_port)]

    def stop(signum: int, frame: FrameType | None) -> None:
        raise _Stop(0)

    previous = interrupts.install(stop, signal.SIGTERM, signal.SIGINT)
    try:
        app.start_applier()
        app.mailer.start()
        if on_ready:
            on_ready([Listening(str(h), int(p)) for h, p in listen])
        try:
            server.run()  # returns after _Stop: waitress drains its worker threads
        except _Stop:
            pass
    finally:
        interrupts.restore(previous)
        try:
            server.close()
        except Exception:  # noqa: BLE001 - already closed by MultiSocketServer.run
            pass
        app.close()

