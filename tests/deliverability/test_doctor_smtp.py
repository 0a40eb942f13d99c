"""``doctor --smtp`` against a real aiosmtpd server on 127.0.0.1."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

from mailcli.deliverability.check import Check
from mailcli.deliverability.smtp_check import check_smtp
from tests.smtpserver import SmtpServer, free_port


class RefusingServer(SmtpServer):
    """Answers a wrong password with 535 (the shared fixture's authenticator
    returns ``handled=True`` on failure, so aiosmtpd sends no reply at all)."""

    def _authenticate(self, server, session, envelope, mechanism, auth_data):  # type: ignore[no-untyped-def]
        from aiosmtpd.smtp import AuthResult

        result = super()._authenticate(server, session, envelope, mechanism, auth_data)
        return result if result.success else AuthResult(success=False, handled=False)


def smtp_settings(port: int, **overrides: object) -> SimpleNamespace:
    values: dict[str, object] = {
        "host": "127.0.0.1",
        "port": port,
        "security": "none",
        "username": None,
        "password_env": "MAILCLI_SMTP_PASSWORD",
        "timeout": 10,
        "ca_file": None,
    }
    values.update(overrides)
    return SimpleNamespace(**values)


def verdicts(checks: list[Check]) -> dict[str, str]:
    return {check.name: check.verdict for check in checks}


def test_plain_local_server_reports_extensions_and_sends_nothing() -> None:
    with SmtpServer(size=10_000_000) as server:
        checks = check_smtp(smtp_settings(server.port))
        assert server.messages == []
    assert verdicts(checks) == {
        "smtp": "pass",
        "smtp-tls": "warn",  # plaintext is tolerated only to a loopback host
        "smtp-extensions": "pass",
        "smtp-auth": "pass",
    }
    extensions = {c.name: c for c in checks}["smtp-extensions"]
    assert extensions.details["size"] == 10_000_000
    assert extensions.details["smtputf8"] is True
    assert extensions.details["pipelining"] is True
    assert "SIZE 10000000" in extensions.summary


def test_starttls_not_offered_fails_with_the_setting_to_change() -> None:
    with SmtpServer() as server:
        checks = check_smtp(smtp_settings(server.port, security="starttls"))
    tls = {c.name: c for c in checks}["smtp-tls"]
    assert tls.verdict == "fail"
    assert "STARTTLS not offered" in tls.summary
    assert tls.fix and 'set security = "tls" and port = 465' in tls.fix


def test_self_signed_certificate_is_refused_unless_ca_file_trusts_it(tmp_path: Path) -> None:
    with SmtpServer(
        tls="starttls", cert_dir=tmp_path / "cert", auth={"news": "s3cret-pw"}
    ) as server:
        untrusted = check_smtp(
            smtp_settings(server.port, security="starttls", username="news"),
            environ={"MAILCLI_SMTP_PASSWORD": "s3cret-pw"},
        )
        trusted = check_smtp(
            smtp_settings(
                server.port, security="starttls", username="news", ca_file=server.ca_file
            ),
            environ={"MAILCLI_SMTP_PASSWORD": "s3cret-pw"},
        )
        # Never any credentials before the TLS handshake succeeded.
        assert [attempt[1] for attempt in server.auth_attempts] == ["news"]
    tls = {c.name: c for c in untrusted}["smtp-tls"]
    assert tls.verdict == "fail"
    assert "certificate not accepted" in tls.summary and "self-signed" in tls.summary
    assert tls.fix and "ca_file" in tls.fix
    assert "smtp-auth" not in verdicts(untrusted)

    assert verdicts(trusted) == {
        "smtp": "pass",
        "smtp-tls": "pass",
        "smtp-extensions": "pass",
        "smtp-auth": "pass",
    }
    by_name = {c.name: c for c in trusted}
    assert by_name["smtp-tls"].details["version"] in ("TLSv1.2", "TLSv1.3")
    assert "PLAIN" in by_name["smtp-extensions"].details["auth"]
    assert "s3cret-pw" not in json.dumps([c.to_dict() for c in untrusted + trusted])


def test_wrong_password_and_missing_password_variable_fail(tmp_path: Path) -> None:
    with RefusingServer(
        tls="starttls", cert_dir=tmp_path / "cert", auth={"news": "right"}
    ) as server:
        settings = smtp_settings(
            server.port, security="starttls", username="news", ca_file=server.ca_file
        )
        wrong = check_smtp(settings, environ={"MAILCLI_SMTP_PASSWORD": "wrong-pw"})
        unset = check_smtp(settings, environ={})
    auth = {c.name: c for c in wrong}["smtp-auth"]
    assert auth.verdict == "fail"
    assert "refused the login for news" in auth.summary
    assert "wrong-pw" not in json.dumps([c.to_dict() for c in wrong])
    missing = {c.name: c for c in unset}["smtp-auth"]
    assert missing.verdict == "fail"
    assert "MAILCLI_SMTP_PASSWORD is not set" in missing.summary


def test_implicit_tls_with_trusted_certificate_passes(tmp_path: Path) -> None:
    with SmtpServer(tls="tls", cert_dir=tmp_path / "cert") as server:
        trusted = check_smtp(smtp_settings(server.port, security="tls", ca_file=server.ca_file))
        untrusted = check_smtp(smtp_settings(server.port, security="tls"))
    assert verdicts(trusted)["smtp-tls"] == "pass"
    assert [(c.name, c.verdict) for c in untrusted] == [("smtp-tls", "fail")]


def test_unreachable_server_fails_naming_host_and_port() -> None:
    port = free_port()  # nothing listens there
    checks = check_smtp(smtp_settings(port))
    assert [(c.name, c.verdict) for c in checks] == [("smtp", "fail")]
    assert f"127.0.0.1:{port}" in checks[0].summary


def test_connection_limit_is_counted_before_the_first_campaign() -> None:
    # A relay that takes two connections at once: doctor opens as many as
    # [smtp] concurrency says, all at once, and reports how many it got.
    with SmtpServer(max_connections=2) as server:
        checks = check_smtp(smtp_settings(server.port, concurrency=4))
        assert server.messages == []
    limit = {c.name: c for c in checks}["smtp-connections"]
    assert limit.verdict == "warn"
    assert limit.summary.startswith("accepted 2 of 4 connections at once") and "too many connections" in limit.summary
    assert limit.fix and "concurrency = 2" in limit.fix
    assert limit.details["accepted"] == 2
    with SmtpServer() as server:
        roomy = {c.name: c for c in check_smtp(smtp_settings(server.port, concurrency=3))}
    assert roomy["smtp-connections"].verdict == "pass" and roomy["smtp-connections"].details["accepted"] == 3


def test_doctor_greets_like_send_and_says_what_smtputf8_means() -> None:
    # The same client as send: the EHLO name comes from [smtp] helo_name.
    with SmtpServer(smtputf8=False) as server:
        checks = {c.name: c for c in check_smtp(smtp_settings(server.port, helo_name="mail.acme.example"))}
    assert server.helo_names == ["mail.acme.example"]
    assert "EHLO as mail.acme.example" in checks["smtp"].summary
    assert checks["smtp-extensions"].details["smtputf8"] is False
    assert "non-ASCII local part cannot be sent" in checks["smtp-extensions"].summary
