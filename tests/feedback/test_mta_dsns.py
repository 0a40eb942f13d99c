"""DSNs as Postfix, Exim, Sendmail, Exchange/Office 365 and Gmail write them.

The fixtures in tests/data/feedback follow each MTA's documented format:
Exim's generic ``Status: 5.0.0`` with the real code in the diagnostic,
Sendmail's forwarded address (``Original-Recipient`` is the address mailcli
sent to, ``Final-Recipient`` the one it was forwarded to), Exchange's
``Undeliverable:``/``Delivery delayed:``/``Relayed:`` reports, Gmail's
report that returns no original and names it by ``X-Original-Message-ID``,
and headers-only returns (``text/rfc822-headers``, RET=HDRS).

What RFC 3464 says decides: ``failed`` with an address code suppresses;
``delayed``, ``relayed`` and ``expanded`` are events on the delivery that
``report --failed`` and ``contacts show`` list, never bounces, and never
count towards ``[bounces] soft_limit``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mailcli.feedback import reports
from tests.conftest import Cli
from tests.feedback.test_bounces import build, list_unsubscribe, write_maildir
from tests.feedback.test_feedback_support import add_campaign, seed

# fixture, what it is, its code, the contact it is built for
CASES = [
    ("postfix_550_511.eml", "hard", "5.1.1", "ann@example.org"),
    ("postfix_delayed_422.eml", "delayed", "4.2.2", "bob@example.org"),
    ("exim_550_failed.eml", "hard", "5.1.1", "cy@example.org"),
    ("exim_delayed.eml", "delayed", "4.0.0", "dee@example.org"),
    ("sendmail_550_forwarded.eml", "hard", "5.1.1", "eve@example.org"),
    ("sendmail_delayed.eml", "delayed", "4.4.1", "fay@example.org"),
    ("sendmail_expanded.eml", "expanded", "2.0.0", "gus@example.org"),
    ("exchange_5110_failed.eml", "hard", "5.1.10", "hal@example.org"),
    ("exchange_delayed.eml", "delayed", "4.4.7", "ida@example.org"),
    ("exchange_relayed.eml", "relayed", "2.0.0", "jon@example.org"),
    ("gmail_511_no_original.eml", "hard", "5.1.1", "kim@example.org"),
    ("gmail_delayed.eml", "delayed", "4.3.0", "lou@example.org"),
]
PEOPLE = [case[3] for case in CASES]
FORWARDED_TO = "eve.smith@old-isp.example"


def _fill(name: str, rcpt: str, message_id: str, unsubscribe: str = "<https://x.example/u?t=abc>") -> bytes:
    return build(name, rcpt=rcpt, message_id=message_id, list_unsubscribe=unsubscribe, forward=FORWARDED_TO)


@pytest.mark.parametrize(("name", "kind", "code", "rcpt"), CASES)
def test_each_mta_report_reads_as_rfc_3464_says(name: str, kind: str, code: str, rcpt: str) -> None:
    dsn = reports.parse_dsn(reports.parse_bytes(_fill(name, rcpt, "<m.1@example.org>")))
    assert dsn is not None
    (recipient,) = dsn.recipients
    assert (recipient.verdict.kind, recipient.verdict.code) == (kind, code)
    assert recipient.verdict.is_failure == (kind == "hard") and recipient.verdict.is_notice == (kind != "hard")
    assert dsn.original.message_id == "<m.1@example.org>"  # Gmail's without its original too
    if name == "sendmail_550_forwarded.eml":
        assert (recipient.original_recipient, recipient.final_recipient) == (rcpt, FORWARDED_TO)
    else:
        assert recipient.final_recipient == rcpt


def test_a_mailbox_of_every_mta_suppresses_exactly_the_failed(project: Path, cli: Cli, tmp_path: Path) -> None:
    s = seed(project, PEOPLE)
    campaign, mids = add_campaign(s, "may")
    messages = [_fill(name, rcpt, mids[rcpt], list_unsubscribe(s, rcpt)) for name, _, _, rcpt in CASES]
    maildir = write_maildir(tmp_path / "Maildir", messages)

    result = cli("bounces", str(maildir), "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert {k: data[k] for k in ("hard_bounces", "soft_bounces", "delays", "relayed", "expanded", "unmatched")} == {
        "hard_bounces": 5, "soft_bounces": 0, "delays": 5, "relayed": 1, "expanded": 1, "unmatched": 0}
    failed = {rcpt for _, kind, _, rcpt in CASES if kind == "hard"}
    for rcpt in PEOPLE:
        assert s.suppressions(rcpt) == ({"*": "bounced"} if rcpt in failed else {}), rcpt

    # The notices are the deliveries' news: listed with the failures, not as failures.
    report = json.loads(cli("report", "may", "--failed", "--json").stdout)
    notices = {(n["email"], n["kind"], n["status"]) for n in report["notices"]}
    assert notices == {(rcpt, kind, code) for _, kind, code, rcpt in CASES if kind != "hard"}
    assert report["bounced"] == 5 and "delayed" not in {f["status"] for f in report["failures"]}
    text = cli("report", "may", "--failed")
    assert "delivery notices" in text.stdout and "4.4.7" in text.stdout
    shown = json.loads(cli("contacts", "show", "ida@example.org", "--json").stdout)
    [delay] = [h for h in shown["history"] if h["kind"] == "delayed"]
    assert delay["campaign"] == "may" and "4.4.7" in delay["note"]


def test_delay_notices_of_many_campaigns_never_reach_the_soft_limit(project: Path, cli: Cli, tmp_path: Path) -> None:
    s = seed(project, ["bob@example.org"])
    messages = []
    for name in ("c1", "c2", "c3", "c4"):  # soft_limit is 3
        _, mids = add_campaign(s, name)
        messages.append(_fill("postfix_delayed_422.eml", "bob@example.org", mids["bob@example.org"]))
        messages.append(_fill("exchange_delayed.eml", "bob@example.org", mids["bob@example.org"]))
    data = json.loads(cli("bounces", str(write_maildir(tmp_path / "Maildir", messages)), "--json").stdout)
    assert data["delays"] == 8 and data["soft_bounces"] == 0 and data["suppressed"] == 0
    assert s.suppressions("bob@example.org") == {}
    assert s.contact("bob@example.org")["status"] == "active"  # type: ignore[index]


def test_a_forwarded_address_is_known_by_its_original_recipient(project: Path, cli: Cli, tmp_path: Path) -> None:
    # No Message-ID quoted, and the address forwarded to is another
    # contact's: the report is about the address mailcli sent to.
    s = seed(project, ["eve@example.org", FORWARDED_TO])
    add_campaign(s, "may")
    raw = _fill("sendmail_550_forwarded.eml", "eve@example.org", "")
    raw = raw.replace(b"Message-ID: \n", b"").replace(b"\nList-Unsubscribe: <https://x.example/u?t=abc>", b"")
    data = json.loads(cli("bounces", str(write_maildir(tmp_path / "Maildir", [raw])), "--json").stdout)
    assert data["hard_bounces"] == 1
    assert s.suppressions("eve@example.org") == {"*": "bounced"}
    assert s.suppressions(FORWARDED_TO) == {}
