"""An asyncio server on 127.0.0.1 run by an event loop in a thread of its own,
for test servers that speak a protocol by hand (``rawsmtp.RawRelay``, the
IMAP tests' proxy in front of Dovecot)."""

from __future__ import annotations

import asyncio
import ssl
import threading
from collections.abc import Awaitable, Callable

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class LoopServer:
    """``handle`` for each connection to a free port of 127.0.0.1 (``port``), from ``start`` to ``stop``."""

    def __init__(self, handle: Handler, *, context: ssl.SSLContext | None = None, limit: int = 1 << 16) -> None:
        self.port = 0
        self.server: asyncio.base_events.Server | None = None
        self._handle, self._context, self._limit = handle, context, limit
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()
        assert self._ready.wait(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)

        async def listen() -> None:
            self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0, ssl=self._context,
                                                     limit=self._limit)
            self.port = int(self.server.sockets[0].getsockname()[1])

        self._loop.run_until_complete(listen())
        self._ready.set()
        self._loop.run_forever()

    def stop(self) -> None:
        """Stop listening, cancel every connection's task, and end the loop and its thread."""
        async def shut() -> None:
            if self.server is not None:
                self.server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(shut(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()
