"""Every message of a run comes from the template as the run checked it.

A send of a thousand messages or more renders in worker processes, which
compile the template themselves a moment after the sending process did. A
template saved in between (someone still editing it while the send starts)
must not give part of the run the new version: the run sends what its
preflight checked, and the edit applies from the next run.

Python runs ``sitecustomize`` in every worker process before it compiles
anything: here it saves the edit at exactly that moment, so the workers
always find the template changed since the sending process compiled it.

Across runs a campaign is not tied to one version: a resume after an edit
sends the rest the version saved then, and must say so before it sends.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from mailcli.errors import ExitCode
from mailcli.send.pool import worker_count
from tests.conftest import Cli, Engine, set_smtp
from tests.sendhelpers import add_contacts, people
from tests.smtpserver import SmtpServer
from tests.terminal import Terminal

# Saves the edit in a render worker (started with --multiprocessing-fork)
# before it compiles the template: the file and the text come from the test;
# with EDIT_KEEP_TIME the file keeps its modification time, as `touch -d` or
# a copy that keeps times (`cp -p`, `rsync -t`) leaves it.
_EDIT_IN_WORKER = """\
import os, sys
if "--multiprocessing-fork" in sys.argv and os.environ.get("EDIT_TEMPLATE"):
    path = os.environ["EDIT_TEMPLATE"]
    before = os.stat(path)
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text.replace("VERSION-A", os.environ["EDIT_TO"]))
    if os.environ.get("EDIT_KEEP_TIME"):
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
"""


@pytest.fixture
def edited_in_workers(project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The footer partial, marked VERSION-A; render workers change the mark as they start."""
    if worker_count(1000) == 0:
        pytest.skip("render workers need two cores")
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(_EDIT_IN_WORKER, encoding="utf-8")
    monkeypatch.setenv("PYTHONPATH", str(hooks))
    footer = project / "templates" / "_partials" / "footer.html"
    footer.write_text("<p>VERSION-A</p>\n" + footer.read_text(encoding="utf-8"), encoding="utf-8")
    monkeypatch.setenv("EDIT_TEMPLATE", str(footer))
    add_contacts(project / "mailcli.db", "news", people(1000))
    return footer


@pytest.mark.parametrize("large", [False, True], ids=["small-partial", "large-partial-same-size-and-time"])
def test_a_template_saved_while_a_send_starts_leaves_the_run_on_the_version_it_checked(
        project: Path, cli: Cli, edited_in_workers: Path, monkeypatch: pytest.MonkeyPatch, large: bool) -> None:
    monkeypatch.setenv("EDIT_TO", "VERSION-B")  # as long as VERSION-A: the file keeps its size
    if large:
        # A partial past the size up to which the folder's fingerprint reads
        # files whole (larger ones it knows by size and time), edited so
        # that it keeps both.
        text = edited_in_workers.read_text(encoding="utf-8")
        edited_in_workers.write_text("{# " + "padding " * 10_000 + "#}\n" + text, encoding="utf-8")
        monkeypatch.setenv("EDIT_KEEP_TIME", "1")
    with SmtpServer() as server:
        set_smtp(project, "127.0.0.1", server.port)
        result = cli("send", "spring", "--template", "newsletter", "--list", "news", "--yes")
        assert result.exit_code == ExitCode.OK, result.output
        assert "VERSION-B" in edited_in_workers.read_text(encoding="utf-8")  # the workers did save the edit
        versions = {b"VERSION-A" in m.data for m in server.messages}
        assert len(server.messages) == 1000 and versions == {True}  # every message from the checked version
        # The next run compiles the template afresh: it sends the edit.
        monkeypatch.delenv("EDIT_TEMPLATE")
        add_contacts(project / "mailcli.db", "later", people(1, start=5000))
        later = cli("send", "autumn", "--template", "newsletter", "--list", "later", "--yes")
        assert later.exit_code == ExitCode.OK, later.output
        assert b"VERSION-B" in server.messages[-1].data


def test_a_dry_run_counts_the_version_it_checked_not_one_saved_meanwhile(
        project: Path, cli: Cli, edited_in_workers: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The version saved while the dry run starts fails for everyone; the one
    # it checked renders for everyone.
    monkeypatch.setenv("EDIT_TO", "{{ contact.no_such_field }}")
    result = cli("send", "spring", "--template", "newsletter", "--list", "news", "--dry-run", "--json")
    assert result.exit_code == ExitCode.OK, result.output
    summary = json.loads(result.stdout)
    assert (summary["rendered"], summary["failed"]) == (1000, 0)
    assert "no_such_field" in edited_in_workers.read_text(encoding="utf-8")


def test_a_template_saved_broken_while_a_send_starts_does_not_stop_the_run(
        project: Path, cli: Cli, edited_in_workers: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The workers cannot compile what was saved: the run stopped after the
    # hundred messages this process had rendered meanwhile, with the
    # template's error, although the version it checked was fine.
    monkeypatch.setenv("EDIT_TO", "{% if %}")
    with SmtpServer() as server:
        set_smtp(project, "127.0.0.1", server.port)
        result = cli("send", "spring", "--template", "newsletter", "--list", "news", "--yes")
        assert result.exit_code == ExitCode.OK, result.output
        assert len(server.messages) == 1000 and all(b"VERSION-A" in m.data for m in server.messages)
    assert "{% if %}" in edited_in_workers.read_text(encoding="utf-8")


# -- across runs: a campaign resumed after its template was edited -------------------------

_CHANGED = "has changed since the campaign's first run"


def _edit_footer(project: Path, mark: str) -> None:
    footer = project / "templates" / "_partials" / "footer.html"
    footer.write_text(f"<p>{mark}</p>\n" + footer.read_text(encoding="utf-8"), encoding="utf-8")


def _version_row(project: Path, engine: Engine) -> tuple[Any, ...]:
    ((row),) = engine.rows(project, "SELECT template_version, template_version_sent FROM campaigns"
                                    " WHERE name = 'spring'")
    return row


def test_a_campaign_resumed_after_its_template_was_edited_says_so_before_sending(
        project: Path, engine: Engine) -> None:
    engine.use(project)
    add_contacts(engine.location(project), "news", people(10))
    with SmtpServer() as server:
        set_smtp(project, "127.0.0.1", server.port)

        def send(*args: str) -> Any:
            return engine.mailcli(project, "send", "spring", "--template", "newsletter", "--list", "news", "--yes",
                                  *args)

        _edit_footer(project, "VERSION-A")
        first = send("--limit", "4")
        assert first.returncode == ExitCode.OK, first.stderr
        version, noted = _version_row(project, engine)
        assert re.fullmatch(r"[0-9a-f]{16}", version) and noted is None
        # Resumed as it was, or with another template of the folder saved meanwhile: no warning.
        (project / "templates" / "autumn").mkdir()
        (project / "templates" / "autumn" / "message.html").write_text("<p>Autumn</p>\n", encoding="utf-8")
        same = send("--limit", "2")
        assert same.returncode == ExitCode.OK and _CHANGED not in same.stderr, same.stderr
        assert len(server.messages) == 6

        _edit_footer(project, "VERSION-B")  # a partial the template includes
        dry = engine.mailcli(project, "send", "spring", "--dry-run")
        assert dry.returncode == ExitCode.OK, dry.stderr
        line = ("Warning: Campaign spring: template newsletter has changed since the campaign's first run: the 6"
                " message(s) sent so far came from the version of that run; the 4 left get the version saved now")
        assert line in dry.stderr.splitlines(), dry.stderr

        resumed = send("--limit", "2", "--json")
        assert resumed.returncode == ExitCode.OK, resumed.stderr  # said, not refused
        assert line in resumed.stderr.splitlines(), resumed.stderr
        changed = json.loads(resumed.stdout)["template_changed"]
        assert {k: changed[k] for k in ("template", "sent_from_first_version", "sent", "left")} == {
            "template": "newsletter", "sent_from_first_version": 6, "sent": 6, "left": 4}
        assert changed["first_version"] == version != changed["version"]
        assert len(server.messages) == 8 and all(b"VERSION-B" in m.data for m in server.messages[6:])
        assert _version_row(project, engine) == (version, 6)  # the first run's version stays

        # Every later run that sends another version than the first recipients got says it again.
        last = send()
        assert last.returncode == ExitCode.OK, last.stderr
        assert ("Warning: Campaign spring: template newsletter has changed since the campaign's first run: 6 of the"
                " 8 message(s) sent so far came from the version of that run; the 2 left get the version saved now"
                ) in last.stderr.splitlines(), last.stderr
        done = send("--json")
        assert done.returncode == ExitCode.OK and _CHANGED not in done.stderr, done.stderr  # nothing left to send
        assert json.loads(done.stdout)["template_changed"] is None
    assert len(server.messages) == 10 and len(set(server.recipients())) == 10


def test_a_campaign_started_before_mailcli_kept_the_version_resumes_without_a_warning(
        project: Path, engine: Engine) -> None:
    engine.use(project)
    add_contacts(engine.location(project), "news", people(5))
    with SmtpServer() as server:
        set_smtp(project, "127.0.0.1", server.port)
        first = engine.mailcli(project, "send", "spring", "--template", "newsletter", "--list", "news", "--yes",
                               "--limit", "2")
        assert first.returncode == ExitCode.OK, first.stderr
        # The database as the mailcli before the upgrade left it: a campaign
        # that sent two messages, and no column for the template's version.
        for sql in ("ALTER TABLE campaigns DROP COLUMN template_version",
                    "ALTER TABLE campaigns DROP COLUMN template_version_sent",
                    "DELETE FROM migrations WHERE name = 'm019_campaign_template_version'"):
            engine.execute(project, sql)
        _edit_footer(project, "VERSION-B")
        resumed = engine.mailcli(project, "send", "spring", "--yes", "--json")
        assert resumed.returncode == ExitCode.OK, resumed.stderr
        assert _CHANGED not in resumed.stderr and json.loads(resumed.stdout)["template_changed"] is None
    assert len(server.messages) == 5
    assert _version_row(project, engine) == (None, None)  # not known, and not guessed


def test_the_question_on_a_terminal_says_the_template_changed(project: Path) -> None:
    add_contacts(project / "mailcli.db", "news", people(5))
    with SmtpServer() as server:
        set_smtp(project, "127.0.0.1", server.port)
        first = Cli()("send", "spring", "--template", "newsletter", "--list", "news", "--yes", "--limit", "3")
        assert first.exit_code == ExitCode.OK, first.output
        _edit_footer(project, "VERSION-B")
        term = Terminal("send", "spring", cwd=project)
        question = term.read_until("[y/N]:")
        assert ("Campaign spring: template newsletter has changed since the campaign's first run: the 3 message(s)"
                " sent so far came from the version of that run; the 2 left get the version saved now") in question
        assert "Send 2 message(s) of campaign spring" in question
        term.type("y\n")
        assert term.wait() == ExitCode.OK, term.text
        assert term.text.count(_CHANGED) == 1  # asked, not said a second time
    assert len(server.messages) == 5
