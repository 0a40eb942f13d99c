"""``mailcli demo``: the whole flow in a temporary project, no config, no network.

A local SMTP sink (aiosmtpd, on a free port of 127.0.0.1, in this process)
stands in for the relay. Each step runs the real ``mailcli`` command in a
subprocess against the temporary project — exactly what a user would type —
and the caller prints what happened. The core never prints: it yields
``DemoStep`` results.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

# Shipped inside the package so `mailcli demo` works from any install;
# examples/contacts.csv in the source tree is a link to it.
EXAMPLE_CSV = Path(__file__).resolve().parent / "scaffold" / "contacts.csv"


@dataclass(frozen=True, slots=True)
class DemoStep:
    title: str
    command: str  # as a user would type it
    exit_code: int
    output: str  # stdout + stderr of the step


@dataclass
class Sink:
    """An in-process SMTP server that keeps what it receives."""

    port: int = 0
    messages: list[tuple[str, list[str], bytes]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _controller: object = None

    def start(self) -> Sink:
        from aiosmtpd.controller import Controller

        sink = self

        class Handler:
            async def handle_DATA(self, server: object, _session: object, envelope: object) -> str:
                with sink._lock:
                    sink.messages.append((envelope.mail_from, list(envelope.rcpt_tos),  # type: ignore[attr-defined]
                                          bytes(envelope.original_content)))  # type: ignore[attr-defined]
                return "250 2.0.0 accepted by the demo sink"

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = int(s.getsockname()[1])
        controller = Controller(Handler(), hostname="127.0.0.1", port=self.port, server_hostname="demo.sink",
                                ident="mailcli demo sink")
        controller.start()
        self._controller = controller
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()  # type: ignore[attr-defined]
            self._controller = None


def _point_smtp_at(config: Path, port: int) -> None:
    """Rewrite [smtp] of the scaffolded mailcli.toml for the local sink."""
    lines = []
    section = ""
    for line in config.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if stripped.startswith("["):
            section = stripped
        if section == "[smtp]" and re.match(r"^(host|port|security|rate|username)\s*=", stripped):
            continue
        lines.append(line)
        if stripped == "[smtp]":
            lines += ['host = "127.0.0.1"', f"port = {port}", 'security = "none"       # the demo sink only; never elsewhere',
                      'rate = "0"']
    config.write_text("\n".join(lines) + "\n", encoding="utf-8")


# Complexity: the demo's steps in order, each stopping the run the moment it fails.
def run_demo(workdir: Path | None = None) -> Iterator[DemoStep]:
    """Run every step; yields each as it finishes. Stops at the first failure."""
    holder = tempfile.TemporaryDirectory(prefix="mailcli-demo-") if workdir is None else None
    base = Path(holder.name) if holder is not None else workdir
    assert base is not None
    project = base / "demo-project"
    sink = Sink().start()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILCLI_")}
    env["NO_COLOR"] = "1"
    env.setdefault("COLUMNS", "120")

    def run(title: str, *args: str, shown: str | None = None) -> DemoStep:
        proc = subprocess.run([sys.executable, "-m", "mailcli", *args], cwd=project if project.exists() else base,
                              env=env, capture_output=True, text=True)
        return DemoStep(title, "mailcli " + (shown or " ".join(args)), proc.returncode,
                        (proc.stdout + proc.stderr).strip())

    try:
        step = run("Create a project", "init", str(project), "--name", "Demo Bakery", shown="init demo-project")
        yield step
        if step.exit_code:
            return
        _point_smtp_at(project / "mailcli.toml", sink.port)
        csv = project / "contacts.csv"
        csv.write_bytes(EXAMPLE_CSV.read_bytes())
        # Customers from the shop's records: no opt-in time, so the basis is stated.
        (project / "customers.csv").write_text(
            "email,first_name\nmarie.claes@example.be,Marie\npieter.bos@example.nl,Pieter\n", encoding="utf-8")
        person = "anna.devries@example.nl"
        later = (datetime.now(timezone.utc) + timedelta(days=400)).strftime("%Y-%m-%d")
        steps = [
            ("Import the example CSV (delimiter, encoding and headers detected)",
             ("import", "contacts.csv", "--list", "news")),
            ("Import customers: the file shows no consent, so the lawful basis is stated (the soft opt-in)",
             ("import", "customers.csv", "--list", "news", "--basis", "customer")),
            ("Lists and member counts", ("lists",)),
            ("Lint the template (what CI would run)", ("lint", "newsletter")),
            ("Preview the text part for the sample contact", ("render", "newsletter", "--format", "text")),
            ("Dry run: render every message, send nothing", (
                "send", "demo-issue", "--template", "newsletter", "--list", "news", "--dry-run")),
            ("Send for real, to the local sink", (
                "send", "demo-issue", "--template", "newsletter", "--list", "news", "--yes")),
            ("Run it again: nothing is sent twice", ("send", "demo-issue", "--yes")),
            ("Report", ("report", "demo-issue")),
            ("Export everything held about one person (GDPR art. 15/20): JSON, CSV and a letter in a ZIP",
             ("privacy", "export", person, "--reason", "demo")),
            ("What the retention policy would remove in 13 months (nothing changes)",
             ("privacy", "purge", "--dry-run", "--as-of", later)),
            ("Apply the retention policy, as cron would each night", ("privacy", "purge")),
            ("The audit log of access to personal data", ("privacy", "audit")),
        ]
        for title, args in steps:
            step = run(title, *args)
            yield step
            if step.exit_code not in (0, 3):
                return
        if sink.messages:
            _, rcpts, data = sink.messages[0]
            head = data.split(b"\r\n\r\n", 1)[0].decode("ascii", "replace")
            yield DemoStep(
                f"The sink received {len(sink.messages)} message(s); the headers of the one to {rcpts[0]}",
                "", 0, head,
            )
    finally:
        sink.stop()
        if holder is not None:
            holder.cleanup()
