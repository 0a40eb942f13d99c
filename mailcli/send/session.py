"""One SMTP session: the transactions a connection runs until it has nothing
to do, step by step, and what each reply means.

A transaction is: the checks that need no byte on the wire (size, SMTPUTF8,
a withdrawn message), the envelope (``MAIL FROM``, ``RCPT TO``, ``DATA``, in
one write with RFC 2920 pipelining), the durable ``sending`` mark, the body
with its final dot and the next message's envelope in one write, and the
reply to the dot. So a message costs one round trip instead of two.

Replies (RFC 5321): 2xx sent, 4xx retried within ``retry_window``, 5xx
failed, 5.1.x failed and a hard bounce; any other code (a 1xx, a 354 to
the final dot) is out of step with the commands: the connection is closed,
the message retried, or uncertain if its dot went out; a 421 closes the connection,
requeues and makes every connection back off a moment. A drop or timeout
before the dot is retried like a 451; after the dot the message is
``uncertain`` and never resent blindly (docs/guarantees.md#crash-safety).
What a refusal says about the relay (too many connections, too fast, this
session's share carried, the day's quota used up) goes to the transport,
which adapts (docs/guarantees.md#relay-limits).

The engine may withdraw a message it handed over (its recipient opted out or
was erased since it was rendered): ``hooks.withdrawn(msg)`` is asked right
before the message's MAIL FROM is written and again right before its final
dot. Withdrawn before MAIL FROM, it is skipped; withdrawn after its envelope
went out, the connection is closed without the dot, so the server discards
the transaction. Only a message whose dot was already written when the
opt-out was committed can still be delivered: at most one per connection
(docs/guarantees.md#opt-outs-during-a-send).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING

from mailcli.send.outgoing import OutgoingMessage, Result, Status, classify, dot_stuff
from mailcli.send.pacing import reply_kind
from mailcli.send.replies import (
    ConnectionDropped,
    PartialReplies,
    Reply,
    ReplyTimeout,
    SmtpConnectFailed,
    SmtpProtocolError,
)
from mailcli.send.smtp import SmtpConnection
from mailcli.store.deliveries import KILLED_AFTER_DOT, LOST_AFTER_DOT

if TYPE_CHECKING:
    from mailcli.send.transport import SmtpTransport

# RFC 5321 §4.5.3.2.6: wait at least 10 minutes for the reply to the final dot;
# giving up earlier turns a slow server into an uncertain message.
DATA_END_TIMEOUT = 600.0


class Reconnect(SmtpProtocolError):
    """End this session politely and carry on over a new one."""


class Retire(SmtpProtocolError):
    """End this session and this connection slot: the relay wants fewer."""


def precheck(conn: SmtpConnection, msg: OutgoingMessage,
             withdrawn: Callable[[OutgoingMessage], Result | None]) -> Result | None:
    """Failures known before any byte is sent (the relay's SIZE limit, an
    address that needs SMTPUTF8 where it is not offered), or a message the
    engine withdrew; asked right before its MAIL FROM."""
    size = conn.extensions.get("SIZE", "")
    if size.isdigit() and int(size) > 0 and len(msg.data) > int(size):
        return Result(Status.FAILED, f"message is {len(msg.data)} bytes; {conn.params.where} accepts at most {size}")
    if not (msg.rcpt_to.isascii() and msg.mail_from.isascii()) and "SMTPUTF8" not in conn.extensions:
        return Result(
            Status.FAILED,
            f"the address has a non-ASCII local part, which needs SMTPUTF8 (RFC 6531), and {conn.params.where}"
            " does not offer it; later campaigns through this relay skip the address until it does",
            needs_smtputf8=True,
        )
    return withdrawn(msg)


def envelope_commands(conn: SmtpConnection, msg: OutgoingMessage, rset: bool) -> list[bytes]:
    """``[RSET,] MAIL FROM, RCPT TO, DATA`` for ``msg``, with the parameters the relay offers."""
    params = b""
    if "SIZE" in conn.extensions:
        params += b" SIZE=%d" % len(msg.data)
    if not msg.data.isascii() and "8BITMIME" in conn.extensions:
        params += b" BODY=8BITMIME"
    if not (msg.rcpt_to.isascii() and msg.mail_from.isascii()):
        params += b" SMTPUTF8"
    cmds = [
        b"MAIL FROM:<" + msg.mail_from.encode("utf-8") + b">" + params + b"\r\n",
        b"RCPT TO:<" + msg.rcpt_to.encode("utf-8") + b">\r\n",
        b"DATA\r\n",
    ]
    if rset:
        cmds.insert(0, b"RSET\r\n")
    return cmds


class Session:
    """Transactions on one connection until it has nothing to do.

    ``holding`` lists every message taken, so the caller can requeue any
    left without a result if the connection breaks.
    """

    def __init__(self, pool: SmtpTransport, conn: SmtpConnection, holding: list[OutgoingMessage]) -> None:
        self.pool = pool
        self.conn = conn
        self.holding = holding
        self.pipelining = "PIPELINING" in conn.extensions

    async def run(self) -> None:
        msg: OutgoingMessage | None = self.holding[0]
        envelope_written = False  # behind the previous message's dot, prechecked then
        while msg is not None:
            if not envelope_written:
                found = precheck(self.conn, msg, self.pool.hooks.withdrawn)
                if found is not None:
                    await self.pool.final(msg, found)
                    msg = self._next()
                    continue
            refusal = await self._envelope(msg, envelope_written)
            if refusal is not None:
                # Refused at MAIL, RCPT or DATA: record it, then the next message.
                self.conn.need_rset = True
                await self.answer(msg, refusal)
                msg, envelope_written = self._next(), False
                continue
            nxt = await self._data(msg)
            if nxt is not None:
                msg, envelope_written = nxt, True
            else:
                msg, envelope_written = self._next(), False

    def _next(self) -> OutgoingMessage | None:
        """The next message ready for this connection, remembered as held."""
        msg = self.pool.take_nowait()
        if msg is not None:
            if len(self.holding) > 4:  # forget the ones already settled
                self.holding[:] = [h for h in self.holding if not h.settled]
            self.holding.append(msg)
        return msg

    async def _envelope(self, msg: OutgoingMessage, written: bool) -> Reply | None:
        """Send the envelope (unless it went out behind the previous dot) and
        read its replies: the one that refused the message, or None after a 354."""
        conn = self.conn
        cmds = envelope_commands(conn, msg, conn.need_rset)
        try:
            replies = await self._envelope_replies(cmds, written)
        except (PartialReplies, ReplyTimeout, ConnectionDropped) as exc:
            # Nothing of this message was accepted: it is retried, and a 421
            # among the replies means "back off" unless it says why in a
            # way that asks for something else.
            got = exc.replies if isinstance(exc, PartialReplies) else []
            closing = next((r for r in got if r.code == 421), None)
            if closing is not None:
                await self.answer(msg, closing)  # records msg; always raises for a 421
            await self.pool.retry(msg, f"connection lost before data: {exc}")
            raise
        return await self._refusal(replies)

    async def _envelope_replies(self, cmds: list[bytes], written: bool) -> list[Reply]:
        conn = self.conn
        if written:
            return await conn.read_replies(len(cmds))
        if conn.unsolicited:
            # A reply before we asked anything: the relay is out of step with
            # our commands, so no reply on this connection can be matched to
            # its command any more. (The message answered last keeps its 2xx:
            # that reply came after the 354 to its DATA, when the relay may
            # speak only to answer the final dot, so it can only be about
            # that message's body, which the relay did receive; the extra
            # reply is the one out of place.)
            raise SmtpProtocolError(f"{conn.params.where} sent a reply to no command: its replies are out of"
                                    " step; closing the connection")
        if self.pipelining:
            conn.write(b"".join(cmds))
            return await conn.read_replies(len(cmds))
        replies = []
        for c in cmds:
            conn.write(c)
            r = (await conn.read_replies(1))[0]
            replies.append(r)
            if not r.positive:
                break
        return replies

    # Complexity: one branch per reply of a pipelined MAIL, RCPT, DATA group (RFC 2920).
    async def _refusal(self, replies: list[Reply]) -> Reply | None:
        conn = self.conn
        if conn.need_rset:
            replies = replies[1:]  # the RSET reply; its outcome does not matter
            conn.need_rset = False
        if not replies:
            raise SmtpProtocolError("RSET refused")
        odd = next((r for r in replies if not 200 <= r.code < 600), None)
        if odd is not None:
            # No command is answered so (a "199" is below 400, yet it is no
            # 2xx): whatever it meant, nothing of this message was accepted.
            raise SmtpProtocolError(f"{conn.params.where} answered with {odd}, a code no command has:"
                                    " its replies are out of step; closing the connection")
        mail_r, rcpt_r = replies[0], (replies[1] if len(replies) > 1 else None)
        data_r = replies[2] if len(replies) > 2 else None
        if data_r is not None and data_r.code != 354 and data_r.code < 400:
            # DATA is answered 354 (go ahead) or refused with 4xx/5xx; a 250
            # or any other code means the relay never took the body, or its
            # replies are out of step with our commands (an extra reply
            # somewhere before): none of them can be trusted any more. The
            # message is not sent; the caller requeues it and closes the connection.
            raise SmtpProtocolError(f"{conn.params.where} answered DATA with {data_r}, not 354:"
                                    " its replies are out of step; closing the connection")
        failed: Reply | None = None
        if not mail_r.positive:
            failed = mail_r
        elif rcpt_r is None or not rcpt_r.positive:
            failed = rcpt_r
        if failed is None:
            if data_r is None:
                raise SmtpProtocolError("no reply to DATA")
            if data_r.code != 354:
                failed = data_r  # 4xx/5xx: this message's outcome
        elif data_r is not None and data_r.code == 354:
            # A server that accepts DATA without a recipient: end the
            # empty message so the session stays in sync.
            conn.write(b".\r\n")
            await conn.read_replies(1)
        return failed

    # Complexity: the steps from the 354 to the reply to the dot, each way the transaction may end early.
    async def _data(self, msg: OutgoingMessage) -> OutgoingMessage | None:
        """After the 354: the durable "sending" mark, then body, dot and the
        next message's envelope in one write, then the reply to the dot.
        Returns the next message when its envelope went out too.

        (Writing the body while the mark was committed saved nothing
        measurable and cost a second send() per message, and the server a
        second wake-up.)"""
        pool, conn = self.pool, self.conn
        if pool.stopping:
            # Interrupted while its envelope was out: no body starts after a
            # Ctrl-C; closing without the dot makes the server discard it.
            await pool.retry(msg, "interrupted before the body", counted=False)
            raise SmtpProtocolError("interrupted: transaction abandoned before the body")
        await pool.hooks.before_dot(msg)
        withdrawn = pool.hooks.withdrawn(msg)
        if withdrawn is not None:
            # Withdrawn since its envelope went out: close the connection
            # without the final dot, so the server discards the transaction.
            await pool.final(msg, withdrawn)
            raise SmtpProtocolError("transaction abandoned before the final dot: the message was withdrawn")
        nxt = self._next() if self.pipelining else None
        payload = (msg.data if msg.stuffed else dot_stuff(msg.data)) + b".\r\n"
        if nxt is not None:
            found = precheck(conn, nxt, pool.hooks.withdrawn)
            if found is not None:
                await pool.final(nxt, found)
                nxt = None
            else:
                payload += b"".join(envelope_commands(conn, nxt, False))
        try:
            conn.write(payload)
        except ConnectionDropped as exc:  # the dot was not written: nothing was accepted
            await pool.retry(msg, f"connection lost before end of data: {exc}")
            if nxt is not None:
                await pool.retry(nxt, "connection lost", counted=False)
            raise
        end = await self._end_reply(msg, nxt)
        try:
            if await self._out_of_step(msg, end):
                raise SmtpProtocolError(f"{conn.params.where} answered the final dot with {end}; closing the"
                                        " connection")
            await self.answer(msg, end)
        except SmtpProtocolError:
            if nxt is not None:
                await pool.retry(nxt, str(end), counted=False)
            raise
        return nxt

    async def _end_reply(self, msg: OutgoingMessage, nxt: OutgoingMessage | None) -> Reply:
        conn, pool = self.conn, self.pool
        pool.awaiting_dot += 1
        try:
            await conn.drain()
            return (await conn.read_replies(1, max(DATA_END_TIMEOUT, conn.params.timeout)))[0]
        except asyncio.CancelledError:
            # Stopped now (a second Ctrl-C): the relay may have accepted the
            # message, so it is uncertain, as after a crash; never resent blindly.
            await pool.final(msg, Result(Status.UNCERTAIN, f"{KILLED_AFTER_DOT} (stopped by a second interrupt)"))
            if nxt is not None:
                await pool.retry(nxt, "interrupted", counted=False)
            raise
        except (PartialReplies, ReplyTimeout, ConnectionDropped) as exc:
            got = exc.replies if isinstance(exc, PartialReplies) else []
            if got:
                if not await self._out_of_step(msg, got[0]):
                    await self.outcome(msg, got[0])
            else:
                # The dot may have been accepted: never resend blindly.
                await self.pool.final(msg, Result(Status.UNCERTAIN, f"{LOST_AFTER_DOT} ({exc})"))
            if nxt is not None:
                await self.pool.retry(nxt, "connection lost", counted=False)
            raise
        finally:
            pool.awaiting_dot -= 1

    async def _out_of_step(self, msg: OutgoingMessage, reply: Reply) -> bool:
        """True, with ``msg`` recorded as uncertain, when ``reply`` cannot
        answer a final dot: only 2xx, 4xx and 5xx do. A 354 there is a second
        answer to DATA (the real one comes after it), a 1xx no SMTP reply at
        all: the relay may or may not have the message."""
        if 200 <= reply.code < 300 or 400 <= reply.code < 600:
            return False
        await self.pool.final(msg, Result(Status.UNCERTAIN, f"{self.conn.params.where} answered the final dot with"
                                          f" {reply}, which answers no end of data: its replies are out of step"))
        return True

    async def answer(self, msg: OutgoingMessage, reply: Reply) -> None:
        """Record the server's answer about ``msg`` and what it says about the relay.

        Raises to end the session when the relay asks for that: ``Reconnect``
        (this session has carried its share), ``Retire`` (too many
        connections: one fewer from now on) or ``ConnectionDropped`` (421).
        """
        pool = self.pool
        kind = reply_kind(reply) if not reply.positive else None
        if kind == "quota":
            # Nothing more goes through today: this one waits with the rest.
            await pool.final(msg, Result(Status.DEFERRED, str(reply)))
            pool.quota_used(reply)
        elif kind == "session" and self.conn.delivered > 0:
            # Not the message's fault: it goes first on a fresh session.
            await pool.retry(msg, str(reply), counted=False)
            raise Reconnect(str(reply))
        elif kind == "connections" and pool.working > 1:
            await pool.retry(msg, str(reply), counted=False)
            pool.refused(SmtpConnectFailed(str(reply), reply), others=pool.working - 1)
            raise Retire(str(reply))
        elif kind in ("rate", "session") and reply.transient:
            # "Too many recipients" on a fresh session is a rate, not a session limit.
            pool.slow_down(reply, msg)
            await pool.retry(msg, str(reply))
        else:
            await self.outcome(msg, reply)
        if reply.code == 421:
            raise ConnectionDropped(f"server closing: {reply}")

    async def outcome(self, msg: OutgoingMessage, reply: Reply) -> None:
        result = classify(reply)
        if result.status is Status.RETRY:
            if reply.code == 421:
                self.pool.pace.host_backoff()
            await self.pool.retry(msg, result.reply)
        else:
            if result.status is Status.SENT:
                self.pool.accepted_one(self.conn)
            await self.pool.final(msg, result)
