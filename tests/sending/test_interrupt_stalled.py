"""Ctrl-C while the relay holds back its reply to a final dot: said at once,
and a second Ctrl-C stops the send now, the message left uncertain."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

from tests.conftest import set_smtp
from tests.rawsmtp import RawRelay
from tests.sendhelpers import add_contacts, deliveries, people


def _wait_for(lines: list[str], text: str, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if any(text in line for line in lines):
            return True
        time.sleep(0.05)
    return False


def test_second_interrupt_stops_a_send_stalled_after_the_dot(project: Path) -> None:
    add_contacts(project / "mailcli.db", "news", people(3))
    with RawRelay(hang_after_dot=True) as relay:
        set_smtp(project, "127.0.0.1", relay.port)
        env = {k: v for k, v in os.environ.items() if not k.startswith("MAILCLI_")}
        proc = subprocess.Popen(
            [sys.executable, "-m", "mailcli", "send", "spring", "--template", "newsletter", "--list", "news",
             "--yes", "--concurrency", "1"],
            cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.extend(iter(proc.stderr.readline, "")), daemon=True)
        reader.start()
        try:
            assert relay.wait_for_dots(1), "".join(lines)
            time.sleep(0.3)
            proc.send_signal(signal.SIGINT)
            # Said at once, while the run waits for the reply.
            assert _wait_for(lines, "Ctrl-C again stops now", 5), "".join(lines)
            assert any(f"waiting up to 600 s for 127.0.0.1:{relay.port}'s reply to 1 message(s)" in line
                       for line in lines), "".join(lines)
            time.sleep(1)
            assert proc.poll() is None  # still waiting for the reply
            assert len(relay.bodies) == 1  # no new message started
            started = time.monotonic()
            proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=10) == 130
            assert time.monotonic() - started < 5
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        reader.join(5)
    stderr = "".join(lines)
    assert "Traceback" not in stderr
    assert "1 message(s) uncertain" in stderr and "interrupted; state saved" in stderr, stderr
    statuses = deliveries(project / "mailcli.db", "spring")
    assert Counter(statuses.values()) == {"uncertain": 1, "pending": 2}
    assert statuses[relay.bodies[0][0]] == "uncertain"
