"""One SMTP client connection: the wire protocol, and nothing about campaigns.

Why hand-written rather than smtplib or aiosmtplib: both spend 500–650 µs of CPU
per message (measured), which caps a two-core machine below 2,000 msg/s before
rendering takes its share, and neither lets us pipeline the next envelope behind
the end-of-data dot (RFC 2920 §3.1) or hook a durable "sending" mark in between
the DATA reply and the final dot. This module is small on purpose: a
``asyncio.Protocol`` that splits the byte stream into replies, and a
``SmtpConnection`` that does greeting, EHLO, STARTTLS (F25: re-EHLO, nothing
pipelined before the handshake), implicit TLS, AUTH (only over TLS, F23) and
exposes ``write`` / ``read_replies`` for the transaction logic in
``transport.py``.

Security rules kept here:

* TLS always uses ``ssl.create_default_context()`` (certificate and hostname
  verified, F22) plus an optional ``ca_file``, minimum TLS 1.2 (F24).
* Credentials are sent only over TLS, or in clear to a loopback address when
  ``security = "none"`` (F21, F23); they are never logged (F19): the protocol
  log records command verbs and reply codes only.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import logging
import os
import re
import socket
import ssl
from collections import deque
from dataclasses import dataclass
from typing import Any

from mailcli.net import is_localhost_name, is_loopback

log = logging.getLogger("mailcli.smtp")

_ENHANCED = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})(?:\s+|$)")
# A reply line longer than this is a broken or hostile server, not SMTP
# (RFC 5321 §4.5.3.1.5 allows 512 octets; multiline replies repeat that).
_MAX_REPLY = 64 * 1024


@dataclass(frozen=True, slots=True)
class Reply:
    """A complete (possibly multiline) server reply."""

    code: int
    text: str  # lines joined with "\n", enhanced status code removed
    enhanced: str | None = None  # "5.1.1" when the server sent one (RFC 2034)

    @property
    def positive(self) -> bool:
        return 200 <= self.code < 400

    @property
    def transient(self) -> bool:
        return 400 <= self.code < 500

    @property
    def permanent(self) -> bool:
        return self.code >= 500

    def __str__(self) -> str:
        first = self.text.split("\n", 1)[0]
        parts = [str(self.code)]
        if self.enhanced:
            parts.append(self.enhanced)
        if first:
            parts.append(first)
        return " ".join(parts)[:500]


class SmtpProtocolError(Exception):
    """The connection is unusable: dropped, timed out or spoke garbage."""


class ConnectionDropped(SmtpProtocolError):
    """The server closed the connection (or it reset) before replying."""


class ReplyTimeout(SmtpProtocolError):
    """No reply within the configured timeout."""


class SmtpConnectFailed(SmtpProtocolError):
    """Connecting or setting up the session failed; worth another try later.

    ``reply`` is the server's answer when it gave one (a 421 at the
    greeting, a 454 to AUTH ...), so the caller can tell "too many
    connections" from "down".
    """

    def __init__(self, message: str, reply: Reply | None = None) -> None:
        super().__init__(message)
        self.reply = reply


class SmtpFatal(Exception):
    """A failure that retrying cannot fix: TLS verification, AUTH refused,
    STARTTLS missing, a permanent refusal at the greeting. The transport
    stops the run with exit 5 unless other connections work."""

    def __init__(self, message: str, reply: Reply | None = None) -> None:
        super().__init__(message)
        self.reply = reply


class AuthRefused(SmtpFatal):
    """The server refused the credentials (535 and friends)."""


class NoAuthMechanism(SmtpFatal):
    """The server offers no AUTH mechanism mailcli speaks (PLAIN, LOGIN)."""


@functools.lru_cache(maxsize=256)
def _one_line_reply(line: bytes) -> Reply:
    return _parse_reply([line])


def parse_reply(lines: list[bytes]) -> Reply:
    """Build a Reply from its raw lines (CRLF already removed).

    A server answers most commands with the same few one-line replies
    ("250 2.1.0 Ok"); those are parsed once (Reply is immutable).
    """
    if len(lines) == 1 and len(lines[0]) < 100:
        return _one_line_reply(lines[0])
    return _parse_reply(lines)


def _parse_reply(lines: list[bytes]) -> Reply:
    code = int(lines[0][:3])
    texts: list[str] = []
    enhanced: str | None = None
    for raw in lines:
        text = raw[4:].decode("utf-8", "replace")
        m = _ENHANCED.match(text)
        if m and m.group(1) == str(code)[0]:
            enhanced = enhanced or f"{m.group(1)}.{m.group(2)}.{m.group(3)}"
            text = text[m.end() :]
        texts.append(text)
    return Reply(code=code, text="\n".join(texts).strip(), enhanced=enhanced)


class _ReplyReader(asyncio.Protocol):
    """Splits incoming bytes into replies and hands them to waiters in order.

    Pipelining means several replies may arrive in one segment, or one reply
    over several; a FIFO of parsed replies plus one waiter keeps that simple
    and cheap (no per-line future).
    """

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._lines: list[bytes] = []
        self.replies: deque[Reply] = deque()
        self._waiter: asyncio.Future[Any] | None = None
        self._want = 0
        self.closed: BaseException | None = None
        self._can_write: asyncio.Event = asyncio.Event()
        self._can_write.set()

    # -- asyncio callbacks -------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        start = 0
        while True:
            end = buf.find(b"\n", start)
            if end < 0:
                break
            line = bytes(buf[start:end]).rstrip(b"\r")
            start = end + 1
            if len(line) < 3 or not line[:3].isdigit():
                self._fail(SmtpProtocolError(f"unexpected server line {line[:40]!r}"))
                return
            self._lines.append(line)
            if len(line) == 3 or line[3:4] != b"-":
                self.replies.append(parse_reply(self._lines))
                self._lines = []
        if start:
            del buf[:start]
        if len(buf) > _MAX_REPLY:
            self._fail(SmtpProtocolError("server reply too long"))
            return
        self._wake()

    def eof_received(self) -> bool | None:
        self._fail(ConnectionDropped("connection closed by server"))
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(ConnectionDropped(f"connection lost: {exc}" if exc else "connection closed"))
        self._can_write.set()

    def pause_writing(self) -> None:
        self._can_write.clear()

    def resume_writing(self) -> None:
        self._can_write.set()

    # -- helpers -----------------------------------------------------------
    def _fail(self, exc: BaseException) -> None:
        if self.closed is None:
            self.closed = exc
        if self.transport is not None and not self.transport.is_closing():
            self.transport.abort()
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    def _wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done() and len(self.replies) >= self._want:
            w.set_result(None)

    async def read(self, n: int, timeout: float) -> list[Reply]:
        """Wait for the next ``n`` replies (fewer only if the link dies)."""
        if len(self.replies) < n and self.closed is None:
            # One timer on the waiter instead of asyncio.wait_for, which
            # wraps it in two more futures: this runs for every reply batch.
            loop = asyncio.get_running_loop()
            self._want = n
            waiter = self._waiter = loop.create_future()
            timer = loop.call_later(timeout, _expire, waiter)
            try:
                await waiter
            finally:
                timer.cancel()
                self._waiter = None
            if waiter.result() is _EXPIRED:
                raise ReplyTimeout(f"no reply within {timeout:g} s")
        if len(self.replies) < n:
            # Replies that did arrive before the drop still count (a 421 is
            # usually followed by the close); callers look at what is there.
            got = [self.replies.popleft() for _ in range(len(self.replies))]
            raise PartialReplies(got, self.closed or ConnectionDropped("connection closed"))
        return [self.replies.popleft() for _ in range(n)]


_EXPIRED = object()


def _expire(waiter: asyncio.Future[Any]) -> None:
    if not waiter.done():
        waiter.set_result(_EXPIRED)


class PartialReplies(SmtpProtocolError):
    """The connection ended after some of the expected replies arrived."""

    def __init__(self, replies: list[Reply], cause: BaseException) -> None:
        super().__init__(str(cause))
        self.replies = replies
        self.cause = cause




@dataclass(frozen=True, slots=True)
class ConnectParams:
    """What a connection needs; the password is excluded from repr (F18)."""

    host: str
    port: int
    security: str  # "starttls" | "tls" | "none"
    username: str | None
    password: str | None
    timeout: float
    ca_file: str | None
    local_hostname: str | None  # None: "localhost" to a loopback host, else the address literal

    def __repr__(self) -> str:
        return f"ConnectParams(host={self.host!r}, port={self.port}, security={self.security!r})"

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}"


class SmtpConnection:
    """One authenticated SMTP session, ready for mail transactions.

    Setting up is three named steps, which ``open`` runs in order and
    ``doctor --smtp`` runs one by one to say which of them failed:
    ``connect`` (TCP, and the handshake of implicit TLS), ``handshake``
    (greeting, EHLO, STARTTLS and EHLO again) and ``authenticate``.
    """

    def __init__(self, params: ConnectParams, tls: ssl.SSLContext | None) -> None:
        self.params = params
        self._tls = tls
        self._proto: _ReplyReader | None = None
        self.extensions: dict[str, str] = {}
        self.encrypted = False
        self.greeting: Reply | None = None
        self.ehlo_name = ""
        # A transaction was left open by a refused RCPT/DATA: the next one
        # starts with RSET (sent pipelined with the envelope).
        self.need_rset = False
        self.delivered = 0  # messages this session's server accepted

    # -- lifecycle -----------------------------------------------------------
    async def open(self) -> None:
        """Connect, greet, EHLO, STARTTLS/TLS, EHLO again, AUTH."""
        await self.connect()
        await self.handshake()
        await self.authenticate()

    async def connect(self) -> None:
        """The TCP connection (and the TLS handshake, for implicit TLS)."""
        p = self.params
        loop = asyncio.get_running_loop()
        implicit = p.security == "tls"
        try:
            _, proto = await asyncio.wait_for(
                loop.create_connection(
                    _ReplyReader,
                    p.host,
                    p.port,
                    ssl=self._tls if implicit else None,
                    server_hostname=p.host if implicit else None,
                ),
                p.timeout,
            )
        except ssl.SSLCertVerificationError as exc:
            raise SmtpFatal(f"TLS certificate of {p.where} not trusted: {exc.verify_message}") from None
        except ssl.SSLError as exc:
            raise SmtpFatal(f"TLS handshake with {p.where} failed: {exc.reason or exc}") from None
        except asyncio.TimeoutError:
            raise SmtpConnectFailed(f"cannot connect to {p.where}: timed out after {p.timeout:g} s") from None
        except socket.gaierror as exc:
            if exc.errno in (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", socket.EAI_NONAME)):
                # A name that does not exist does not come back by waiting.
                raise SmtpFatal(f"cannot connect to {p.where}: no such host ({exc.strerror})") from None
            raise SmtpConnectFailed(f"cannot connect to {p.where}: {exc.strerror or exc}") from None
        except OSError as exc:
            # asyncio says "Connect call failed ('127.0.0.1', 25)"; the errno says why.
            reason = os.strerror(exc.errno) if exc.errno else (exc.strerror or str(exc))
            raise SmtpConnectFailed(f"cannot connect to {p.where}: {reason}") from None
        self._proto = proto
        self.encrypted = implicit

    async def handshake(self) -> None:
        """Greeting, EHLO, and with ``starttls`` the upgrade and EHLO again."""
        async def steps() -> None:
            await self._greeting()
            await self._ehlo()
            if self.params.security == "starttls":
                await self._starttls()

        await self._guarded(steps())

    async def authenticate(self) -> None:
        """AUTH when a username is set (only over TLS, or in clear to loopback)."""
        await self._guarded(self._auth())

    async def _guarded(self, step: Any) -> None:
        """Run a setup step; on failure close the connection and say why."""
        p = self.params
        try:
            await step
        except PartialReplies as exc:
            self.abort()
            refusal = next((r for r in exc.replies if not r.positive), None)
            raise SmtpConnectFailed(
                f"{p.where} closed the connection during setup: {refusal or exc.cause}", refusal) from None
        except SmtpConnectFailed:
            self.abort()
            raise
        except SmtpProtocolError as exc:
            self.abort()
            raise SmtpConnectFailed(f"{p.where}: {exc}") from None
        except SmtpFatal:
            self.abort()
            raise

    async def _greeting(self) -> None:
        p = self.params
        assert self._proto is not None
        greeting = (await self._proto.read(1, p.timeout))[0]
        self.greeting = greeting
        if greeting.code == 220:
            return
        if greeting.permanent and not refuses_connections(greeting):
            raise SmtpFatal(f"{p.where} refused the session: {greeting}", greeting)
        raise SmtpConnectFailed(f"{p.where} refused the session: {greeting}", greeting)

    async def _ehlo(self) -> None:
        self.ehlo_name = ehlo_name(self.params, self.local_address())
        name = self.ehlo_name.encode("ascii")
        reply = await self.command(b"EHLO " + name)
        if reply.code == 421 or refuses_connections(reply):
            raise SmtpConnectFailed(f"{self.params.where} is not accepting mail now: {reply}", reply)
        if reply.code != 250:
            # A server without ESMTP: fall back to HELO (no extensions, no pipelining).
            reply = await self.command(b"HELO " + name)
            if reply.code != 250:
                raise SmtpConnectFailed(f"{self.params.where} refused HELO: {reply}", reply)
            self.extensions = {}
            return
        ext: dict[str, str] = {}
        for line in reply.text.split("\n")[1:]:
            name_, _, value = line.strip().partition(" ")
            if name_:
                ext[name_.upper()] = value
        self.extensions = ext

    async def _starttls(self) -> None:
        p = self.params
        if "STARTTLS" not in self.extensions:
            # F21: never fall back to plaintext silently.
            raise SmtpFatal(f"{p.where} does not offer STARTTLS; refusing to send in plaintext")
        reply = await self.command(b"STARTTLS")
        if reply.transient:
            raise SmtpConnectFailed(f"{p.where} refused STARTTLS: {reply}", reply)
        if reply.code != 220:
            raise SmtpFatal(f"{p.where} refused STARTTLS: {reply}", reply)
        proto = self._proto
        assert proto is not None and proto.transport is not None and self._tls is not None
        if proto.replies or proto._buf:
            # Bytes after the 220 and before the handshake would be a plaintext
            # injection (RFC 3207 §5, CVE-2011-0411 style); refuse them.
            raise SmtpFatal(f"{p.where} sent data before the TLS handshake")
        loop = asyncio.get_running_loop()
        try:
            transport = await asyncio.wait_for(
                loop.start_tls(proto.transport, proto, self._tls, server_hostname=p.host),
                p.timeout,
            )
        except ssl.SSLCertVerificationError as exc:
            raise SmtpFatal(f"TLS certificate of {p.where} not trusted: {exc.verify_message}") from None
        except ssl.SSLError as exc:
            raise SmtpFatal(f"TLS handshake with {p.where} failed: {exc.reason or exc}") from None
        except (asyncio.TimeoutError, OSError) as exc:
            raise SmtpConnectFailed(f"TLS handshake with {p.where} failed: {exc}") from None
        if transport is None:
            raise SmtpConnectFailed(f"TLS handshake with {p.where} failed")
        proto.transport = transport  # type: ignore[assignment]
        self.encrypted = True
        # F25: capabilities learnt before TLS are discarded and asked again.
        self.extensions = {}
        await self._ehlo()

    async def _auth(self) -> None:
        p = self.params
        if not p.username:
            return
        if not self.encrypted and not (p.security == "none" and is_loopback(p.host)):
            raise SmtpFatal(f"refusing to send credentials to {p.where} without TLS")
        if p.password is None:
            raise SmtpFatal("no SMTP password set")
        mechs = self.auth_mechanisms
        if "PLAIN" in mechs:
            blob = base64.b64encode(f"\0{p.username}\0{p.password}".encode()).decode("ascii")
            reply = await self.command(f"AUTH PLAIN {blob}".encode("ascii"), secret=True)
        elif "LOGIN" in mechs:
            reply = await self.command(b"AUTH LOGIN", secret=True)
            if reply.code == 334:
                user = base64.b64encode(p.username.encode()).decode("ascii")
                reply = await self.command(user.encode("ascii"), secret=True)
            if reply.code == 334:
                pw = base64.b64encode(p.password.encode()).decode("ascii")
                reply = await self.command(pw.encode("ascii"), secret=True)
        else:
            offered = " ".join(mechs) or "none"
            raise NoAuthMechanism(f"{p.where} offers no AUTH mechanism mailcli speaks (PLAIN or LOGIN;"
                                  f" it offers {offered})")
        if reply.code == 235:
            return
        if reply.transient or refuses_connections(reply):
            # 454 "temporary authentication failure", 421 "too many sessions":
            # the credentials were not judged.
            raise SmtpConnectFailed(f"{p.where} did not take the login now: {reply}", reply)
        raise AuthRefused(f"authentication as {p.username} refused by {p.where}: {reply}", reply)

    @property
    def auth_mechanisms(self) -> list[str]:
        return self.extensions.get("AUTH", "").upper().split()

    def local_address(self) -> tuple[str, int] | None:
        proto = self._proto
        if proto is None or proto.transport is None:
            return None
        sockname = proto.transport.get_extra_info("sockname")
        return (str(sockname[0]), int(sockname[1])) if sockname else None

    def tls_info(self) -> tuple[str, str] | None:
        """(protocol version, cipher) of an encrypted session."""
        proto = self._proto
        if proto is None or proto.transport is None:
            return None
        ssl_object = proto.transport.get_extra_info("ssl_object")
        if ssl_object is None:
            return None
        cipher = ssl_object.cipher()
        return str(ssl_object.version()), str(cipher[0] if cipher else "?")

    # -- I/O -----------------------------------------------------------------
    def write(self, data: bytes) -> None:
        proto = self._proto
        if proto is None or proto.transport is None or proto.closed is not None:
            raise ConnectionDropped("connection is closed")
        proto.transport.write(data)

    async def drain(self) -> None:
        proto = self._proto
        if proto is not None and not proto._can_write.is_set():
            await proto._can_write.wait()

    async def read_replies(self, n: int, timeout: float | None = None) -> list[Reply]:
        assert self._proto is not None
        return await self._proto.read(n, self.params.timeout if timeout is None else timeout)

    async def command(self, line: bytes, *, secret: bool = False) -> Reply:
        log.debug("C: %s", "AUTH ***" if secret else line.split(b" ", 1)[0].decode("ascii", "replace"))
        self.write(line + b"\r\n")
        reply = (await self.read_replies(1))[0]
        log.debug("S: %s", reply.code)
        return reply

    @property
    def alive(self) -> bool:
        return self._proto is not None and self._proto.closed is None

    async def quit(self) -> None:
        """Say goodbye politely; never raises."""
        if not self.alive:
            return
        try:
            await asyncio.wait_for(self.command(b"QUIT"), 5)
        except Exception:  # noqa: BLE001 - closing anyway
            pass
        self.abort()

    def abort(self) -> None:
        proto = self._proto
        if proto is not None and proto.transport is not None and not proto.transport.is_closing():
            proto.transport.close()


@functools.lru_cache(maxsize=1)
def default_local_hostname() -> str | None:
    """This machine's FQDN when it has a real one, else None.

    ``socket.getfqdn()`` answers ``localhost.localdomain`` (or a bare name)
    on many hosts; a relay would see that as a bogus greeting, so such a
    name is never used (see ``ehlo_name``). Asked once: it may query DNS.
    """
    name = socket.getfqdn()
    if "." not in name or not name.isascii() or is_localhost_name(name):
        return None
    return name


def ehlo_name(params: ConnectParams, local: tuple[str, int] | None) -> str:
    """The name mailcli gives in EHLO (RFC 5321 §4.1.4).

    ``[smtp] helo_name`` when set, else this host's FQDN; without a usable
    FQDN, ``localhost`` to a loopback relay and otherwise the address literal
    of this end of the connection (``[192.0.2.10]``), never a localhost name.
    """
    if params.local_hostname:
        return params.local_hostname
    if is_loopback(params.host):
        return "localhost"
    if local is None:
        return "[127.0.0.1]"
    address = local[0].split("%", 1)[0]
    return f"[IPv6:{address}]" if ":" in address else f"[{address}]"


_CONNECTIONS = re.compile(
    r"too many (?:concurrent |simultaneous |open |smtp )?(?:connections|sessions)|connection (?:count )?limit"
    r"|too many connections from|thread limit|concurrent connections? limit|maximum (?:number of )?connections",
    re.IGNORECASE,
)


def refuses_connections(reply: Reply) -> bool:
    """A reply that says "too many connections", whatever its code."""
    return not reply.positive and bool(_CONNECTIONS.search(reply.text))
