"""Whoever left by any channel stays out: re-importing the same CSV resubscribes no one."""

from __future__ import annotations

import json
import mailbox
from pathlib import Path

import httpx

from mailcli.store import open_store
from tests.conftest import Cli
from tests.feedback.test_bounces import build, mailto_request
from tests.feedback.test_feedback_support import Seeded, add_campaign
from tests.serve.test_serve import Server

PEOPLE = ["ann@example.org", "bob@example.org", "cy@example.org", "dee@example.org", "eve@example.org",
          "fay@example.org"]


def _seeded(project: Path) -> Seeded:
    from mailcli.config import load_settings

    settings = load_settings(project / "mailcli.toml")
    store = open_store(settings.project.database)
    conn = store.conn
    lists = {name: int(i) for i, name in conn.execute("SELECT id, name FROM lists")}
    contacts = {email: int(i) for i, email in conn.execute("SELECT id, email FROM contacts")}
    uids = {email: uid for uid, email in conn.execute("SELECT uid, email FROM contacts")}
    return Seeded(settings, store, lists, contacts, uids)


def test_reimport_after_every_kind_of_opt_out_resubscribes_no_one(project: Path, cli: Cli, tmp_path: Path) -> None:
    csv = tmp_path / "people.csv"
    csv.write_text("email,first_name\n" + "".join(f"{p},{p[:3].title()}\n" for p in PEOPLE)
                   + "zed@example.org,Zed\n")
    # zed asked never to be mailed before ever being imported
    assert cli("unsubscribe", "zed@example.org").exit_code == 0
    first = cli("import", str(csv), "--list", "news", "--basis", "customer", "--json")
    assert first.exit_code == 0, first.output
    assert json.loads(first.stdout)["imported"] == 6 and json.loads(first.stdout)["suppressed"] == 1

    s = _seeded(project)
    _, mids = add_campaign(s, "may")
    server = Server(project)  # ann: one-click
    try:
        assert httpx.post(server.url, params={"t": s.token("ann@example.org")},
                          data={"List-Unsubscribe": "One-Click"}).status_code == 200
    finally:
        assert server.stop() == 0
    box = mailbox.mbox(str(tmp_path / "b.mbox"))
    box.add(build("postfix_550_511.eml", rcpt="bob@example.org", message_id=mids["bob@example.org"],
                  list_unsubscribe=""))  # bob: hard bounce
    box.add(build("yahoo_arf_abuse.eml", rcpt="cy@example.org", message_id=mids["cy@example.org"],
                  list_unsubscribe=""))  # cy: complaint
    box.add(mailto_request(s, "dee@example.org"))  # dee: mailto
    box.flush()
    box.close()
    assert cli("bounces", str(tmp_path / "b.mbox"), "-q").exit_code == 0
    assert cli("unsubscribe", "eve@example.org", "--list", "news").exit_code == 0  # eve: by hand

    before = {p: s.membership(p) for p in PEOPLE}
    again = cli("import", str(csv), "--list", "news", "--basis", "customer", "--json")
    assert again.exit_code == 0, again.output
    counts = json.loads(again.stdout)
    assert counts["suppressed"] == 6 and counts["imported"] == 0
    assert {p: s.membership(p) for p in PEOPLE} == before  # the opt-out records are untouched
    # opted out (one-click, complaint, mailto, by hand) stay unsubscribed; the hard bounce stays bounced
    assert [p for p in PEOPLE if s.membership(p)[0] == "subscribed"] == ["bob@example.org", "fay@example.org"]
    assert s.contact("bob@example.org")["status"] == "bounced"  # type: ignore[index]
    assert s.contact("cy@example.org")["status"] == "complained"  # type: ignore[index]
    assert s.contact("zed@example.org") is None
