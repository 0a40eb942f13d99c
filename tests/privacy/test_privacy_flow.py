"""Privacy through the real commands: send to a local SMTP server, then export, restrict, erase, purge, restore."""

from __future__ import annotations

import json
import zipfile
from datetime import timedelta
from pathlib import Path

import pytest

from mailcli import clock
from tests.conftest import Cli, set_smtp
from tests.privacy_support import freeze, remnants
from tests.sendhelpers import add_contacts, people
from tests.smtpserver import SmtpServer

ZEB = {"email": "zebedeus.quiggleworth@example.net", "first_name": "Zebedeus", "last_name": "Quiggleworth",
       "city": "Quiggleton"}
KEYS = ("audience", "sent", "failed", "deferred", "pending", "uncertain", "bounced", "unsubscribed", "complained")


def _report(cli: Cli) -> dict[str, int]:
    result = cli("report", "spring", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    return {key: data[key] for key in KEYS}


def test_send_then_every_right_and_the_retention_policy(project: Path, cli: Cli,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    add_contacts(project / "mailcli.db", "news", [ZEB, *people(4)])
    assert cli("privacy", "restrict", "person0@example.net", "--reason", "disputes accuracy").exit_code == 0
    with SmtpServer() as server:
        set_smtp(project, "127.0.0.1", server.port)
        sent = cli("send", "spring", "--template", "newsletter", "--list", "news", "--yes")
        assert sent.exit_code == 0, sent.output
    received = set(server.recipients())
    assert ZEB["email"] in received and "person0@example.net" not in received  # art. 18: never sent to
    totals = _report(cli)
    assert totals["sent"] == 4

    # Art. 15: the export holds the very Message-ID the server received.
    assert cli("backup", "create").exit_code == 0
    assert cli("privacy", "export", ZEB["email"], "-o", "zeb.zip").exit_code == 0
    with zipfile.ZipFile(project / "zeb.zip") as archive:
        doc = json.loads(archive.read("subject.json"))
    [delivery] = doc["deliveries"]
    wire = next(m for m in server.messages if m.rcpt_tos == [ZEB["email"]])
    assert delivery["message_id"].encode() in wire.data and delivery["status"] == "sent"

    # Art. 17: gone from every file, totals unchanged, and a restore does not bring them back.
    backup = json.loads(cli("--json", "backup", "list").stdout)[0]["path"]
    assert cli("privacy", "erase", ZEB["email"], "--yes").exit_code == 0
    assert remnants(project, ZEB["email"], "Zebedeus", "Quiggleworth", "Quiggleton") == []
    assert _report(cli) == totals
    restored = cli("backup", "restore", backup, "--yes")
    assert restored.exit_code == 0 and "1 re-erasure" in restored.stdout
    assert remnants(project, ZEB["email"], "Zebedeus", "Quiggleworth") == []
    assert _report(cli) == totals

    # Retention: fourteen months on, the per-message log goes and the totals stay.
    freeze(monkeypatch, clock.to_iso(clock.now() + timedelta(days=14 * 31)))
    purged = cli("--json", "privacy", "purge")
    assert purged.exit_code == 0, purged.output
    assert json.loads(purged.stdout)["send_log"] == 3
    assert _report(cli) == totals
    assert cli("privacy", "audit", "--verify").exit_code == 0
