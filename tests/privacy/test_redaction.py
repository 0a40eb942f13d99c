"""Status output names people only masked; data commands show them in full."""

from __future__ import annotations

from pathlib import Path

from ..conftest import Cli, set_smtp
from ..smtpserver import SmtpServer

PEOPLE = ["zebedeus.quiggleworth@example.org", "ann.visser@example.nl", "bob.smit@example.com"]


def test_send_and_import_output_masks_addresses(project: Path, cli: Cli) -> None:
    rows = "email,first_name\n" + "".join(f"{p},Zebedeus\n" for p in PEOPLE)
    (project / "c.csv").write_text(rows, encoding="utf-8")
    imported = cli("import", "c.csv", "--list", "news", "--basis", "customer")
    with SmtpServer() as server:
        server.script("DATA", PEOPLE[0], ["550 5.1.1 no such user"])
        set_smtp(project, "127.0.0.1", server.port)
        sent = cli("send", "c1", "--template", "newsletter", "--list", "news", "--yes")
    assert sent.exit_code == 3
    for result in (imported, sent):
        for person in PEOPLE:
            assert person not in result.output
    assert "z***@example.org" in sent.stderr
    failed = cli("report", "c1", "--failed")
    assert PEOPLE[0] in failed.output and "5.1.1" in failed.output


def test_a_reason_that_repeats_the_address_is_masked_too(project: Path, cli: Cli) -> None:
    # The server's reply and the message builder both name the address; the
    # status line masks it there as well.
    from tests.sendhelpers import add_contacts

    add_contacts(project / "mailcli.db", "news", [{"email": PEOPLE[0]}, {"email": "renée@example.org"}])
    with SmtpServer() as server:
        server.script("RCPT", PEOPLE[0], [f"550 5.1.1 <{PEOPLE[0]}>: Recipient address rejected"])
        set_smtp(project, "127.0.0.1", server.port)
        sent = cli("send", "c1", "--template", "newsletter", "--list", "news", "--yes")
    assert sent.exit_code == 3
    assert PEOPLE[0] not in sent.output and "renée@example.org" not in sent.output
    assert "z***@example.org: 550 5.1.1 <z***@example.org>: Recipient address rejected" in sent.stderr

    html = project / "templates" / "newsletter" / "message.html"
    html.write_text(html.read_text(encoding="utf-8").replace("<h1>", "<h1>{{ contact.city }}", 1), encoding="utf-8")
    stopped = cli("send", "c2", "--template", "newsletter", "--list", "news", "--yes")
    assert stopped.exit_code == 1 and "nothing was sent" in stopped.stderr
    assert PEOPLE[0] not in stopped.output and "renée@example.org" not in stopped.output
