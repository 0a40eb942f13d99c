"""`send --dry-run` of an audience large enough to be shared with render workers."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import pytest

from mailcli.errors import ExitCode
from mailcli.send.pool import worker_count
from tests.conftest import Cli
from tests.sendhelpers import add_contacts, people

AUDIENCE = 1500


def test_a_large_dry_run_counts_every_message_and_names_the_contacts_that_would_fail(project: Path, cli: Cli) -> None:
    members = people(AUDIENCE)
    for n in (5, 700, 1400):  # a name that would break the Subject line
        members[n]["first_name"] = f"Eve{n}\r\nBcc: everyone@example.org"
    add_contacts(project / "mailcli.db", "news", members)
    result = cli("send", "spring", "--template", "newsletter", "--list", "news", "--dry-run")
    assert result.exit_code == ExitCode.PARTIAL, result.output
    assert f"{AUDIENCE - 3} message(s) rendered, 3 would fail" in result.stderr
    assert result.stderr.count("contains a carriage return") == 3, result.stderr  # each named, wherever built
    assert sqlite3.connect(project / "mailcli.db").execute("SELECT count(*) FROM deliveries").fetchone() == (0,)


def test_a_template_error_in_a_large_dry_run_is_the_real_runs_one_line_error(project: Path, cli: Cli) -> None:
    # An invalid template is exit 1 with its file and line, in a dry run as
    # in the real run (whose preflight stops it), never "N would fail" and 3.
    add_contacts(project / "mailcli.db", "news", people(AUDIENCE))
    html = project / "templates" / "newsletter" / "message.html"
    html.write_text(html.read_text(encoding="utf-8").replace("{% if contact.first_name %}",
                                                             "{% if contact.frist_name %}", 1), encoding="utf-8")
    dry = cli("send", "spring", "--template", "newsletter", "--list", "news", "--dry-run")
    real = cli("send", "spring", "--template", "newsletter", "--list", "news", "--yes")
    assert dry.exit_code == real.exit_code == ExitCode.ERROR, dry.output
    errors = [row for row in dry.stderr.splitlines() if row.startswith("Error:")]
    assert errors == [row for row in real.stderr.splitlines() if row.startswith("Error:")]
    assert len(errors) == 1 and "templates/newsletter/message.html:" in errors[0] and "frist_name" in errors[0]
    assert "would fail" not in dry.output and "Warning" not in dry.stderr
    conn = sqlite3.connect(project / "mailcli.db")
    assert conn.execute("SELECT count(*) FROM campaigns").fetchone() == (0,)
    assert conn.execute("SELECT count(*) FROM deliveries").fetchone() == (0,)


def test_the_audience_is_large_enough_for_workers_where_there_are_cores() -> None:
    # The tests above rehearse the path with render workers on any machine with two cores or more.
    import os

    if len(os.sched_getaffinity(0)) >= 2:
        assert worker_count(AUDIENCE) >= 1


def test_a_dry_run_on_a_terminal_counts_what_it_rendered_not_what_it_sent(project: Path) -> None:
    # Its progress bar said "0 sent, 0 failed, 0/s" all along: nothing is
    # sent in a dry run, so the label counts the messages rendered.
    from tests.terminal import Terminal

    add_contacts(project / "mailcli.db", "news", people(AUDIENCE))
    term = Terminal("send", "spring", "--template", "newsletter", "--list", "news", "--dry-run", cwd=project)
    assert term.wait(timeout=120) == 0, term.text
    labels = re.findall(r"spring: (\d+) rendered, 0 would fail, \d+/s", term.text)
    assert labels and int(labels[-1]) > 0, term.text
    assert " sent, " not in term.text.replace("nothing was sent", "") and "Sending spring" not in term.text


def test_a_dry_run_bar_counts_the_messages_that_would_fail_as_done(project: Path) -> None:
    # The bar stood at the messages rendered only: with every tenth contact
    # failing it read "900 rendered, 100 would fail ... 900/1500" for the
    # thousandth message, and never reached its end.
    from tests.terminal import Terminal

    members = people(AUDIENCE)
    for n in range(0, AUDIENCE, 10):
        members[n]["first_name"] = f"Eve{n}\r\nBcc: everyone@example.org"
    add_contacts(project / "mailcli.db", "news", members)
    term = Terminal("send", "spring", "--template", "newsletter", "--list", "news", "--dry-run", cwd=project)
    assert term.wait(timeout=120) == ExitCode.PARTIAL, term.text
    frames = re.findall(r"spring: (\d+) rendered, (\d+) would fail, \d+/s\D+?(\d+)/(\d+)", term.text)
    assert any(int(failed) for _, failed, _, _ in frames), term.text
    for rendered, failed, done, total in frames:
        assert (int(done), int(total)) == (int(rendered) + int(failed), AUDIENCE), frames


def test_a_render_worker_killed_in_a_dry_run_says_to_run_it_again_not_that_it_goes_on(
        project: Path, tmp_path: Path) -> None:
    # A dry run sends nothing and keeps nothing: run again, it starts over.
    # It said "it goes on where this run stopped", the words of a real send.
    import os
    import subprocess
    import sys

    if worker_count(AUDIENCE) == 0:
        pytest.skip("render workers need two cores")
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(  # every render worker is killed as it starts
        "import os, signal, sys\n"
        "if '--multiprocessing-fork' in sys.argv:\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n", encoding="utf-8")
    add_contacts(project / "mailcli.db", "news", people(AUDIENCE))
    result = subprocess.run(
        [sys.executable, "-m", "mailcli", "send", "spring", "--template", "newsletter", "--list", "news", "--dry-run"],
        cwd=project, env={**os.environ, "PYTHONPATH": str(hooks)}, capture_output=True, text=True, timeout=120)
    assert result.returncode == ExitCode.ERROR, result.stderr
    assert "Error: A render worker process ended unexpectedly (killed by signal 9)\n" in result.stderr
    assert "Hint: run the same command again\n" in result.stderr and "goes on" not in result.stderr
