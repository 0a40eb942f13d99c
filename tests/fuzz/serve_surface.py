"""Fuzzing ``mailcli serve``: raw HTTP requests to the real server over loopback.

Requests with random methods, paths (dot segments, encoded slashes, absolute
form, kilobytes long), query strings (valid, tampered, repeated and
malformed tokens), HTTP versions, headers (content types and lengths right,
missing, negative, huge, doubled; chunked bodies; forwarded-for headers;
giant and control-character headers) and bodies (the one-click form, as
urlencoded or multipart, and variants of it; random and non-UTF-8 bytes;
bodies over the limit; multipart bodies only a parser can tell from a form:
charsets unknown or of no text, nested parts, comments nested thousands
deep, hundreds of parts) — some of them then mutated byte by byte. Each comes
from its own 127.x.y.z address, so that the failure limiter (a real feature,
tested elsewhere) does not answer everything with 429.

Besides the shared bounds, checked on the server process: every request
with complete framing gets an HTTP answer with a status the endpoint gives
(never a 5xx: those mean an unexpected error), the server keeps running
and logs no traceback, and the database changes only for a one-click POST
with a valid token — which unsubscribes exactly that membership.
"""

from __future__ import annotations

import re
import socket
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.fuzz.engine import Draw, Invariants, Violation, chance, choice, dump, mutate

PEOPLE = ["ann@example.org", "bob@example.org", "cy@example.org", "dee@example.org", "eve@example.org"]
METHODS = ["GET", "POST", "HEAD", "POST", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "TRACE", "post", "G ET",
           "POST\x00", "X" * 300, ""]
ANSWERS = {200, 400, 404, 405, 411, 413, 414, 415, 417, 429, 431, 501, 505}
FORM = "List-Unsubscribe=One-Click"


@dataclass
class Request:
    data: bytes
    framed: bool  # complete HTTP framing: an answer is due
    unsubscribes: tuple[str, str] | None  # (email, list) a valid one-click POST unsubscribes
    description: str = ""
    maybe: bool = False  # valid but for an odd HTTP version, which the server may or may not take
    plain: bytes = b""  # the request line and the body before chunked encoding: where a token is


class ServeSurface:
    name = "serve"

    def __init__(self, workdir: Path, invariants: Invariants | None = None, *, in_process: bool = False) -> None:
        from tests.feedback.test_feedback_support import seed
        from tests.serve.test_serve import Server

        self.workdir = workdir
        self.invariants = invariants or Invariants(seconds=20, megabytes=400)
        self.project = workdir / "project"
        self.invariants.run(["init", str(self.project)], workdir, {0})
        self.seeded = seed(self.project, PEOPLE, lists=("news", "events"))
        self.database = self.project / "mailcli.db"
        self.server: Any = ThreadServer(self.project) if in_process else Server(self.project)
        self.port = int(self.server.base.rsplit(":", 1)[1])
        self.path = re.sub(r"^http://[^/]+", "", self.server.url)
        self.log_seen = 0
        self.address = 0
        self.stats = {"requests": 0, "answered": 0, "unsubscribed": 0, "statuses": {}}

    def summary(self) -> str:
        statuses = " ".join(f"{k}:{v}" for k, v in sorted(self.stats["statuses"].items()))
        return f"requests {self.stats['requests']}, answered {self.stats['answered']}, one-click unsubscribes" \
               f" {self.stats['unsubscribed']}, statuses {statuses}"

    def close(self) -> None:
        self.server.stop()
        self.seeded.store.close()

    # ------------------------------------------------------------ generate

    def generate(self, draw: Draw) -> Request:
        email, list_name = choice(draw, PEOPLE), choice(draw, ["news", "events"])
        token = self.seeded.token(email, list_name)
        method = choice(draw, METHODS) if chance(draw, 25) else choice(draw, ["GET", "POST", "POST", "HEAD"])
        path = self.path
        if chance(draw, 25):
            path = choice(draw, [self.path + "/", "/" + self.path, self.path.upper(), self.path + "%2F",
                                 self.path + "/../" + self.path.strip("/"), "/", "/x", "*",
                                 "http://news.example.org" + self.path, self.path + ";a=b", "/" + "a" * 9000,
                                 self.path + "%00", self.path + "/é"])
        query_token = token
        if chance(draw, 30):
            query_token = choice(draw, ["", token[:-1] + ("A" if token[-1] != "A" else "B"), token + "x",
                                        "%ZZ", "x" * 20000, draw.text(20), token.lower(), token + "&t=" + token])
        query = ""
        in_body = chance(draw, 10)
        if not in_body:
            query = choice(draw, [f"?t={query_token}", f"?t={query_token}", f"?T={query_token}", "", "?",
                                  f"?t={query_token}#frag", f"?a=1&t={query_token}"]) if chance(draw, 20) \
                else f"?t={query_token}"
        version = choice(draw, ["HTTP/1.0", "HTTP/2.0", "HTTP/9.9", "HTTP/1.1x", ""]) if chance(draw, 8) \
            else "HTTP/1.1"
        body, ctype = self._body(draw, token if in_body else None)
        is_form = body_is_form(ctype, body) and len(body) <= 64 * 1024  # a longer body is refused (413)
        headers = [("Host", "127.0.0.1")] if chance(draw, 95) else []
        if ctype is not None:
            headers.append(("Content-Type", ctype))
        plain = f"{path}{query}".encode("utf-8", "surrogatepass") + body
        chunked = chance(draw, 8)
        length_ok = True  # the framing is complete (a missing length: a request without a body)
        delimited = chunked  # the body is delimited, so the server reads it
        if chunked:
            headers.append(("Transfer-Encoding", "chunked"))
            body = b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for piece in _pieces(draw, body)) + b"0\r\n\r\n"
        elif chance(draw, 90):
            headers.append(("Content-Length", str(len(body))))
            delimited = True
        elif chance(draw, 50):
            value = choice(draw, ["-1", "abc", str(10**12), "0", str(len(body) + 5), f"{len(body)}, {len(body)}",
                                  " " + str(len(body))])
            headers.append(("Content-Length", value))
            length_ok = value in ("0",) and not body
            if value.strip() == str(len(body)):
                length_ok = delimited = True
        for _ in range(draw.integer(0, 3) if chance(draw, 30) else 0):
            headers.append(choice(draw, [("X-Forwarded-For", choice(draw, ["203.0.113.7", "::1", "garbage", ""])),
                                         ("Forwarded", "for=192.0.2.1;proto=https"), ("Cookie", "a=b"),
                                         ("X-Giant", "g" * draw.integer(100, 70_000)),
                                         ("Expect", "100-continue"), ("Connection", "keep-alive"),
                                         (draw.text(8) or "X", draw.text(30))]))
        headers.append(("Connection", "close"))
        start = f"{method} {path}{query} {version}".rstrip()
        head = start + "\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers) + "\r\n"
        data = head.encode("utf-8", "surrogatepass") + body
        mutated = chance(draw, 15)
        if mutated:
            data = mutate(draw, data, times=5)
        # Header names are tokens and values have no control characters (else: 400, rightly).
        sane_head = all(re.fullmatch(r"[A-Za-z0-9-]+", k) and not re.search(r"[\x00-\x08\x0a-\x1f\x7f]", v)
                        for k, v in headers)
        framed = not mutated and (chunked or length_ok) and version.startswith("HTTP/") and sane_head
        if any(k == "Expect" for k, _ in headers) and (not delimited or not body):
            # waitress answers 100 Continue and then waits for a body that never comes
            # (none, or one of length 0), until its 30 s channel timeout
            framed = False
        # Spellings of the path that the server may take as it (it serves "/unsubscribe/" too).
        near = {self.path + "/", "http://news.example.org" + self.path, self.path + "%2F", "/" + self.path}
        # The token the server goes by: the query's first t, else the form's.
        from urllib.parse import parse_qs

        query_t = (parse_qs(query[1:].split("#")[0], keep_blank_values=True).get("t") or [""])[0] \
            if query.startswith("?") else ""
        effective = query_t or _form_field(ctype, body if is_form else b"", "t")
        complete = not mutated and (chunked or length_ok) and sane_head and delimited
        valid = (method == "POST" and (path == self.path or path in near) and complete
                 and effective == token and is_form)
        return Request(data, framed, (email, list_name) if valid else None,
                       f"{method} {path[:40]}{query[:40]} {version} ({len(data)} bytes)",
                       maybe=version != "HTTP/1.1" or path != self.path, plain=plain)

    def _body(self, draw: Draw, token: str | None) -> tuple[bytes, str | None]:
        extra = f"&t={token}" if token else ""
        roll = draw.integer(1, 100)
        if roll <= 55:
            return (FORM + extra).encode(), "application/x-www-form-urlencoded"
        if roll <= 62:
            return _odd_multipart(draw, token)
        if roll <= 70:
            boundary = "----fuzz"
            fields = [("List-Unsubscribe", "One-Click")] + ([("t", token)] if token else [])
            body = "".join(f"--{boundary}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n"
                           for k, v in fields) + f"--{boundary}--\r\n"
            return body.encode(), f"multipart/form-data; boundary={boundary}"
        if roll <= 85:
            variant = choice(draw, ["list-unsubscribe=one-click", "List-Unsubscribe=One-Click&List-Unsubscribe=No",
                                    "List-Unsubscribe=%4Fne-Click", "List-Unsubscribe = One-Click",
                                    "List-Unsubscribe=One-Click\x00", "", "=", "&&&", "List-Unsubscribe"])
            return variant.encode(), choice(draw, ["application/x-www-form-urlencoded", "text/plain", "",
                                                   "application/x-www-form-urlencoded; charset=latin-1",
                                                   "multipart/form-data", "multipart/form-data; boundary=",
                                                   "garbage/\x01", None])
        if roll <= 95:
            return draw.bytes(300), choice(draw, ["application/x-www-form-urlencoded", "multipart/form-data; "
                                                  "boundary=x", "application/json", None])
        return b"List-Unsubscribe=One-Click&pad=" + b"p" * draw.integer(60_000, 200_000), \
            "application/x-www-form-urlencoded"

    # ------------------------------------------------------------ check

    def check(self, request: Request) -> None:
        self.stats["requests"] += 1
        before = dump(self.database)
        self.address = self.address % 250_000 + 1
        source = f"127.{(self.address >> 16) % 256}.{(self.address >> 8) % 256}.{self.address % 256 or 1}"
        began = time.monotonic()
        answer = _exchange(source, self.port, request.data, timeout=self.invariants.seconds)
        seconds = time.monotonic() - began
        self.invariants.bounds(seconds, request.description)
        self._server_bounds(request)
        status = _status(answer)
        if status is not None:
            self.stats["answered"] += 1
            self.stats["statuses"][status] = self.stats["statuses"].get(status, 0) + 1
        if request.framed and status is None:
            raise Violation(f"{request.description}: no HTTP answer ({answer[:200]!r})")
        if status is not None and status not in ANSWERS:
            raise Violation(f"{request.description}: answered {status}: {answer[:600]!r}")
        after = dump(self.database)
        if after != before:
            # Only a one-click POST with a valid token changes anything: one
            # membership, the one its token names (also when the request was
            # mutated into another valid one), answered 200.
            changed = [(email, name) for email in PEOPLE for name in ("news", "events")
                       if self.seeded.membership(email, name)[0] == "unsubscribed"]
            if status != 200 or len(changed) != 1 or \
                    self.seeded.token(*changed[0]).encode() not in request.data + request.plain:
                raise Violation(f"{request.description}: the database changed ({status}; unsubscribed {changed})")
            self.stats["unsubscribed"] += 1
            self._resubscribe(*changed[0])
            return
        if request.unsubscribes is not None and not request.maybe:
            email, list_name = request.unsubscribes
            raise Violation(f"{request.description}: a valid one-click POST answered {status} and"
                            f" left {email} on {list_name}: {answer[:300]!r}")

    def _server_bounds(self, request: Request) -> None:
        if self.server.proc.poll() is not None:
            raise Violation(f"{request.description}: the server stopped (exit {self.server.proc.returncode})")
        log = self.server.log[self.log_seen:]
        self.log_seen = len(self.server.log)
        for line in log:
            if "Traceback" in line or "error while handling" in line or "Exception" in line:
                raise Violation(f"{request.description}: the server logged {''.join(log)[-2000:]}")
        rss = _rss_mib(self.server.proc.pid)
        if rss > self.invariants.megabytes:
            raise Violation(f"{request.description}: the server uses {rss:.0f} MiB")

    def _resubscribe(self, email: str, list_name: str) -> None:
        """Put the database back as it was, so the next valid POST changes it again."""
        conn = sqlite3.connect(self.database, timeout=30)
        try:
            conn.execute("UPDATE memberships SET status = 'subscribed', unsubscribed_at = NULL,"
                         " unsubscribe_channel = NULL WHERE contact_id = ? AND list_id = ?",
                         (self.seeded.contacts[email], self.seeded.list_ids[list_name]))
            conn.execute("DELETE FROM suppressions")
            conn.commit()
        finally:
            conn.close()


def _form_field(ctype: str | None, body: bytes, name: str) -> str:
    """A field of a form body as the endpoint reads it (our multipart: by its fields)."""
    from urllib.parse import parse_qs

    if ctype and ctype.startswith("multipart/form-data; boundary=----fuzz"):
        match = re.search(rb'name="' + name.encode() + rb'"\r\n\r\n([^\r]*)\r\n', body)
        return match.group(1).decode() if match else ""
    try:
        return (parse_qs(body.decode("utf-8"), keep_blank_values=True).get(name) or [""])[0]
    except UnicodeDecodeError:
        return ""


class ThreadServer:
    """``mailcli serve``'s own server (``run_server``) in a thread of this
    process, so that a coverage-guided fuzzer sees the code that handles the
    requests; the same interface as ``tests.serve.test_serve.Server``."""

    def __init__(self, root: Path) -> None:
        import logging
        import threading
        import types

        from mailcli.config import load_settings
        from mailcli.feedback import web

        settings = load_settings(root / "mailcli.toml")
        self.log: list[str] = []
        lines = self.log

        class Collect(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                lines.append(self.format(record) + "\n")

        for name in ("mailcli.serve", "waitress"):
            logger = logging.getLogger(name)
            logger.addHandler(Collect())
            logger.setLevel(logging.INFO)
            logger.propagate = False
        ready = threading.Event()
        listening: list[Any] = []
        # run_server installs SIGTERM/SIGINT handlers, which only the main
        # thread may; this server ends with the process.
        real = web.signal
        web.signal = types.SimpleNamespace(signal=lambda *args: None, SIGTERM=real.SIGTERM, SIGINT=real.SIGINT)
        self.thread = threading.Thread(target=web.run_server, args=(settings, "127.0.0.1", 0),
                                       kwargs={"on_ready": lambda items: (listening.extend(items), ready.set())},
                                       daemon=True)
        try:
            self.thread.start()
            if not ready.wait(60):
                raise RuntimeError("the server did not start")
        finally:
            web.signal = real
        self.base = f"http://127.0.0.1:{listening[0].port}"
        self.url = self.base + (re.sub(r"^https?://[^/]+", "", settings.unsubscribe.url) or "/")
        self.proc = self

    @property
    def pid(self) -> int:
        import os

        return os.getpid()

    @property
    def returncode(self) -> int | None:
        return None if self.thread.is_alive() else 1

    def poll(self) -> int | None:
        return self.returncode

    def stop(self) -> int:
        return 0


def body_is_form(ctype: str | None, body: bytes) -> bool:
    """Whether the body is the one-click form (RFC 8058): urlencoded (the
    default without a content type) or our own well-formed multipart."""
    from urllib.parse import parse_qs

    mime = (ctype or "application/x-www-form-urlencoded").split(";")[0].strip().lower()
    if mime == "application/x-www-form-urlencoded":
        try:
            form = parse_qs(body.decode("utf-8"), keep_blank_values=True)
        except UnicodeDecodeError:
            return False
        return (form.get("List-Unsubscribe") or [""])[0].strip() == "One-Click"
    return bool(ctype and ctype.startswith("multipart/form-data; boundary=----fuzz"))


ODD_CHARSETS = ["x-bogus", "base64", "rot13", "idna", "punycode", "undefined", "utf-8\x00", "x" * 300, "utf-8",
                "iso-8859-1", "utf-16"]


def _odd_multipart(draw: Draw, token: str | None) -> tuple[bytes, str]:
    """multipart/form-data that only a parser can tell from a form: charsets
    unknown, of no text or that refuse replacement characters, names encoded
    in them, parts without a name, nested parts and messages (up to
    thousands deep), comments nested thousands deep, transfer encodings,
    more parts than a form has. Its boundary is not the one ``body_is_form``
    knows: whether it unsubscribes is for the server to say (a 200 that
    changes the token's membership, or a 4xx that changes nothing)."""
    fields = [("List-Unsubscribe", "One-Click")] + ([("t", token)] if token else [])
    parts = []
    for name, value in fields:
        headers = [f'Content-Disposition: form-data; name="{name}"']
        kind = draw.integer(0, 8)
        if kind == 1:
            headers.append(f"Content-Type: text/plain; charset={choice(draw, ODD_CHARSETS)}")
        elif kind == 2:
            headers = [f"Content-Disposition: form-data; name*={choice(draw, ODD_CHARSETS)}''{name}",
                       f"Content-Type: text/plain; charset*={choice(draw, ODD_CHARSETS)}''x"]
        elif kind == 3:
            headers = ["Content-Disposition: form-data"]
        elif kind == 4:
            headers.append("Content-Type: multipart/mixed; boundary=inner")
            value = f"--inner\r\nContent-Type: text/plain\r\n\r\n{value}\r\n--inner--"
        elif kind == 5:
            headers.append("Content-Type: message/rfc822")
            value = "Content-Type: message/rfc822\r\n\r\n" * draw.integer(1, 1800) + value
        elif kind == 6:
            headers.append("Content-Type: text/plain; x=" + "(" * draw.integer(1, 5000))
        elif kind == 7:
            headers.append("Content-Transfer-Encoding: " + choice(draw, ["base64", "quoted-printable", "x-uuencode",
                                                                          "bogus"]))
        parts.append("\r\n".join(headers) + "\r\n\r\n" + value)
    if chance(draw, 15):
        parts += ['Content-Disposition: form-data; name="pad"\r\n\r\n'] * draw.integer(90, 1300)
    body = "".join(f"--odd\r\n{part}\r\n" for part in parts) + ("--odd--\r\n" if chance(draw, 90) else "")
    ctype = "multipart/form-data; boundary=odd" + (" (" + "(" * draw.integer(1, 5000) if chance(draw, 5) else "")
    return body.encode("utf-8", "surrogateescape"), ctype


def _pieces(draw: Draw, body: bytes) -> list[bytes]:
    pieces, at = [], 0
    while at < len(body):
        size = draw.integer(1, max(1, len(body) - at))
        pieces.append(body[at:at + size])
        at += size
    return pieces


def _exchange(source: str, port: int, data: bytes, *, timeout: float) -> bytes:
    """Send a request from ``source`` and read the answer until the server closes."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((source, 0))
        sock.settimeout(timeout)
        sock.connect(("127.0.0.1", port))
        try:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the server answered (and closed) before the whole request was sent
        chunks = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except (ConnectionResetError, TimeoutError):
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)


def _status(answer: bytes) -> int | None:
    """The final status of an answer (after any interim 100 Continue)."""
    while (match := re.match(rb"HTTP/1\.[01] (\d{3}) [^\r\n]*\r\n", answer)) is not None:
        status = int(match.group(1))
        if status >= 200:
            return status
        answer = answer[answer.find(b"\r\n\r\n") + 4:] if b"\r\n\r\n" in answer else b""
    return None


def _rss_mib(pid: int) -> float:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    match = re.search(r"VmRSS:\s+(\d+) kB", status)
    return int(match.group(1)) / 1024 if match else 0.0
