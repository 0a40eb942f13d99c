"""A real SMTP server on 127.0.0.1 for tests, with scripted faults.

Reusable by every test that needs to see what mailcli puts on the wire. It is
aiosmtpd (a real SMTP implementation) in a background thread; the handler
records every accepted message and can be told, per recipient and per stage,
to answer something else first.

Usage::

    from tests.smtpserver import SmtpServer

    with SmtpServer() as server:                       # plain, PIPELINING on
        server.script("RCPT", "ann@example.org", ["451 4.3.0 try later"])
        server.script("DATA", "bob@example.org", ["550 5.1.1 no such user"])
        server.script("RCPT", "cy@example.org", ["421 4.7.0 closing", "DROP"])
        ... run mailcli against 127.0.0.1:server.port ...
        assert server.recipients().count("ann@example.org") == 1
        msg = server.messages[0]          # Received(mail_from, rcpt_tos, data)
        server.delay = 0.2                # slow every DATA (to interrupt a send)

Scripted replies are consumed in order, one per attempt, then the stage
behaves normally again. The special reply ``"DROP"`` closes the connection
without answering; a reply starting with ``421`` is sent and then the server
closes the connection, as a real server does (RFC 5321 §3.8).

Options: ``pipelining`` (advertise PIPELINING, default on), ``size`` (SIZE
limit), ``auth`` (a ``{user: password}`` dict: AUTH PLAIN/LOGIN required),
``tls`` = ``"starttls"`` (STARTTLS required) or ``"tls"`` (implicit TLS), using
a self-signed certificate for ``localhost``/``127.0.0.1`` from
``make_certificate()``; ``server.ca_file`` is that certificate, to trust it.

Relay limits, as real relays impose them:

* ``max_connections=N``: a session beyond N at once gets
  ``421 4.7.0 Error: too many connections from 127.0.0.1`` as its greeting
  (Postfix's ``smtpd_client_connection_count_limit``); ``refuse_all=True``
  greets every connection so;
* ``connection_rate=(N, T)``: at most N new sessions in T seconds, the same
  421 for the others (``smtpd_client_connection_rate_limit``);
* ``messages_per_session=N``: after N messages a MAIL gets
  ``421 4.7.0 Too many messages in this session, closing``;
* ``recipients_per_session=N``: after N recipients a RCPT gets
  ``452 4.5.3 Too many recipients``;
* ``message_rate=(N, T)``: more than N messages in T seconds gets
  ``450 4.7.1 Error: too much mail from 127.0.0.1`` at MAIL;
* ``daily_quota=N``: after N messages in all, MAIL gets
  ``454 4.7.0 Throttling failure: Daily message quota exceeded.`` (Amazon SES);
* ``smtputf8=False``: SMTPUTF8 is not offered;
* ``eightbitmime=False``: 8BITMIME is not offered (aiosmtpd's ``decode_data``).

``server.sessions`` counts the sessions greeted with 220, ``server.refused``
the ones refused, ``server.max_concurrent`` the most at once;
``server.wait_idle()`` waits until no session is open (after killing a client).

Timing, to show that mailcli's own limits hold: ``server.most_at_once(key)``
is the most messages in the server's hands at once (from MAIL FROM to
accepted) per key (``lambda m: m.domain``: per recipient domain),
``server.throughput()`` the messages per second it received.

Also: ``server.auth_attempts`` lists (mechanism, user, password) tuples the
server saw; ``server.wait_for(n)`` waits until n messages have arrived. Each
``Received`` carries the time its MAIL FROM arrived and the time it was
accepted (``time.time()``), and its ``message_id``.
"""

from __future__ import annotations

import asyncio
import datetime
import socket
import ssl
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes  # exactly the bytes received (dot-unstuffed), CRLF kept
    mail_options: list[str] = field(default_factory=list)  # MAIL FROM parameters (SIZE=, SMTPUTF8 ...)
    mail_at: float = 0.0  # time.time() when its MAIL FROM arrived
    accepted_at: float = 0.0  # time.time() when it was accepted (after the final dot)

    @property
    def message_id(self) -> str:
        head = self.data.split(b"\r\n\r\n", 1)[0].decode("ascii", "replace")
        for line in head.split("\r\n"):
            if line.lower().startswith("message-id:"):
                return line.split(":", 1)[1].strip()
        return ""

    @property
    def domain(self) -> str:
        """The domain of the first recipient."""
        return self.rcpt_tos[0].rpartition("@")[2].lower()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_certificate(folder: Path, name: str = "localhost") -> tuple[Path, Path]:
    """A self-signed certificate for ``name`` and 127.0.0.1: (cert, key) paths."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName(name), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    folder.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


class _Handler:
    def __init__(self, server: SmtpServer) -> None:
        self.server = server

    def _scripted(self, stage: str, address: str) -> str | None:
        with self.server._lock:
            queue = self.server._scripts.get((stage, address.lower()))
            if queue:
                return queue.pop(0)
        return None

    def _apply(self, smtp: Any, reply: str) -> str:
        if reply == "DROP":
            smtp.transport.close()
            return "421 4.4.2 (connection dropped)"  # never reaches the client
        if reply.startswith("421"):
            asyncio.get_running_loop().call_later(0.01, smtp.transport.close)
        return reply

    async def handle_EHLO(self, smtp: Any, session: Any, envelope: Any, hostname: str, responses: list[str]) -> list[str]:
        session.host_name = hostname
        with self.server._lock:
            self.server.helo_names.append(hostname)
        self.server.ehlo_count += 1
        if self.server.pipelining:
            responses.insert(-1, "250-PIPELINING")
            responses.insert(-1, "250-ENHANCEDSTATUSCODES")
        return responses

    async def handle_MAIL(self, smtp: Any, session: Any, envelope: Any, address: str, options: list[str]) -> str:
        reply = self._scripted("MAIL", "*")
        if reply:
            return self._apply(smtp, reply)
        server = self.server
        if server.daily_quota and len(server.messages) >= server.daily_quota:
            return "454 4.7.0 Throttling failure: Daily message quota exceeded."
        if server.messages_per_session and getattr(session, "accepted", 0) >= server.messages_per_session:
            return self._apply(smtp, "421 4.7.0 Too many messages in this session, closing")
        if server.message_rate:
            limit, window = server.message_rate
            now = time.monotonic()
            with server._lock:
                recent = [t for t in server._accept_times if now - t < window]
            if len(recent) >= limit:
                return "450 4.7.1 Error: too much mail from 127.0.0.1"
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        envelope.mail_at = time.time()
        return "250 2.1.0 OK"

    async def handle_RCPT(self, smtp: Any, session: Any, envelope: Any, address: str, options: list[str]) -> str:
        reply = self._scripted("RCPT", address)
        if reply:
            return self._apply(smtp, reply)
        server = self.server
        if server.recipients_per_session and getattr(session, "recipients", 0) >= server.recipients_per_session:
            return "452 4.5.3 Too many recipients"
        session.recipients = getattr(session, "recipients", 0) + 1
        envelope.rcpt_tos.append(address)
        with self.server._lock:
            self.server.rcpts_seen.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, smtp: Any, session: Any, envelope: Any) -> str:
        if self.server.delay:
            await asyncio.sleep(self.server.delay)
        for rcpt in envelope.rcpt_tos:
            reply = self._scripted("DATA", rcpt)
            if reply:
                return self._apply(smtp, reply)
        with self.server._lock:
            self.server.messages.append(
                Received(envelope.mail_from, list(envelope.rcpt_tos), bytes(envelope.original_content),
                         list(envelope.mail_options), mail_at=getattr(envelope, "mail_at", 0.0),
                         accepted_at=time.time())
            )
            self.server._accept_times.append(time.monotonic())
        session.accepted = getattr(session, "accepted", 0) + 1
        return "250 2.0.0 queued"


@dataclass
class SmtpServer:
    """aiosmtpd on 127.0.0.1 in a thread; see the module docstring."""

    pipelining: bool = True
    size: int = 0
    auth: dict[str, str] | None = None
    tls: str | None = None  # None | "starttls" | "tls"
    cert_dir: Path | None = None
    port: int = 0
    delay: float = 0.0
    messages: list[Received] = field(default_factory=list)
    auth_attempts: list[tuple[str, str, str]] = field(default_factory=list)
    rcpts_seen: list[str] = field(default_factory=list)  # every accepted RCPT TO, delivered or not
    ehlo_count: int = 0
    ca_file: Path | None = None
    smtputf8: bool = True
    eightbitmime: bool = True
    max_connections: int = 0
    refuse_all: bool = False
    connection_rate: tuple[int, float] | None = None
    messages_per_session: int = 0
    recipients_per_session: int = 0
    message_rate: tuple[int, float] | None = None
    daily_quota: int = 0
    sessions: int = 0
    refused: int = 0
    max_concurrent: int = 0
    helo_names: list[str] = field(default_factory=list)
    _current: int = 0
    _probe: bool = False
    _session_starts: list[float] = field(default_factory=list)
    _accept_times: list[float] = field(default_factory=list)
    _scripts: dict[tuple[str, str], list[str]] = field(default_factory=lambda: defaultdict(list))
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _controller: Any = None

    # -- scripting --------------------------------------------------------------
    def script(self, stage: str, address: str, replies: list[str]) -> None:
        """Answer ``replies`` (one per attempt) at MAIL/RCPT/DATA for ``address``
        (use ``"*"`` with MAIL) before behaving normally."""
        with self._lock:
            self._scripts[(stage.upper(), address.lower())].extend(replies)

    def recipients(self) -> list[str]:
        with self._lock:
            return [r for m in self.messages for r in m.rcpt_tos]

    def most_at_once(self, key: Callable[[Received], str] = lambda m: "") -> dict[str, int]:
        """The most accepted messages the server had in hand at once (from
        MAIL to the reply to the final dot), per ``key``: for example
        ``lambda m: m.domain`` for the most at once per recipient domain."""
        events: dict[str, list[tuple[float, int]]] = defaultdict(list)
        with self._lock:
            for m in self.messages:
                events[key(m)] += [(m.mail_at, 1), (m.accepted_at, -1)]
        most: dict[str, int] = {}
        for name, marks in events.items():
            now = peak = 0
            for _, step in sorted(marks):  # at a tie an end (-1) sorts before a start
                now += step
                peak = max(peak, now)
            most[name] = peak
        return most

    def throughput(self) -> float:
        """Messages per second from the first MAIL to the last, counted as
        the median gap between consecutive MAIL commands, so one stall of
        this thread (which bunches a few arrivals) does not skew it."""
        with self._lock:
            starts = sorted(m.mail_at for m in self.messages)
        gaps = sorted(b - a for a, b in zip(starts, starts[1:], strict=False))
        if not gaps:
            return 0.0
        median = gaps[len(gaps) // 2]
        return 1 / median if median > 0 else float("inf")

    def wait_for(self, count: int, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.messages) >= count:
                return True
            time.sleep(0.01)
        return False

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Wait until no session is open: after a client was killed, whatever
        it had sent has been accepted or dropped by then."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if self._current == 0:
                    return True
            time.sleep(0.01)
        return False

    def _admit(self) -> str | None:
        """The greeting for a new connection: None for 220, else a refusal."""
        with self._lock:
            if self._probe:
                # The controller's own readiness probe: not a client.
                self._probe = False
                self._current += 1
                return None
            now = time.monotonic()
            refusal = None
            if self.refuse_all or (self.max_connections and self._current >= self.max_connections):
                refusal = "421 4.7.0 mail.example.test Error: too many connections from 127.0.0.1"
            elif self.connection_rate:
                limit, window = self.connection_rate
                self._session_starts[:] = [t for t in self._session_starts if now - t < window]
                if len(self._session_starts) >= limit:
                    refusal = "421 4.7.0 mail.example.test Error: too many connections from 127.0.0.1"
            if refusal:
                self.refused += 1
                return refusal
            self._session_starts.append(now)
            self._current += 1
            self.sessions += 1
            self.max_concurrent = max(self.max_concurrent, self._current)
            return None

    def _leave(self) -> None:
        with self._lock:
            self._current -= 1

    def _authenticate(self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> Any:
        from aiosmtpd.smtp import AuthResult, LoginPassword

        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        user = auth_data.login.decode("utf-8", "replace")
        password = auth_data.password.decode("utf-8", "replace")
        with self._lock:
            self.auth_attempts.append((mechanism, user, password))
        ok = self.auth is not None and self.auth.get(user) == password
        return AuthResult(success=ok, handled=False)

    # -- lifecycle --------------------------------------------------------------
    def start(self) -> SmtpServer:

        self.port = self.port or free_port()
        kwargs: dict[str, Any] = {
            "hostname": "127.0.0.1",
            "port": self.port,
            "server_hostname": "localhost",
            "data_size_limit": self.size or 2**25,
            "enable_SMTPUTF8": self.smtputf8,
            "ident": "mailcli test server",
        }
        if not self.eightbitmime:
            kwargs["decode_data"] = True  # aiosmtpd then offers no 8BITMIME
        if self.tls:
            import tempfile

            folder = self.cert_dir or Path(tempfile.mkdtemp(prefix="smtpcert"))
            cert, key = make_certificate(folder)
            self.ca_file = cert
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(cert, key)
            if self.tls == "tls":
                kwargs["ssl_context"] = context
            else:
                kwargs["tls_context"] = context
                kwargs["require_starttls"] = True
        if self.auth is not None:
            kwargs["authenticator"] = self._authenticate
            kwargs["auth_required"] = True
            kwargs["auth_require_tls"] = bool(self.tls)
        self._controller = _QuietController(_Handler(self), self, **kwargs)
        self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def __enter__(self) -> SmtpServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _QuietController(handler: Any, owner: SmtpServer, **kwargs: Any) -> Any:
    """A Controller whose readiness probe works with implicit TLS and
    self-signed certs, and whose sessions pass ``owner``'s connection limits."""
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import SMTP

    class Gated(SMTP):  # type: ignore[misc]
        async def _handle_client(self) -> None:
            refusal = owner._admit()
            if refusal is not None:
                await self.push(refusal)
                self.transport.close()
                return
            try:
                await super()._handle_client()
            finally:
                owner._leave()

    class Quiet(Controller):  # type: ignore[misc]
        def factory(self) -> Any:
            return Gated(self.handler, **self.SMTP_kwargs)

        def _trigger_server(self) -> None:
            with owner._lock:
                owner._probe = True
            # The stock probe opens a client connection (and a TLS handshake
            # the self-signed certificate would fail); a plain TCP connect is
            # enough to know the listener is up.
            with socket.create_connection((self.hostname, self.port), 1.0):
                pass

    return Quiet(handler, **kwargs)
