"""The whole loop on real parts: send a campaign to aiosmtpd, feed back what the
world would answer (one-click POSTs to a running `mailcli serve`, DSNs, an ARF
complaint and a mailto request built from the messages really sent), then
check that `report` counts it and the next campaign leaves those people out.
"""

from __future__ import annotations

import email
import email.policy
import json
import mailbox
from pathlib import Path
from string import Template

import httpx

from tests.conftest import Cli, set_smtp
from tests.sendhelpers import add_contacts
from tests.serve.test_serve import Server
from tests.smtpserver import SmtpServer

DATA = Path(__file__).parent.parent / "data" / "feedback"
PEOPLE = ["ann@example.org", "bob@example.org", "cy@example.org", "dee@example.org", "eve@example.org",
          "fay@example.org", "gus@example.org"]


def _send(cli: Cli, campaign: str) -> None:
    result = cli("send", campaign, "--template", "newsletter", "--list", "news", "--yes")
    assert result.exit_code == 0, result.output


def _sent(server: SmtpServer) -> dict[str, email.message.EmailMessage]:
    out = {}
    for received in server.messages:
        msg = email.message_from_bytes(received.data, policy=email.policy.default)
        out[received.rcpt_tos[0]] = msg
    return out


def _report(cli: Cli, campaign: str) -> dict[str, int]:
    result = cli("report", campaign, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _urls(msg: email.message.EmailMessage) -> tuple[str, str]:
    https, mailto = [part.strip().strip("<>") for part in str(msg["List-Unsubscribe"]).split(",")]
    return https, mailto


def _headers_of(raw: bytes) -> str:
    return raw.split(b"\r\n\r\n", 1)[0].decode("ascii").replace("\r\n", "\n")


def _fill(name: str, **values: str) -> bytes:
    return Template((DATA / name).read_text()).safe_substitute(values).encode()


def test_one_click_from_real_messages_stops_the_next_campaign(project: Path, cli: Cli) -> None:
    add_contacts(project / "mailcli.db", "news", [{"email": p} for p in PEOPLE])
    with SmtpServer() as smtp:
        set_smtp(project, "127.0.0.1", smtp.port)
        _send(cli, "may")
        sent = _sent(smtp)
        assert set(sent) == set(PEOPLE)
        server = Server(project)
        try:
            for person in ("ann@example.org", "bob@example.org"):
                https, _ = _urls(sent[person])
                local = server.base + https.split("news.example.org", 1)[1]
                # what Gmail does (RFC 8058): a POST with the one-click body, no cookies, no redirects followed
                page = httpx.get(local)  # a link scanner first: changes nothing
                assert page.status_code == 200
                answer = httpx.post(local, data={"List-Unsubscribe": "One-Click"}, follow_redirects=False)
                assert answer.status_code == 200
        finally:
            assert server.stop() == 0
        assert _report(cli, "may")["unsubscribed"] == 2
        smtp.messages.clear()
        _send(cli, "june")
        assert set(_sent(smtp)) == set(PEOPLE) - {"ann@example.org", "bob@example.org"}


def test_bounces_from_real_messages_stop_the_next_campaign(project: Path, cli: Cli, tmp_path: Path) -> None:
    add_contacts(project / "mailcli.db", "news", [{"email": p} for p in PEOPLE])
    with SmtpServer() as smtp:
        set_smtp(project, "127.0.0.1", smtp.port)
        _send(cli, "may")
        raw = {r.rcpt_tos[0]: r.data for r in smtp.messages}
        sent = _sent(smtp)

        hard = _fill("postfix_550_511.eml", rcpt="ann@example.org", ref="e2e1", message_id=str(sent["ann@example.org"]["Message-ID"]),
                     list_unsubscribe=str(sent["ann@example.org"]["List-Unsubscribe"]))
        soft = _fill("postfix_delayed_422.eml", rcpt="bob@example.org", ref="e2e2",
                     message_id=str(sent["bob@example.org"]["Message-ID"]),
                     list_unsubscribe=str(sent["bob@example.org"]["List-Unsubscribe"]))
        # An ARF report whose third part is the complete message as it was received.
        complaint = (
            b"From: Feedback Loop <fbl@isp.example.net>\nTo: fbl@example.org\nSubject: Abuse report\n"
            b"Message-ID: <e2e3.arf@isp.example.net>\nMIME-Version: 1.0\n"
            b"Content-Type: multipart/report; report-type=feedback-report; boundary=\"b\"\n\n"
            b"--b\nContent-Type: text/plain\n\nAn abuse report.\n\n"
            b"--b\nContent-Type: message/feedback-report\n\nFeedback-Type: abuse\nUser-Agent: ISP-FBL/1.0\nVersion: 1\n\n"
            b"--b\nContent-Type: message/rfc822\n\n"
        ) + raw["cy@example.org"].replace(b"\r\n", b"\n") + b"\n--b--\n"
        _, mailto = _urls(sent["dee@example.org"])
        address, _, query = mailto.removeprefix("mailto:").partition("?subject=")
        unsubscribe = _fill("mailto_unsubscribe.eml", rcpt="dee@example.org", mailto_to=address, ref="e2e4",
                            subject=query.replace("%20", " "))
        # Gmail-shaped DMARC refusal returning only the headers (RET=HDRS), as received
        policy = _fill("gmail_5726_headers.eml", rcpt="eve@example.org", ref="e2e5",
                       headers=_headers_of(raw["eve@example.org"]))

        box = mailbox.mbox(str(tmp_path / "bounces.mbox"))
        for message in (hard, soft, complaint, unsubscribe, policy):
            box.add(message)
        box.flush()
        box.close()

        smtp.messages.clear()
        result = cli("bounces", str(tmp_path / "bounces.mbox"), "--json")
        assert result.exit_code == 0, result.output
        data = json.loads(result.stdout)
        assert (data["hard_bounces"], data["soft_bounces"], data["delays"], data["complaints"], data["unsubscribes"],
                data["policy_rejections"], data["unmatched"]) == (1, 0, 1, 1, 1, 1, 0)
        assert smtp.messages == []  # nothing is ever sent in reply
        again = json.loads(cli("bounces", str(tmp_path / "bounces.mbox"), "--json").stdout)
        assert again["already_processed"] == 5 and again["hard_bounces"] == 0

        report = _report(cli, "may")
        assert (report["bounced"], report["complained"], report["unsubscribed"]) == (1, 1, 1)

        _send(cli, "june")
        got = set(_sent(smtp))
        assert "bob@example.org" in got and "eve@example.org" in got  # the delayed one and 5.7.x stay
        assert got == set(PEOPLE) - {"ann@example.org", "cy@example.org", "dee@example.org"}
