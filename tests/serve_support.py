"""A real `mailcli serve` process and a real HTTP client, shared by the serve tests."""

from __future__ import annotations

import os
import queue
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from mailcli import tokens
from mailcli.config import load_settings


class Server:
    """`mailcli serve --port 0` in a subprocess; the port is read from its first line."""

    def __init__(self, root: Path, *args: str, env: dict[str, str] | None = None, prelude: str | None = None) -> None:
        """``prelude``: Python run in the server process before mailcli starts
        (to shorten one of its times, where a test cannot wait for the real one)."""
        full_env = dict(os.environ)
        full_env.update(env or {})
        start = ["-m", "mailcli"] if prelude is None else \
            ["-c", f"{prelude}\nfrom mailcli.app import main\nraise SystemExit(main())"]
        self.proc = subprocess.Popen(
            [sys.executable, *start, "serve", "--host", "127.0.0.1", "--port", "0", *args],
            cwd=root, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.log: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()
        first = self._first_line()
        match = re.search(r"http://127\.0\.0\.1:(\d+)(/\S*)", first)
        assert match, "".join(self.log)
        self.port = int(match.group(1))
        self.url = f"http://127.0.0.1:{match.group(1)}{match.group(2)}"
        self.base = f"http://127.0.0.1:{match.group(1)}"

    def _first_line(self) -> str:
        while True:
            line = self.lines.get(timeout=60)
            if not line or "Serving " in line:
                return line

    def _pump(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.log.append(line)
            self.lines.put(line)
        self.lines.put("")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=30)


def one_click(url: str, token: str, *, multipart: bool = False, timeout: float = 60,
              headers: dict[str, str] | None = None) -> httpx.Response:
    if multipart:
        return httpx.post(url, params={"t": token}, files={"List-Unsubscribe": (None, "One-Click")},
                          follow_redirects=False, timeout=timeout, headers=headers)
    return httpx.post(url, params={"t": token}, data={"List-Unsubscribe": "One-Click"}, follow_redirects=False,
                      timeout=timeout, headers=headers)


def tokens_by_email(root: Path, list_name: str = "news") -> dict[str, str]:
    """Every contact's unsubscribe token for one list, read from the database file."""
    settings = load_settings(root / "mailcli.toml")
    conn = sqlite3.connect(settings.project.database)
    try:
        (list_id,) = conn.execute("SELECT id FROM lists WHERE name = ?", (list_name,)).fetchone()
        rows = conn.execute("SELECT email_key, uid FROM contacts").fetchall()
    finally:
        conn.close()
    secret = settings.secret()
    return {key: tokens.make_unsubscribe_token(secret, uid, list_id) for key, uid in rows}


def member_statuses(root: Path, list_name: str = "news") -> dict[str, str]:
    """email key -> membership status on one list, read from the database file."""
    conn = sqlite3.connect(load_settings(root / "mailcli.toml").project.database)
    try:
        return dict(conn.execute(
            "SELECT c.email_key, m.status FROM memberships m JOIN contacts c ON c.id = m.contact_id"
            " JOIN lists l ON l.id = m.list_id WHERE l.name = ?", (list_name,)).fetchall())
    finally:
        conn.close()


def wait_until(check: Callable[[], bool], timeout: float = 60, what: str = "the condition") -> None:
    """Poll ``check`` until it holds, or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)
