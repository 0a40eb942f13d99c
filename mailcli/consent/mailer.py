"""The confirmation mail of a double opt-in, sent by ``serve`` itself.

A sign-up's mail is due at once; a thread of ``serve`` (``ConfirmationMailer``)
sends due mails through the configured relay within a second or two of the
sign-up, one SMTP session per batch. A relay that is down or answers 4xx
is tried again after 30 s, 2, 10 and 30 minutes, then every hour, until the
link expires; a 5xx reply gives that mail up. The state is in the database
(``store.signups``), so a restart of ``serve`` loses nothing.

The mail is rendered from ``templates/_confirm`` (``message.html``,
``message.txt``, ``subject.txt``; the template sees ``confirm_url``), or, for
a list whose language differs from the project's, ``templates/_confirm.LANG``
when there is one and else mailcli's own template in that language. It is a
service message: no List-Unsubscribe, no marketing, no tracking.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import threading
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from .. import clock
from ..config import Settings
from ..errors import MailcliError
from ..store import Store
from ..store import signups as rows
from ..store.db import waited_too_long
from .flow import confirm_token, confirm_url

log = logging.getLogger("mailcli.serve")

RETRY_AFTER = (30, 120, 600, 1800, 3600)  # seconds before each next try; the last repeats
SCAFFOLD = Path(__file__).resolve().parent.parent / "scaffold"


def confirm_template_dir(settings: Settings, language: str) -> tuple[Path, str]:
    """The templates folder and the name of the confirmation template for ``language``."""
    own = settings.templates_dir
    if language == settings.project.language and (own / "_confirm").is_dir():
        return own, "_confirm"
    if (own / f"_confirm.{language}").is_dir():
        return own, f"_confirm.{language}"
    builtin = SCAFFOLD / "templates" if language == "en" else SCAFFOLD / language / "templates"
    return builtin, "_confirm"


class MailBuilder:
    """Renders confirmation mails, each template compiled once."""

    def __init__(self, settings: Settings) -> None:
        from ..deliverability.dkim import load_signer
        from ..render import MessageSkeleton
        from ..render.preview import sender_from_settings

        self.settings = settings
        self.sender = sender_from_settings(settings)
        s = settings.sender
        # A message to one person who asked for it: no List-Id, no bulk precedence.
        self.skeleton = MessageSkeleton(from_name=s.from_name, from_address=s.from_address, reply_to=s.reply_to,
                                        list_id=None, precedence=None)
        self.signer = load_signer(settings)  # signed like every campaign message, when [dkim] is set
        self._templates: dict[str, Any] = {}

    def template(self, language: str) -> Any:
        from ..render import compile_template

        if language not in self._templates:
            folder, name = confirm_template_dir(self.settings, language)
            self._templates[language] = compile_template(folder, name)
        return self._templates[language]

    def build(self, mail: rows.DueMail) -> bytes:
        from ..render import RenderContext
        from ..send.message import build_message
        from ..tokens import message_id

        contact: dict[str, str] = {}
        try:
            contact.update({str(k): "" if v is None else str(v) for k, v in json.loads(mail.attributes or "{}").items()})
        except ValueError:
            pass
        contact.update(email=mail.email, first_name=mail.first_name, last_name=mail.last_name)
        token = confirm_token(self.settings, mail.nonce, mail.expires_at)
        now = clock.now()
        ctx = RenderContext(contact=contact, campaign={"name": mail.list_name, "subject": ""}, sender=self.sender,
                            unsubscribe_url="", now=now, confirm_url=confirm_url(self.settings, token),
                            language=mail.language)
        parts = self.template(mail.language).render(ctx)
        data: bytes = build_message(
            self.skeleton, email=mail.email, first_name=mail.first_name, last_name=mail.last_name, parts=parts,
            message_id=message_id(mail.nonce, mail.contact_uid, self.settings.sender.domain), date=now,
            list_unsubscribe="")
        return data if self.signer is None else self.signer.sign(data)


def send_due(store: Store, settings: Settings, builder: MailBuilder | None = None) -> tuple[int, int]:
    """Send every confirmation mail that is due; returns (sent, failed attempts)."""
    builder = builder or MailBuilder(settings)
    with store.transaction() as conn:
        due = rows.due_confirmation_mails(conn, clock.now_iso())
    if not due:
        return 0, 0
    messages = []
    for mail in due:
        try:
            messages.append((mail, builder.build(mail)))
        except MailcliError as exc:
            _failed(store, mail, f"cannot render the confirmation mail: {exc.message}", permanent=True)
    results = asyncio.run(deliver(settings, messages)) if messages else []
    sent = failed = 0
    for mail, problem, permanent in results:
        if problem is None:
            with store.transaction() as conn:
                rows.mail_sent(conn, mail.signup_id, clock.now_iso())
            sent += 1
        else:
            _failed(store, mail, problem, permanent=permanent)
            failed += 1
    return sent, failed


def _failed(store: Store, mail: rows.DueMail, problem: str, *, permanent: bool) -> None:
    now = clock.now()
    wait = RETRY_AFTER[min(mail.attempts, len(RETRY_AFTER) - 1)]
    retry = None if permanent else clock.to_iso(now + timedelta(seconds=wait))
    if retry is not None and retry >= mail.expires_at:
        retry = None
    log.warning("%s confirmation mail %s not sent (%s)%s", clock.now_iso(), mail.nonce[:8], problem,
                f"; trying again at {retry}" if retry else "; given up")
    with store.transaction() as conn:
        rows.mail_failed(conn, mail.signup_id, problem, retry_at=retry)


# Complexity: one SMTP session and each way it can end: unreachable, a refused message, a lost connection.
async def deliver(settings: Settings, messages: list[tuple[rows.DueMail, bytes]],
                   before_dot: Callable[[rows.DueMail], bool] | None = None,
                   ) -> list[tuple[rows.DueMail, str | None, bool]]:
    """One SMTP session for the batch: (mail, problem or None, whether the problem is permanent).

    ``before_dot(mail)`` runs right before a message's final dot (a durable
    "sending" mark); False leaves that message out."""
    from ..net import tls_context
    from ..send.message import envelope_rcpt
    from ..send.outgoing import dot_stuff
    from ..send.smtp import ConnectParams, SmtpConnection, default_local_hostname

    smtp = settings.smtp
    params = ConnectParams(
        host=smtp.host, port=smtp.port, security=smtp.security, username=smtp.username,
        password=smtp.password() if smtp.username else None, timeout=smtp.timeout,
        ca_file=str(smtp.ca_file) if smtp.ca_file else None, local_hostname=smtp.helo_name or default_local_hostname())
    results: list[tuple[rows.DueMail, str | None, bool]] = []
    try:
        tls = tls_context(smtp.ca_file) if smtp.security in ("tls", "starttls") else None
        conn = SmtpConnection(params, tls)
        await conn.open()
    except Exception as exc:  # noqa: BLE001 - the relay is unreachable: every mail waits for a retry
        return [(mail, f"{smtp.address}: {exc}", False) for mail, _ in messages]
    sender = settings.sender.bounce_address or settings.sender.from_address
    try:
        for mail, data in messages:
            try:
                mark = functools.partial(before_dot, mail) if before_dot is not None else None
                results.append((mail, *await _transaction(conn, sender, envelope_rcpt(mail.email),
                                                          dot_stuff(data, crlf=True), mark)))
            except Exception as exc:  # noqa: BLE001 - a dropped connection: this and the rest wait
                results.append((mail, f"{smtp.address}: {exc}", False))
                break
    finally:
        await conn.quit()
    done = {id(m) for m, _, _ in results}
    results += [(mail, "not tried: the connection was lost", False) for mail, _ in messages if id(mail) not in done]
    return results


async def _transaction(conn: Any, sender: str, rcpt: str, data: bytes,
                       before_dot: Callable[[], bool] | None = None) -> tuple[str | None, bool]:
    for line in (f"MAIL FROM:<{sender}>".encode(), f"RCPT TO:<{rcpt}>".encode(), b"DATA"):
        reply = await conn.command(line)
        if not reply.positive:
            await conn.command(b"RSET")
            return f"{reply.code} {reply.text}", reply.code >= 500
    conn.write(data)
    if before_dot is not None and not before_dot():
        raise ConnectionAbortedError("the message may not be sent any more")  # the dot is never written
    conn.write(b".\r\n")
    (reply,) = await conn.read_replies(1)
    if not reply.positive:
        return f"{reply.code} {reply.text}", reply.code >= 500
    return None, False


class ConfirmationMailer:
    """A thread of ``serve`` that sends due confirmation mails, woken by each sign-up."""

    def __init__(self, settings: Settings, store: Callable[[], Store], *, every: float = 5.0) -> None:
        self.settings = settings
        self._store = store
        self._every = every
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._builder: MailBuilder | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="mailcli-confirm", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _loop(self) -> None:
        busy = False  # one line for each spell of a busy database, not one each try
        while not self._stop.is_set():
            try:
                self._builder = self._builder or MailBuilder(self.settings)
                sent, _ = send_due(self._store(), self.settings, self._builder)
                busy = False
                if sent:
                    log.info("%s sent %d confirmation mail(s)", clock.now_iso(), sent)
            except Exception as exc:  # noqa: BLE001 - keep serving; the mails wait in the database
                if not waited_too_long(exc):
                    log.exception("cannot send confirmation mails yet")
                elif not busy:
                    busy = True
                    log.warning("%s confirmation mails wait: another process is writing to the database;"
                                " trying again every %g s", clock.now_iso(), self._every)
            self._wake.wait(self._every)
            self._wake.clear()
