"""``mailcli doctor`` end to end: a project, a local DNS server, a local SMTP server."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Cli, set_smtp
from tests.dkimkeys import private_pem, public_b64
from tests.dnsserver import DnsServer, txt
from tests.smtpserver import SmtpServer


@pytest.fixture(scope="module")
def dns_server() -> Iterator[DnsServer]:
    key = public_b64(private_pem(2048))
    zones = {
        "good.example": f"""
@ MX 10 mail
mail A 192.0.2.25
@ TXT {txt("v=spf1 mx -all")}
mail2025._domainkey TXT {txt(f"v=DKIM1; k=rsa; p={key}")}
_dmarc TXT {txt("v=DMARC1; p=reject; rua=mailto:dmarc@good.example")}
""",
        "bare.example": "@ MX 10 mail.good.example.\n",
    }
    with DnsServer(zones) as server:
        yield server


def configure(root: Path, domain: str, *, key_mode: int = 0o600) -> Path:
    """Send as news@<domain>, signing with a 2048-bit key in a file."""
    key = root / "dkim.pem"
    key.write_bytes(private_pem(2048))
    key.chmod(key_mode)
    config = root / "mailcli.toml"
    text = config.read_text(encoding="utf-8").replace("news@example.org", f"news@{domain}")
    text = text.replace("news.example.org/", f"news.{domain}/").replace("@example.org", f"@{domain}")
    text += '\n[dkim]\nselector = "mail2025"\nprivate_key_file = "dkim.pem"\n'
    config.write_text(text, encoding="utf-8")
    return key


def lines_of(output: str) -> dict[str, str]:
    """The first line of each check, by check name."""
    found = {}
    for line in output.splitlines():
        parts = line.split(maxsplit=2)
        if len(parts) >= 2 and parts[0] in ("PASS", "WARN", "FAIL", "ERROR"):
            found[parts[1]] = line
    return found


def test_well_configured_domain_passes(cli: Cli, project: Path, dns_server: DnsServer) -> None:
    configure(project, "good.example")
    result = cli(
        "doctor", "--dns", "--nameserver", dns_server.address, env={"MAILCLI_SECRET": "x" * 32}
    )
    assert result.exit_code == 0, result.output
    lines = lines_of(result.stdout)
    for name in ("mx", "spf", "dkim", "dmarc", "alignment", "dkim-signing", "secret"):
        assert lines[name].startswith("PASS"), lines[name]
    assert "2048-bit RSA key" in lines["dkim"]


def test_bare_domain_fails_naming_spf_and_dmarc_with_records(
    cli: Cli, project: Path, dns_server: DnsServer
) -> None:
    configure(project, "bare.example")
    result = cli("doctor", "--dns", "--nameserver", dns_server.address)
    assert result.exit_code == 1
    lines = lines_of(result.stdout)
    assert lines["spf"].startswith("FAIL") and "bare.example has no SPF record" in lines["spf"]
    assert lines["dmarc"].startswith("FAIL")
    assert (
        'fix: bare.example. TXT "v=spf1 mx a:localhost -all"' not in result.stdout
    )  # no loopback relay
    assert 'fix: bare.example. TXT "v=spf1 mx -all"' in result.stdout
    assert (
        'fix: _dmarc.bare.example. TXT "v=DMARC1; p=none; rua=mailto:dmarc@bare.example"'
        in result.stdout
    )
    # The DKIM record to add carries the real public key of the configured private key.
    pem = private_pem(2048)
    assert (
        f'mail2025._domainkey.bare.example. TXT "v=DKIM1; k=rsa; p={public_b64(pem)}"'
        in result.stdout
    )
    assert "PRIVATE KEY" not in result.output


def test_json_lists_every_check(cli: Cli, project: Path, dns_server: DnsServer) -> None:
    configure(project, "bare.example")
    result = cli("doctor", "--dns", "--nameserver", dns_server.address, "--json")
    assert result.exit_code == 1
    checks = json.loads(result.stdout)
    by_name = {c["name"]: c for c in checks}
    assert set(checks[0]) == {"name", "verdict", "summary", "fix", "details"}
    assert by_name["spf"]["verdict"] == "fail"
    assert by_name["dmarc"]["fix"].startswith("_dmarc.bare.example. TXT")
    assert by_name["mx"]["details"]["mx"] == [{"preference": 10, "exchange": "mail.good.example"}]


def test_config_only_exits_0_with_warnings_and_says_how_to_run_the_rest(
    cli: Cli, project: Path
) -> None:
    configure(project, "good.example")
    result = cli("doctor")
    assert result.exit_code == 0, result.output
    lines = lines_of(result.stdout)
    assert lines["secret"].startswith("WARN") and "back it up" in lines["secret"]
    assert "mx" not in lines and "smtp" not in lines
    assert "mailcli doctor --dns --smtp" in result.stderr


def test_dkim_key_readable_by_others_fails(cli: Cli, project: Path) -> None:
    key = configure(project, "good.example", key_mode=0o644)
    result = cli("doctor")
    assert result.exit_code == 1
    lines = lines_of(result.stdout)
    assert lines["dkim-signing"].startswith("FAIL") and str(key) in lines["dkim-signing"]
    assert f"chmod 600 {key}" in result.stdout


def test_smtp_check_through_the_cli(cli: Cli, project: Path, tmp_path: Path) -> None:
    configure(project, "good.example")
    with SmtpServer(tls="starttls", cert_dir=tmp_path / "cert") as server:
        set_smtp(project, "127.0.0.1", server.port, security="starttls")
        refused = cli("doctor", "--smtp")
        set_smtp(
            project,
            "127.0.0.1",
            server.port,
            security="starttls",
            extra=[f'ca_file = "{server.ca_file}"'],
        )
        trusted = cli("doctor", "--smtp", "--json")
        assert server.messages == []
    assert refused.exit_code == 1
    assert lines_of(refused.stdout)["smtp-tls"].startswith("FAIL")
    assert "certificate not accepted" in refused.stdout
    assert trusted.exit_code == 0, trusted.output
    verdicts = {c["name"]: c["verdict"] for c in json.loads(trusted.stdout)}
    assert verdicts["smtp-tls"] == "pass" and verdicts["smtp"] == "pass"


@pytest.mark.parametrize(("nameserver", "words"), [
    ("127.0.0.1:99999", "port must be a number from 1 to 65535"),
    ("127.0.0.1:dns", "port must be a number from 1 to 65535"),
    ("[::1", "missing ']'"),
    ("[::1]53", "expected [ADDRESS]:PORT"),
    (":53", "no host given"),
])
def test_invalid_nameserver_is_a_usage_error(cli: Cli, project: Path, nameserver: str, words: str) -> None:
    result = cli("doctor", "--dns", "--nameserver", nameserver)
    assert result.exit_code == 2
    assert result.stderr.splitlines()[0] == f"Error: --nameserver {nameserver}: {words}"
    assert os.path.exists(project / "mailcli.toml")


def test_secret_and_database_readable_by_others_fail(cli: Cli, project: Path) -> None:
    secret = project / ".mailcli" / "secret"
    database = project / "mailcli.db"
    database.write_bytes(b"")
    database.chmod(0o644)
    secret.chmod(0o644)
    result = cli("doctor")
    assert result.exit_code == 1
    lines = lines_of(result.stdout)
    assert lines["secret"].startswith("FAIL") and "(mode 0644)" in lines["secret"]
    assert lines["file-modes"].startswith("FAIL") and str(database) in lines["file-modes"]
    assert f"fix: chmod 600 {database}" in result.stdout
    secret_text = secret.read_text().strip()
    assert secret_text not in result.output  # doctor never prints a secret


def test_short_secret_in_environment_fails(cli: Cli, project: Path) -> None:
    result = cli("doctor", env={"MAILCLI_SECRET": "short"})
    assert result.exit_code == 1
    assert lines_of(result.stdout)["secret"].startswith("FAIL")
    assert "MAILCLI_SECRET is too short" in result.stdout
    assert "short\n" not in result.stdout.replace("too short", "")
