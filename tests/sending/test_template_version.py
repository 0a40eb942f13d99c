"""Every message of a run comes from the template as the run checked it.

A send of a thousand messages or more renders in worker processes, which
compile the template themselves a moment after the sending process did. A
template saved in between (someone still editing it while the send starts)
must not give part of the run the new version: the run sends what its
preflight checked, and the edit applies from the next run.

Python runs ``sitecustomize`` in every worker process before it compiles
anything: here it saves the edit at exactly that moment, so the workers
always find the template changed since the sending process compiled it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mailcli.errors import ExitCode
from mailcli.send.pool import worker_count
from tests.conftest import Cli, set_smtp
from tests.sendhelpers import add_contacts, people
from tests.smtpserver import SmtpServer

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
