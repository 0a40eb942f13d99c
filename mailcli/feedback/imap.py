"""The IMAP mailbox ``mailcli bounces`` reads: ``imaps://user@host[:port]/MAILBOX``.

TLS with the certificate and host name verified (``ssl.create_default_context()``
plus an optional ``--ca-file``); plaintext ``imap://`` is allowed to a loopback
host only. Processed messages get ``\\Seen`` and the keyword
``$MailcliProcessed`` (so the next run does not even fetch them); ``--delete``
sets ``\\Deleted`` and, at the end, expunges the messages mailcli flagged so:
with ``UID EXPUNGE`` (RFC 4315, UIDPLUS) by their UIDs, so a message a person
flagged ``\\Deleted`` in a mail program (and may still undelete) stays; a server
without UIDPLUS only has ``EXPUNGE``, which takes every message flagged
``\\Deleted``. Without ``--delete`` nothing is expunged: the session ends with
LOGOUT, not CLOSE, which would take messages a person flagged ``\\Deleted`` too.

The messages to read are searched for ``SEARCH_WINDOW`` sequence numbers at a
time: the answer to one SEARCH is one line of UIDs, which imaplib refuses
over 1,000,000 bytes, so a mailbox of any size is read, in UID order.

A message the server will not fetch is skipped and named, and left
unflagged, so the next run reads it again. A server that closes the
connection while it sends a message (Dovecot's default for a message file it
cannot open) is connected to again and asked for the message once more; when
it closes the connection on it a second time, that message is such an entry.
A connection closed while a processed message is flagged is opened again in
the same way and the flags set on the new one; a message that could not be
flagged even so, or whose STORE the server refuses, is named too (it was
processed, and the next run, finding it processed, flags it). A connection
closed during a SEARCH is opened again and the SEARCH asked once more.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import os
import re
import ssl
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar
from urllib.parse import unquote, urlsplit

from ..config import Settings
from ..errors import ConfigError, MailcliError, TransportError, UsageError
from ..net import is_loopback, tls_context
from .sources import NotDeleted, NotMarked, RawMessage, Unreadable

KEYWORD = "$MailcliProcessed"
# How many messages, by sequence number, one SEARCH looks at: its answer, one line of up to as many
# UIDs, stays near 100 KB however big the mailbox is (imaplib refuses a line over 1,000,000 bytes).
SEARCH_WINDOW = 10_000
# The most characters of UIDs one UID EXPUNGE names: its command line stays near 4 KB, half the
# 8,192 octets RFC 7162 asks a client to keep to (a server may refuse a longer line).
EXPUNGE_SET = 4000

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class _ClosedTwice:
    """The server closed the connection on a command, and again on a new one: how, the second time."""

    exc: Exception

    @property
    def said(self) -> str:
        return _server_text(self.exc)


@dataclass(frozen=True, slots=True)
class ImapUrl:
    secure: bool
    user: str
    host: str
    port: int
    mailbox: str


def parse_imap_url(text: str) -> ImapUrl:
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme not in ("imaps", "imap") or not parts.hostname:
        raise UsageError(f"{text}: expected imaps://user@host[:port]/MAILBOX")
    if not parts.username:
        raise UsageError(f"{text}: no user name (imaps://user@host/INBOX)")
    if parts.password:
        raise UsageError(f"{_safe(text)}: put the password in the environment variable named by [bounces] imap_password_env, not in the URL")
    try:
        port = parts.port or (993 if scheme == "imaps" else 143)
    except ValueError:
        raise UsageError(f"{text}: invalid port") from None
    mailbox = unquote(parts.path.lstrip("/")) or "INBOX"
    return ImapUrl(scheme == "imaps", unquote(parts.username), parts.hostname, port, mailbox)


def _safe(text: str) -> str:
    return re.sub(r"//([^:@/]*):[^@/]*@", r"//\1:***@", text)


def _server_text(exc: Exception) -> str:
    """What the server said when it closed the connection (its BYE), or how the socket ended."""
    return re.sub(r"^command: \S+ => ", "", str(exc)).strip() or type(exc).__name__


def _answer_text(parts: list[object]) -> str:
    """The words of a server's NO (or other) answer to a command."""
    return b" ".join(p for p in parts if isinstance(p, bytes)).decode("utf-8", "replace").strip().rstrip(".")


def _quote(mailbox: str) -> str:
    return '"' + _imap_name(mailbox).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _imap_name(mailbox: str) -> str:
    """A mailbox name as IMAP spells it: other than ASCII in modified UTF-7 (RFC 3501 5.1.3).

    A name in ASCII goes as it is given, so one already written in that
    spelling ("R&APw-ckl&AOQ-ufer") still works.
    """
    if mailbox.isascii():
        return mailbox
    out: list[str] = []
    pending: list[str] = []

    def flush() -> None:
        if pending:
            encoded = base64.b64encode("".join(pending).encode("utf-16-be")).decode("ascii")
            out.append("&" + encoded.rstrip("=").replace("/", ",") + "-")
            pending.clear()

    for char in mailbox:
        if " " <= char <= "~":
            flush()
            out.append("&-" if char == "&" else char)
        else:
            pending.append(char)
    flush()
    return "".join(out)


class ImapSource:
    def __init__(self, text: str, settings: Settings, *, ca_file: Path | None, delete: bool) -> None:
        url = parse_imap_url(text)
        self.name = f"{'imaps' if url.secure else 'imap'}://{url.user}@{url.host}:{url.port}/{url.mailbox}"
        self._url = url
        self._ca_file = ca_file
        self._delete = delete
        self._finished = False  # finish() has expunged (or said why it could not)
        self._flagged: list[int] = []  # with --delete: the UIDs mailcli flagged \\Deleted, to expunge at the end
        if not url.secure and not is_loopback(url.host):
            raise UsageError(
                f"{self.name}: plain imap:// sends the password in clear text; it is only allowed to localhost",
                hint="use imaps://",
            )
        self._env = settings.bounces.imap_password_env
        password = os.environ.get(self._env)
        if not password:
            raise ConfigError(f"No IMAP password: the environment variable {self._env} is not set",
                              hint=f"export {self._env}=... (named by [bounces] imap_password_env)")
        self._password = password
        self._connect()

    # Complexity: the IMAP steps in order (TLS, login, mailbox), each failure with its own message.
    def _connect(self) -> None:
        """Connect, log in and select the mailbox (at the start, and again after the server closed the connection)."""
        import imaplib

        url = self._url
        try:
            if url.secure:
                context = tls_context(self._ca_file)
                self._imap: imaplib.IMAP4 = imaplib.IMAP4_SSL(url.host, url.port, ssl_context=context, timeout=30)
            else:
                self._imap = imaplib.IMAP4(url.host, url.port, timeout=30)
        except ssl.SSLError as exc:
            raise TransportError(f"{self.name}: TLS failed: {exc.reason or exc}",
                                 hint="pass --ca-file for a private CA") from None
        except OSError as exc:
            raise TransportError(f"{self.name}: cannot connect: {exc.strerror or exc}") from None
        try:
            self._imap.login(url.user, self._password)
        except (imaplib.IMAP4.abort, OSError) as exc:
            self._logout()
            raise TransportError(f"{self.name}: connection lost while logging in: {exc}") from None
        except imaplib.IMAP4.error:
            self._logout()
            raise TransportError(f"{self.name}: login refused for {url.user}",
                                 hint=f"check the user and the password in {self._env}") from None
        self._uidplus = self._delete and self._offers("UIDPLUS")
        try:
            typ, data = self._imap.select(_quote(url.mailbox))
        except imaplib.IMAP4.readonly:  # the server said READ-ONLY: the flags mailcli sets would not be kept
            self._logout()
            raise TransportError(
                f"{self.name}: the server opens the mailbox {url.mailbox!r} read-only for {url.user}, and mailcli"
                " marks (or deletes) each message it has processed",
                hint=f"give {url.user} the right to change flags (and, for --delete, to delete) in {url.mailbox}",
            ) from None
        except (imaplib.IMAP4.error, OSError) as exc:
            self._logout()
            raise TransportError(f"{self.name}: connection lost while opening the mailbox: {exc}") from None
        if typ != "OK":
            self._logout()
            raise UsageError(f"{self.name}: no such mailbox {url.mailbox!r}")
        self._count = int(data[-1] or 0) if data and isinstance(data[-1], bytes) else 0  # its EXISTS
        self._keywords = _keeps_keyword(self._imap.untagged_responses.get("PERMANENTFLAGS"))
        self._uidvalidity = self._imap.untagged_responses.get("UIDVALIDITY")

    def _offers(self, capability: str) -> bool:
        """Whether the server offers a capability once logged in (it may offer more than before)."""
        import imaplib

        try:
            typ, data = self._imap.capability()
        except (imaplib.IMAP4.abort, OSError) as exc:
            self._logout()
            raise TransportError(f"{self.name}: connection lost while logging in: {exc}") from None
        except imaplib.IMAP4.error:  # BAD: offers nothing to count on
            return False
        last = data[-1] if typ == "OK" and data else None
        return isinstance(last, bytes) and capability.encode("ascii") in last.upper().split()

    def _reconnect(self, lost: Exception) -> None:
        """A new connection after the server closed the one in use, to the same mailbox.

        The UIDs searched for on the first connection hold on the new one only
        while the mailbox keeps its UIDVALIDITY; if it changed, or no
        connection can be made, the connection counts as lost (exit 5).
        """
        with contextlib.suppress(Exception):
            self._imap.shutdown()
        before = self._uidvalidity
        why = _server_text(lost)
        try:
            self._connect()
        except MailcliError as exc:
            detail = exc.message.removeprefix(f"{self.name}: ")
            raise TransportError(f"{self.name}: connection lost ({why}), and connecting again failed: {detail}",
                                 hint="run the same command again") from None
        if self._uidvalidity != before:
            self._logout()
            raise TransportError(f"{self.name}: connection lost ({why}), and the mailbox was replaced meanwhile "
                                 "(its UIDVALIDITY changed)", hint="run the same command again")

    def _twice(self, command: Callable[[], T], *, then_reconnect: bool) -> T | _ClosedTwice:
        """``command``, sent once more on a new connection when the server closes
        the one in use (a restart, a dropped link, Dovecot on a message it cannot
        open). Closed on the new one too: ``_ClosedTwice``, after a third
        connection for the rest when ``then_reconnect``. A server that does not
        answer is a lost connection: its ``TimeoutError`` goes through."""
        import imaplib

        for attempt in (1, 2):
            try:
                return command()
            except TimeoutError:
                raise  # a server that does not answer is a lost connection (exit 5), not one that closed it
            except (imaplib.IMAP4.abort, OSError) as exc:
                if attempt == 2 and not then_reconnect:
                    return _ClosedTwice(exc)
                self._reconnect(exc)
                if attempt == 2:
                    return _ClosedTwice(exc)
        raise AssertionError("unreachable")

    def _logout(self) -> None:
        try:
            self._imap.logout()
        except Exception:  # noqa: BLE001 - a connection already closed: only the socket is left to close
            with contextlib.suppress(Exception):
                self._imap.shutdown()

    def messages(self) -> Iterator[RawMessage | Unreadable]:
        import imaplib

        criteria = ("UNKEYWORD", KEYWORD) if self._keywords else ("UNSEEN",)
        last = 0  # the highest UID read so far
        start = 1  # the sequence number the next window starts at
        try:
            # The mailbox is searched SEARCH_WINDOW messages at a time, by sequence
            # number: the windows run in UID order and cover the mailbox however
            # sparse its UIDs are. Each window is read before the next is searched.
            while (start := self._renumbered(start)) <= self._count:
                end = min(start + SEARCH_WINDOW - 1, self._count)
                # The UIDs found here are worked through once, on a new connection
                # too: a message read before the server closed one is not read again.
                for uid in self._search(f"{start}:{end}", criteria):
                    if uid > last:
                        last = uid
                        item = self._read(str(uid))
                        if item is not None:
                            yield item
                start = end + 1
        except (imaplib.IMAP4.error, OSError) as exc:
            # Each message already read was committed; a rerun goes on from here.
            raise TransportError(f"{self.name}: connection lost: {exc}", hint="run the same command again") from None

    def _renumbered(self, start: int) -> int:
        """``start`` after the messages another client expunged meanwhile, as the server told.

        Each one expunged before it moves it down by one, and the mailbox
        searched ends one earlier. (Mail that came in since the mailbox was
        opened is read by the next run. After a new connection, the new
        mailbox's numbers hold from the next window on; what another client
        expunged between the two connections can make that window start
        further on, and what it passes over is read by the next run.)
        """
        for number in self._imap.untagged_responses.pop("EXPUNGE", []):
            self._count -= 1
            if isinstance(number, bytes) and int(number) < start:
                start -= 1
        return start

    def _search(self, messages: str, criteria: tuple[str, ...]) -> list[int]:
        """The UIDs, in order, of the messages to read among these sequence
        numbers; asked once more on a new connection when the server closes
        the one in use (a restart, a dropped link), as for a FETCH."""
        answer = self._twice(lambda: self._imap.uid("SEARCH", messages, *criteria), then_reconnect=False)
        if isinstance(answer, _ClosedTwice):
            raise TransportError(f"{self.name}: connection lost while searching the mailbox, on a new connection"
                                 f" too ({answer.said})", hint="run the same command again")
        typ, data = answer
        if typ != "OK":
            raise TransportError(f"{self.name}: SEARCH failed")
        return sorted(int(u) for u in (data[0] or b"").split())

    def _read(self, uid: str) -> RawMessage | Unreadable | None:
        """One message, fetched once more on a new connection when the server closes the connection during its FETCH.

        Dovecot, by default, closes the connection on the FETCH of a message
        it cannot open (a damaged or unreadable file): when it does so again
        on the same message, the message is skipped and named, left unflagged
        for the next run, and the rest is read on a new connection. A
        connection that closes once, the message then fetched, was the
        connection's doing: the message is read as any other.
        """
        fetched = self._twice(lambda: self._fetch(uid), then_reconnect=True)
        if isinstance(fetched, _ClosedTwice):
            return Unreadable(f"{self.name} UID {uid}",
                              f"the server closed the connection each time it was fetched (twice): {fetched.said}")
        return fetched

    # Complexity: one branch per answer to a FETCH (the body, none, NO, BAD, the message gone meanwhile).
    def _fetch(self, uid: str) -> RawMessage | Unreadable | None:
        """One message; None when another client expunged it meanwhile.

        A message the server will not give (it answers NO or BAD, or no body)
        is skipped and named by its UID, and left unflagged in the mailbox: the
        next run fetches it again. A closed connection is raised as it is.
        """
        import imaplib

        try:
            typ, parts = self._imap.uid("FETCH", uid, "(BODY.PEEK[])")
        except imaplib.IMAP4.abort:
            raise
        except imaplib.IMAP4.error as exc:  # BAD: imaplib raises it
            return Unreadable(f"{self.name} UID {uid}", f"the server refused to fetch it ({exc})")
        if typ == "OK":
            for part in parts:
                if isinstance(part, tuple) and len(part) == 2:
                    return RawMessage(uid, bytes(part[1]))
            if not self._exists(uid):
                return None
            return Unreadable(f"{self.name} UID {uid}", "the server returned no message body")
        text = _answer_text(parts)
        if text.upper().startswith("[EXPUNGEISSUED]") and not self._exists(uid):
            return None
        return Unreadable(f"{self.name} UID {uid}", f"the server answered {typ}: {text or 'no reason given'}")

    def _exists(self, uid: str) -> bool:
        typ, data = self._imap.uid("SEARCH", "UID", uid)
        return typ == "OK" and uid.encode("ascii") in (data[0] or b"").split()

    def done(self, key: str, *, handled: bool) -> NotMarked | None:
        import imaplib

        if not handled:
            return None  # left unread for a person, and fetched again to be listed until acknowledged
        if self._delete:
            flags = "(\\Deleted)"
        else:
            flags = f"(\\Seen {KEYWORD})" if self._keywords else "(\\Seen)"
        try:
            missed = self._mark(key, flags)
        except (imaplib.IMAP4.error, OSError) as exc:
            raise TransportError(f"{self.name}: connection lost: {exc}", hint="run the same command again") from None
        if self._delete and missed is None:
            self._flagged.append(int(key))
        return missed

    def _mark(self, uid: str, flags: str) -> NotMarked | None:
        """Flag one processed message, on a new connection when the server closes the connection during the STORE.

        The message was recorded as processed before it is flagged, so
        nothing is read or applied again: the STORE is only sent once more
        (adding flags that may have been set already). When the server closes
        the connection on it a second time, or refuses the STORE (NO or BAD),
        the message is named, the rest is read (on a new connection after a
        close), and the next run, finding the message processed, flags it.
        """
        import imaplib

        try:
            answer = self._twice(lambda: self._imap.uid("STORE", uid, "+FLAGS", flags), then_reconnect=True)
        except imaplib.IMAP4.error as exc:  # BAD: imaplib raises it (a closed connection never gets here)
            return NotMarked(f"{self.name} UID {uid}", f"the server refused to flag it ({exc})")
        if isinstance(answer, _ClosedTwice):
            return NotMarked(f"{self.name} UID {uid}",
                             f"the server closed the connection each time it was flagged (twice): {answer.said}")
        typ, parts = answer
        text = _answer_text(parts)
        if typ == "OK" or (text.upper().startswith("[EXPUNGEISSUED]") and not self._exists(uid)):
            return None  # flagged, or expunged by another client meanwhile: nothing left to flag
        return NotMarked(f"{self.name} UID {uid}", f"the server answered {typ}: {text or 'no reason given'}")

    def finish(self) -> NotDeleted | None:
        """With --delete, expunge the messages mailcli flagged ``\\Deleted``; why the server would not, or None.

        With UIDPLUS only those UIDs go (``UID EXPUNGE``, a few thousand
        characters of UIDs a command); without it, ``EXPUNGE`` takes every
        message flagged ``\\Deleted``, as a mail program's "compact" does.
        A connection the server closes during one is opened again, as for a
        FETCH or STORE, and the command sent on the new one: the flags set on
        the old one are kept by the server. Closed a second time, the
        connection counts as lost (exit 5), and the next run deletes them.
        """
        import imaplib

        if not self._delete:
            return None
        self._finished = True
        deleted = 0
        try:
            for uids, count in self._expunge_sets():
                why = self._twice(functools.partial(self._expunge, uids), then_reconnect=False)
                if isinstance(why, _ClosedTwice):
                    raise why.exc
                if why is not None:
                    return NotDeleted(why, deleted)
                deleted += count
        except (imaplib.IMAP4.error, OSError) as exc:
            raise TransportError(f"{self.name}: connection lost: {exc}", hint="run the same command again") from None
        return None

    def _expunge_sets(self) -> list[tuple[str | None, int]]:
        """The commands that delete what mailcli flagged: (UID set, messages in it); None for one EXPUNGE."""
        if not self._flagged:
            return []  # nothing of mailcli's to delete: an EXPUNGE would only take a person's messages
        if not self._uidplus:
            return [(None, len(set(self._flagged)))]
        return [(uids, count) for uids, count in _uid_sets(self._flagged, EXPUNGE_SET)]

    def _expunge(self, uids: str | None) -> str | None:
        """One UID EXPUNGE (or, for None, EXPUNGE); why the server would not, or None."""
        import imaplib

        command = "EXPUNGE" if uids is None else "UID EXPUNGE"
        try:
            if uids is None:
                typ, parts = self._imap.expunge()
            else:
                self._imap.untagged_responses.pop("FETCH", None)  # so the answer read is this command's own
                typ, parts = self._imap.uid("EXPUNGE", uids)
                self._imap.untagged_responses.pop("EXPUNGE", None)  # the sequence numbers removed: not needed
        except imaplib.IMAP4.abort:
            raise
        except imaplib.IMAP4.error as exc:  # BAD: imaplib raises it
            return f"the server refused to delete them ({exc})"
        if typ == "OK":
            return None
        return f"the server answered {typ} to {command}: {_answer_text(parts) or 'no reason given'}"

    def close(self) -> None:
        # LOGOUT, not CLOSE: CLOSE expunges every message flagged \\Deleted, also one a
        # person marked in a mail program, and without --delete nothing may leave the mailbox.
        if self._delete and not self._finished:  # stopped early (Ctrl-C): what was processed goes all the same
            with contextlib.suppress(Exception):
                for uids, _ in self._expunge_sets():
                    self._expunge(uids)
        self._logout()


def _keeps_keyword(permanent: Sequence[object] | None) -> bool:
    """Whether the mailbox keeps the keyword mailcli sets, by the PERMANENTFLAGS of its SELECT.

    Without PERMANENTFLAGS every flag can be changed permanently (RFC 3501
    7.1); listed, they must name the keyword or ``\\*`` (any new keyword),
    else mailcli marks a processed message only ``\\Seen`` (and reads only
    the unseen ones, so a message a person has read is passed over).
    """
    if not permanent:
        return True
    words = {word.lower() for item in permanent if isinstance(item, bytes)
             for word in item.decode("utf-8", "replace").strip("()").split()}
    return "\\*" in words or KEYWORD.lower() in words


def _uid_sets(uids: list[int], limit: int) -> list[tuple[str, int]]:
    """UIDs as IMAP sets ("3:9,12"), each at most ``limit`` characters (or one range), with how many each holds."""
    ranges: list[tuple[str, int]] = []
    ordered = sorted(set(uids))
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        ranges.append((f"{ordered[i]}:{ordered[j]}" if j > i else str(ordered[i]), j - i + 1))
        i = j + 1
    sets: list[tuple[str, int]] = []
    text, count = "", 0
    for part, n in ranges:
        if text and len(text) + 1 + len(part) > limit:
            sets.append((text, count))
            text, count = "", 0
        text = f"{text},{part}" if text else part
        count += n
    if text:
        sets.append((text, count))
    return sets
