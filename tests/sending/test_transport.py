"""The SMTP transport against a real aiosmtpd server on 127.0.0.1 with faults."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from mailcli.errors import TransportError
from mailcli.send.outgoing import CallbackHooks, OutgoingMessage, Result, Status, dot_stuff
from mailcli.send.replies import parse_reply
from mailcli.send.smtp import ConnectParams
from mailcli.send.transport import SmtpTransport, TransportOptions
from tests.smtpserver import SmtpServer, free_port

BODY = b"From: a@example.org\r\nTo: x@example.net\r\nSubject: hi\r\n\r\nline one\r\n.dot line\r\n..two dots\r\n"


def run(
    port: int,
    recipients: list[str],
    *,
    security: str = "none",
    ca_file: Path | None = None,
    username: str | None = None,
    password: str | None = None,
    data: bytes = BODY,
    withdraw: object = None,
    **options: object,
) -> tuple[dict[str, list[object]], list[int]]:
    """Send one message per recipient; returns results by recipient and the
    keys that were marked 'sending' (before the dot)."""
    params = ConnectParams(
        host="127.0.0.1", port=port, security=security, username=username, password=password,
        timeout=5, ca_file=str(ca_file) if ca_file else None, local_hostname="client.example",
    )
    marked: list[int] = []

    async def before(msg: OutgoingMessage) -> None:
        marked.append(msg.key)

    hooks = CallbackHooks(before=before, withdraw=withdraw)  # type: ignore[arg-type]
    opts = {"concurrency": 2, "retry_window": 10.0, "backoff_base": 0.05, **options}
    transport = SmtpTransport(TransportOptions(params, **opts), hooks)  # type: ignore[arg-type]

    async def source():  # type: ignore[no-untyped-def]
        for i, rcpt in enumerate(recipients):
            yield OutgoingMessage(key=i, mail_from="bounce@example.org", rcpt_to=rcpt, data=data)

    async def main() -> None:
        await transport.open()
        await transport.run(source())

    asyncio.run(main())
    by_rcpt: dict[str, list[object]] = {}
    for key, result in hooks.results:
        by_rcpt.setdefault(recipients[key], []).append(result)
    return by_rcpt, marked


def final(results: dict[str, list[object]], rcpt: str) -> object:
    return results[rcpt][-1]


def test_every_message_once_with_pipelining_and_dot_stuffing() -> None:
    rcpts = [f"user{i}@example.net" for i in range(30)]
    with SmtpServer() as server:
        results, marked = run(server.port, rcpts)
    assert sorted(server.recipients()) == sorted(rcpts)
    assert all(final(results, r).status is Status.SENT for r in rcpts)  # type: ignore[attr-defined]
    assert sorted(marked) == list(range(30))
    # The server un-stuffs: what it stored is exactly what we meant to send.
    assert server.messages[0].data == BODY


def test_without_pipelining_the_same() -> None:
    rcpts = [f"user{i}@example.net" for i in range(5)]
    with SmtpServer(pipelining=False) as server:
        results, _ = run(server.port, rcpts)
    assert sorted(server.recipients()) == sorted(rcpts)


@pytest.mark.parametrize("reply", ["451 4.3.0 try later", "452 4.2.2 mailbox full", "421 4.7.0 too busy, closing", "DROP"])
def test_transient_reply_then_success_is_delivered_once(reply: str) -> None:
    rcpts = ["a@example.net", "b@example.net", "c@example.net"]
    with SmtpServer() as server:
        server.script("RCPT", "b@example.net", [reply, reply])
        results, _ = run(server.port, rcpts)
    assert sorted(server.recipients()) == sorted(rcpts)
    statuses = [r.status for r in results["b@example.net"]]  # type: ignore[attr-defined]
    assert statuses == [Status.RETRY, Status.RETRY, Status.SENT]


def test_transient_at_end_of_data_is_retried() -> None:
    with SmtpServer() as server:
        server.script("DATA", "a@example.net", ["451 4.3.0 queue full"])
        results, _ = run(server.port, ["a@example.net"])
    assert server.recipients() == ["a@example.net"]
    assert final(results, "a@example.net").status is Status.SENT  # type: ignore[attr-defined]


def test_retry_window_exhausted_is_deferred() -> None:
    with SmtpServer() as server:
        server.script("RCPT", "a@example.net", ["451 4.3.0 later"] * 50)
        results, _ = run(server.port, ["a@example.net", "b@example.net"], retry_window=0.3)
    res = final(results, "a@example.net")
    assert res.status is Status.DEFERRED and "451" in res.reply  # type: ignore[attr-defined]
    assert server.recipients() == ["b@example.net"]


def test_550_511_fails_as_hard_bounce_and_others_continue() -> None:
    with SmtpServer() as server:
        server.script("RCPT", "gone@example.net", ["550 5.1.1 no such user"])
        server.script("DATA", "full@example.net", ["552 5.2.2 over quota"])
        results, _ = run(server.port, ["gone@example.net", "full@example.net", "ok@example.net"])
    gone = final(results, "gone@example.net")
    assert gone.status is Status.FAILED and gone.hard_bounce and "5.1.1" in gone.reply  # type: ignore[attr-defined]
    full = final(results, "full@example.net")
    assert full.status is Status.FAILED and not full.hard_bounce  # type: ignore[attr-defined]
    assert server.recipients() == ["ok@example.net"]


def test_drop_after_the_dot_is_uncertain_not_resent() -> None:
    with SmtpServer() as server:
        server.script("DATA", "a@example.net", ["DROP"])
        results, marked = run(server.port, ["a@example.net", "b@example.net"])
    assert final(results, "a@example.net").status is Status.UNCERTAIN  # type: ignore[attr-defined]
    assert server.recipients() == ["b@example.net"]
    assert 0 in marked


def test_size_limit_fails_before_data() -> None:
    big = BODY + b"x" * 5000 + b"\r\n"
    with SmtpServer(size=2000) as server:
        results, marked = run(server.port, ["a@example.net"], data=big)
    res = final(results, "a@example.net")
    assert res.status is Status.FAILED and "2000" in res.reply  # type: ignore[attr-defined]
    assert marked == [] and server.messages == []


def test_server_down_names_host_and_port_after_the_retry_window() -> None:
    port = free_port()
    started = time.monotonic()
    with pytest.raises(TransportError, match=f"127.0.0.1:{port}.*could be kept for 0.5 s"):
        run(port, ["a@example.net"], retry_window=0.5, connect_backoff=0.05)
    assert time.monotonic() - started >= 0.5


def test_starttls_self_signed_refused_without_ca_file(tmp_path: Path) -> None:
    with SmtpServer(tls="starttls", cert_dir=tmp_path) as server:
        with pytest.raises(TransportError, match="not trusted"):
            run(server.port, ["a@example.net"], security="starttls")
        assert server.messages == []


def test_starttls_trusted_with_ca_file_and_auth(tmp_path: Path) -> None:
    with SmtpServer(tls="starttls", cert_dir=tmp_path, auth={"news": "s3cret-pw"}) as server:
        run(server.port, ["a@example.net"], security="starttls", ca_file=server.ca_file,
            username="news", password="s3cret-pw")
    assert server.recipients() == ["a@example.net"]
    assert server.auth_attempts and server.auth_attempts[0][1:] == ("news", "s3cret-pw")
    assert server.ehlo_count >= 2  # EHLO again after STARTTLS


def test_implicit_tls(tmp_path: Path) -> None:
    with SmtpServer(tls="tls", cert_dir=tmp_path) as server:
        run(server.port, ["a@example.net"], security="tls", ca_file=server.ca_file)
    assert server.recipients() == ["a@example.net"]


def test_wrong_password_is_transport_error_without_password(tmp_path: Path) -> None:
    with SmtpServer(tls="starttls", cert_dir=tmp_path, auth={"news": "right"}) as server:
        with pytest.raises(TransportError) as info:
            run(server.port, ["a@example.net"], security="starttls", ca_file=server.ca_file,
                username="news", password="wrong-Secret-42")
    assert "127.0.0.1" in str(info.value) and "wrong-Secret-42" not in str(info.value)
    assert server.messages == []


# The server here offers AUTH without TLS on purpose (aiosmtpd warns about it).
@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_no_starttls_offered_means_no_credentials_on_the_wire() -> None:
    # A plaintext server offering AUTH: with security="starttls" we stop
    # before sending anything.
    with SmtpServer(auth={"news": "pw"}) as server:
        with pytest.raises(TransportError, match="STARTTLS"):
            run(server.port, ["a@example.net"], security="starttls", username="news", password="pw")
    assert server.auth_attempts == []


def test_reply_parsing_multiline_and_enhanced() -> None:
    r = parse_reply([b"250-first", b"250-SIZE 100", b"250 PIPELINING"])
    assert r.code == 250 and r.text.split("\n") == ["first", "SIZE 100", "PIPELINING"]
    r = parse_reply([b"550 5.1.1 <x@y>: user unknown"])
    assert (r.code, r.enhanced, r.text) == (550, "5.1.1", "<x@y>: user unknown")
    assert parse_reply([b"250"]).text == ""


def test_dot_stuffing_and_line_endings() -> None:
    assert dot_stuff(b".a\r\nb\r\n.c") == b"..a\r\nb\r\n..c\r\n"
    assert dot_stuff(b"a\nb\r\n") == b"a\r\nb\r\n"


def test_nothing_sent_before_the_tls_handshake_and_injected_replies_refused() -> None:
    # A raw server: after STARTTLS it waits, records whatever else the client
    # sends in plaintext, then answers 220 plus an injected reply (RFC 3207
    # §5). The client must have sent nothing and must refuse the session.
    seen_after_starttls: list[bytes] = []

    async def scenario() -> None:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(b"220 raw.test ESMTP\r\n")
            while line := await reader.readline():
                if line.upper().startswith(b"EHLO"):
                    writer.write(b"250-raw.test\r\n250-PIPELINING\r\n250 STARTTLS\r\n")
                elif line.upper().startswith(b"STARTTLS"):
                    try:
                        extra = await asyncio.wait_for(reader.read(100), 0.3)
                    except asyncio.TimeoutError:
                        extra = b""
                    seen_after_starttls.append(extra)
                    writer.write(b"220 go ahead\r\n250 injected\r\n")
                    await writer.drain()
                    await asyncio.sleep(0.3)
                    writer.close()
                    return

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        params = ConnectParams(host="127.0.0.1", port=port, security="starttls", username="u", password="pw",
                               timeout=5, ca_file=None, local_hostname="client.example")
        transport = SmtpTransport(TransportOptions(params, concurrency=1), CallbackHooks())
        with pytest.raises(TransportError, match="before the TLS handshake"):
            await transport.open()
        server.close()
        await server.wait_closed()

    asyncio.run(scenario())
    assert seen_after_starttls == [b""]


def test_a_message_withdrawn_before_its_envelope_is_never_announced() -> None:
    rcpts = [f"user{i}@example.net" for i in range(10)]

    def withdraw(msg: OutgoingMessage) -> Result | None:
        return Result(Status.SKIPPED, "opted out") if msg.rcpt_to == "user3@example.net" else None

    with SmtpServer() as server:
        results, marked = run(server.port, rcpts, withdraw=withdraw)
    assert final(results, "user3@example.net") == Result(Status.SKIPPED, "opted out")
    assert "user3@example.net" not in server.rcpts_seen and 3 not in marked
    assert sorted(server.recipients()) == sorted(r for r in rcpts if r != "user3@example.net")


def test_a_message_withdrawn_after_its_envelope_is_abandoned_before_the_dot() -> None:
    # Asked once before MAIL FROM (still wanted) and once before the dot
    # (withdrawn meanwhile): the connection closes without the dot.
    rcpts = [f"user{i}@example.net" for i in range(10)]
    asked: list[int] = []

    def withdraw(msg: OutgoingMessage) -> Result | None:
        if msg.rcpt_to != "user3@example.net":
            return None
        asked.append(msg.key)
        return Result(Status.SKIPPED, "erased") if len(asked) >= 2 else None

    with SmtpServer() as server:
        results, marked = run(server.port, rcpts, withdraw=withdraw, concurrency=1)
    assert final(results, "user3@example.net") == Result(Status.SKIPPED, "erased")
    assert "user3@example.net" in server.rcpts_seen and 3 in marked  # its envelope went out
    assert "user3@example.net" not in server.recipients()
    assert sorted(server.recipients()) == sorted(r for r in rcpts if r != "user3@example.net")
