"""One SMTP client connection: the wire protocol, and nothing about campaigns.

Why hand-written rather than smtplib or aiosmtplib: both spend several times
more CPU per message (benchmarks/README.md), and neither lets us pipeline the
next envelope behind the end-of-data dot (RFC 2920 §3.1) or hook a durable
"sending" mark in between the DATA reply and the final dot. This module is
small on purpose: ``replies.ReplyReader`` splits the byte stream into
replies, and ``SmtpConnection`` does greeting, EHLO, STARTTLS (EHLO again
after it, and nothing pipelined before the handshake), implicit TLS, AUTH
(only over TLS) and exposes ``write`` / ``read_replies`` for the
transactions in ``session.py``. ``mailcli doctor --smtp`` uses the same
connection, step by step.

Security rules kept here (docs/guarantees.md#tls, docs/guarantees.md#secrets):

* TLS always uses ``ssl.create_default_context()`` (certificate and hostname
  verified) plus an optional ``ca_file``, minimum TLS 1.2.
* Credentials are sent only over TLS, never in clear text (not even to a
  loopback relay with ``security = "none"``); they are never logged: the protocol log records
  command verbs and reply codes only. A server that does not offer STARTTLS
  when it was asked for is an error, never a silent fall-back to plain text.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import logging
import os
import socket
import ssl
from dataclasses import dataclass
from typing import Any

from mailcli.net import is_localhost_name, is_loopback
from mailcli.send.replies import (
    AuthRefused,
    ConnectionDropped,
    NoAuthMechanism,
    PartialReplies,
    Reply,
    ReplyReader,
    SmtpConnectFailed,
    SmtpFatal,
    SmtpProtocolError,
    refuses_connections,
)

log = logging.getLogger("mailcli.smtp")



@dataclass(frozen=True, slots=True)
class ConnectParams:
    """What a connection needs; the password is excluded from repr, so no log or traceback shows it."""

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
        self._proto: ReplyReader | None = None
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

    # Complexity: one branch per way a connection can fail (refused, timeout, TLS), each with its message.
    async def connect(self) -> None:
        """The TCP connection (and the TLS handshake, for implicit TLS)."""
        p = self.params
        loop = asyncio.get_running_loop()
        implicit = p.security == "tls"
        try:
            _, proto = await asyncio.wait_for(
                loop.create_connection(
                    ReplyReader,
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
        """AUTH when a username is set (only over TLS)."""
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

    # Complexity: the STARTTLS steps of RFC 3207 in order, each failure with its message.
    async def _starttls(self) -> None:
        p = self.params
        if "STARTTLS" not in self.extensions:
            # Never fall back to plain text silently.
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
        # Capabilities learnt before TLS are discarded and asked again.
        self.extensions = {}
        await self._ehlo()

    # Complexity: one branch per AUTH mechanism and reply (RFC 4954), in protocol order.
    async def _auth(self) -> None:
        p = self.params
        if not p.username:
            return
        if not self.encrypted:  # the configuration refuses a username with security = "none" already
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

    @property
    def unsolicited(self) -> bool:
        """Bytes from the server waiting to be read while no reply is due."""
        proto = self._proto
        return proto is not None and bool(proto.replies or proto._buf or proto._lines)

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
