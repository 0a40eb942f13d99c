"""A hand-written SMTP relay on 127.0.0.1 that breaks the protocol on purpose.

aiosmtpd (``tests/smtpserver.py``) always keeps its replies in step with the
commands; the faults here are the ones a broken relay or a middlebox makes:

* ``data_250=N``: the first N DATA commands are answered ``250`` instead of
  ``354`` (the body is never asked for);
* ``extra_reply=True``: every final dot gets two replies instead of one;
* ``hang_after_dot=True``: the final dot is never answered;
* ``mixed_reply=N``: the first N final dots are answered ``250-hmm`` then
  ``550 5.7.1 rejected`` (codes mixed in one reply), and those bodies refused;
* ``double_354=N``: the first N DATA commands are answered ``354`` twice, and
  their bodies refused (``550``) after the final dot;
* ``mail_199=N``: the first N MAIL commands are answered ``199 hmm``, a code
  no SMTP command has.

``bodies`` lists (recipient, message bytes) of every body that reached the
final dot, in order; ``wait_for_dots(n)`` waits until n have.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from tests.loopserver import LoopServer


class RawRelay:
    def __init__(self, *, data_250: int = 0, extra_reply: bool = False, hang_after_dot: bool = False,
                 mixed_reply: int = 0, double_354: int = 0, mail_199: int = 0) -> None:
        self.data_250 = data_250
        self.mixed_reply = mixed_reply
        self.double_354 = double_354
        self.mail_199 = mail_199
        self.extra_reply = extra_reply
        self.hang_after_dot = hang_after_dot
        self.bodies: list[tuple[str, bytes]] = []
        self._listener = LoopServer(self._handle)

    @property
    def port(self) -> int:
        return self._listener.port

    def __enter__(self) -> RawRelay:
        self._listener.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._listener.stop()

    def wait_for_dots(self, n: int, timeout: float = 30) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if len(self.bodies) >= n:
                return True
            time.sleep(0.02)
        return False

    def recipients(self) -> list[str]:
        return [rcpt for rcpt, _ in self.bodies]

    # Complexity: one branch per SMTP command, as a minimal server has.
    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        rcpt = ""
        try:
            writer.write(b"220 raw ESMTP\r\n")
            while True:
                line = await reader.readline()
                if not line:
                    return
                cmd = line.strip().upper()
                if cmd.startswith((b"EHLO", b"HELO")):
                    writer.write(b"250-raw\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250 PIPELINING\r\n")
                elif cmd.startswith(b"MAIL"):
                    if self.mail_199 > 0:
                        self.mail_199 -= 1
                        writer.write(b"199 hmm\r\n")
                    else:
                        writer.write(b"250 ok\r\n")
                elif cmd.startswith(b"RCPT"):
                    rcpt = line.strip()[8:].strip(b"<>").decode()
                    writer.write(b"250 ok\r\n")
                elif cmd == b"DATA":
                    if self.data_250 > 0:
                        self.data_250 -= 1
                        writer.write(b"250 ok whatever\r\n")
                    else:
                        refuse = self.double_354 > 0
                        self.double_354 -= refuse
                        writer.write(b"354 go ahead\r\n354 go ahead\r\n" if refuse else b"354 go ahead\r\n")
                        await writer.drain()
                        body = bytearray()
                        while (chunk := await reader.readline()) not in (b".\r\n", b""):
                            body += chunk
                        if not chunk:
                            return
                        if refuse:
                            writer.write(b"550 5.7.1 rejected\r\n")
                            await writer.drain()
                            continue
                        if self.mixed_reply > 0:
                            self.mixed_reply -= 1
                            writer.write(b"250-hmm\r\n550 5.7.1 rejected\r\n")
                            await writer.drain()
                            continue
                        self.bodies.append((rcpt, bytes(body)))
                        if self.hang_after_dot:
                            await asyncio.sleep(3600)
                        writer.write(b"250 queued\r\n250 queued again\r\n" if self.extra_reply else b"250 queued\r\n")
                elif cmd.startswith((b"RSET", b"NOOP")):
                    writer.write(b"250 ok\r\n")
                elif cmd.startswith(b"QUIT"):
                    writer.write(b"221 bye\r\n")
                    await writer.drain()
                    return
                else:
                    writer.write(b"500 what\r\n")
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()
