"""Running mailcli on a real pseudo-terminal, as a person at a keyboard would.

``Terminal`` starts ``python -m mailcli`` with stdin, stdout and stderr on the
slave side of a pty, so every ``isatty()`` check in mailcli (prompts, progress
bars, colours) sees a terminal. ``read_until`` collects what the screen
received, with a deadline; ``type`` answers a question (``"\\x03"`` is Ctrl-C:
the pty is the child's controlling terminal).
"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import subprocess
import sys
import termios
import time
from pathlib import Path

# Variables that make mailcli think it runs in CI, where no bar is drawn.
_CI_VARIABLES = ("CI", "GITHUB_ACTIONS", "GITLAB_CI", "BUILDKITE")


def _controlling_terminal() -> None:
    """In the child: a session of its own with the pty as its terminal, so Ctrl-C is SIGINT."""
    os.setsid()
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


class Terminal:
    def __init__(self, *args: str, cwd: Path, env: dict[str, str] | None = None, columns: int = 200) -> None:
        master, slave = pty.openpty()
        full_env = {k: v for k, v in os.environ.items() if k not in _CI_VARIABLES}
        full_env.update({"TERM": "xterm-256color", "COLUMNS": str(columns), "LINES": "50"})
        full_env.update(env or {})
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mailcli", *args], cwd=cwd, env=full_env,
            stdin=slave, stdout=slave, stderr=slave, close_fds=True, preexec_fn=_controlling_terminal,
        )
        os.close(slave)
        self.master = master
        self.screen = b""

    def _read(self, timeout: float) -> bool | None:
        """Read what is waiting: True if something came, None if nothing did, False at the end."""
        ready, _, _ = select.select([self.master], [], [], timeout)
        if not ready:
            return None
        try:
            chunk = os.read(self.master, 65536)
        except OSError:  # the child closed the terminal
            return False
        if not chunk:
            return False
        self.screen += chunk
        return True

    def read_until(self, text: str | re.Pattern[str], timeout: float = 60) -> str:
        """Everything received up to and including ``text`` (or the first match
        of a compiled pattern); fails at the deadline."""
        deadline = time.monotonic() + timeout
        pattern = text if isinstance(text, re.Pattern) else re.compile(re.escape(text))
        while (found := pattern.search(self.text)) is None:
            if time.monotonic() > deadline or self._read(0.1) is False:
                raise AssertionError(f"{text!r} did not appear; the screen got:\n{self.text}")
        return self.text[: found.end()]

    def type(self, text: str) -> None:
        os.write(self.master, text.encode("utf-8"))

    def wait_for_read(self, timeout: float = 30) -> None:
        """Wait until the process sleeps in a read of its terminal, as a person
        waits for the cursor before pressing a key.

        Needed before a Ctrl-C: the terminal turns it into a SIGINT at once,
        and a SIGINT that lands after the question is printed but before the
        read begins only sets Python's flag; the read then blocks and nothing
        looks at the flag until a next key (a window of microseconds at a
        keyboard, but a slow test machine widens it). Letters and Ctrl-D wait
        in the terminal's queue and need no such care. Where ``/proc`` does
        not say what a process sleeps in, waits half a second instead.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                wchan = Path(f"/proc/{self.proc.pid}/wchan").read_text().strip()
                state = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                time.sleep(0.5)
                return
            if state == "S" and wchan in ("wait_woken", "n_tty_read"):
                return
            if state == "S" and wchan in ("", "0"):  # a kernel that does not tell
                time.sleep(0.5)
                return
            self._read(0.02)
        raise AssertionError(f"the process never waited for a key; the screen got:\n{self.text}")

    def wait(self, timeout: float = 60) -> int:
        """Read until the process ends; its exit code."""
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            self._read(0.1)
        while self._read(0.05):
            pass
        code = self.proc.wait(timeout=max(deadline - time.monotonic(), 1))
        os.close(self.master)
        return code

    @property
    def text(self) -> str:
        return self.screen.decode("utf-8", "replace")
