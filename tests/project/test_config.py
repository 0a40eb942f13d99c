"""Configuration: discovery like git, and every problem named with key and file (exit 4)."""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path

import pytest

from mailcli.config import find_config, load_settings, parse_duration, parse_rate
from mailcli.errors import ConfigError, ExitCode

from ..conftest import Cli, run_mailcli


def _replace(root: Path, old: str, new: str) -> None:
    path = root / "mailcli.toml"
    text = path.read_text(encoding="utf-8")
    assert old in text, old
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


@pytest.mark.parametrize(
    ("old", "new", "key"),
    [
        ("port = 587", 'port = "587"', "smtp.port"),
        ("port = 587", "port = 70000", "smtp.port"),
        ('security = "starttls"', 'security = "ssl"', "smtp.security"),
        ('rate = "20/s"', 'rate = "fast"', "smtp.rate"),
        ('unconfirmed = "30d"', 'unconfirmed = "30 days please"', "retention.unconfirmed"),
        ('url = "https://news.example.org/unsubscribe"', 'url = "http://news.example.org/unsubscribe"', "unsubscribe.url"),
        ('from = ', 'frm = ', "sender.frm"),
        ('password_env = "MAILCLI_SMTP_PASSWORD"', 'password = "hunter2"', "smtp.password"),
        ('host = "localhost"', 'host = "smtp.example.org"\nsecurity_ = 1', "smtp.security_"),
        ("concurrency = 4", "concurrency = 0", "smtp.concurrency"),
        ("port = 8025", "port = 0", "serve.port"),
        ("port = 8025", 'port = "8025"', "serve.port"),
        ('host = "127.0.0.1"', 'host = ""', "serve.host"),
        ('host = "127.0.0.1"', "host = 127", "serve.host"),
        ('trusted_proxies = ["127.0.0.1", "::1"]', 'trusted_proxies = ["127.0.0.1", "nginx"]', "serve.trusted_proxies"),
        ('trusted_proxies = ["127.0.0.1", "::1"]', 'trusted_proxies = "127.0.0.1"', "serve.trusted_proxies"),
        ('trusted_proxies = ["127.0.0.1", "::1"]', "trusted_proxies = [1]", "serve.trusted_proxies"),
        ('trusted_proxies = ["127.0.0.1", "::1"]', 'trusted_proxie = []', "serve.trusted_proxie"),
    ],
)
def test_broken_config_exits_4_naming_key_and_file(project: Path, cli: Cli, old: str, new: str, key: str) -> None:
    _replace(project, old, new)
    result = cli("config", "show")
    assert result.exit_code == ExitCode.CONFIG
    assert key in result.stderr
    assert "mailcli.toml" in result.stderr
    assert "Traceback" not in result.output
    assert "hunter2" not in result.output
    assert len([line for line in result.stderr.splitlines() if line.startswith("Error:")]) == 1


def test_serve_section_defaults_and_networks(project: Path) -> None:
    import ipaddress

    settings = load_settings(project / "mailcli.toml")
    assert (settings.serve.host, settings.serve.port) == ("127.0.0.1", 8025)
    assert [str(n) for n in settings.serve.trusted_proxies] == ["127.0.0.1/32", "::1/128"]
    _replace(project, 'trusted_proxies = ["127.0.0.1", "::1"]', 'trusted_proxies = ["10.0.0.0/8", "2001:db8::1"]')
    settings = load_settings(project / "mailcli.toml")
    assert settings.serve.trusted_proxies == (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("2001:db8::1"))


def test_missing_required_key(project: Path, cli: Cli) -> None:
    text = (project / "mailcli.toml").read_text(encoding="utf-8")
    (project / "mailcli.toml").write_text(text.replace('from = "', '# from = "'), encoding="utf-8")
    result = cli("config", "show")
    assert result.exit_code == 4
    assert "sender.from: missing" in result.stderr


def test_invalid_toml_is_one_line_in_a_subprocess(project: Path) -> None:
    (project / "mailcli.toml").write_text("[project\nname = 1\n", encoding="utf-8")
    proc = run_mailcli("config", "show", cwd=project)
    assert proc.returncode == 4
    assert "invalid TOML" in proc.stderr and "mailcli.toml" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_plaintext_smtp_only_to_localhost(project: Path) -> None:
    _replace(project, 'security = "starttls"', 'security = "none"')
    assert load_settings(project / "mailcli.toml").smtp.security == "none"
    _replace(project, 'host = "localhost"', 'host = "smtp.example.org"')
    with pytest.raises(ConfigError, match="smtp.security"):
        load_settings(project / "mailcli.toml")


def test_found_like_git_from_a_subfolder(project: Path) -> None:
    sub = project / "templates" / "deep"
    sub.mkdir(parents=True)
    assert find_config(directory=sub) == project / "mailcli.toml"
    os.chdir(sub)
    assert find_config() == project / "mailcli.toml"


def test_dash_c_config_and_env(project: Path, tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    os.chdir(elsewhere)
    assert cli("config", "show").exit_code == ExitCode.CONFIG
    assert cli("-C", str(project), "config", "show").exit_code == 0
    assert cli("config", "show", "-C", str(project)).exit_code == 0  # global options after the command too
    assert cli("--config", str(project / "mailcli.toml"), "config", "show").exit_code == 0
    monkeypatch.setenv("MAILCLI_CONFIG", str(project / "mailcli.toml"))
    assert cli("config", "show").exit_code == 0
    monkeypatch.setenv("MAILCLI_CONFIG", str(elsewhere / "nope.toml"))
    result = cli("config", "show")
    assert result.exit_code == ExitCode.CONFIG and "MAILCLI_CONFIG" in result.stderr


def test_relative_paths_are_relative_to_the_file(project: Path, tmp_path: Path) -> None:
    _replace(project, 'database = "mailcli.db"', 'database = "data/news.db"')
    os.chdir(tmp_path)
    settings = load_settings(project / "mailcli.toml")
    assert settings.project.database == project / "data" / "news.db"


def test_secret_from_env_or_file(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load_settings(project / "mailcli.toml")
    assert len(settings.secret()) == 64
    monkeypatch.setenv("MAILCLI_SECRET", "x" * 32)
    assert load_settings(project / "mailcli.toml").secret() == b"x" * 32
    monkeypatch.delenv("MAILCLI_SECRET")
    (project / ".mailcli" / "secret").unlink()
    with pytest.raises(ConfigError, match="MAILCLI_SECRET"):
        load_settings(project / "mailcli.toml").secret()


def test_idn_sender_domain_becomes_a_label(project: Path) -> None:
    _replace(project, 'from = "', 'from = "Bücher <news@bücher.example>"\n# was "')
    assert load_settings(project / "mailcli.toml").sender.from_address == "news@xn--bcher-kva.example"


def test_durations_and_rates() -> None:
    moment = datetime(2026, 3, 31, 12, tzinfo=timezone.utc)
    assert parse_duration("13mo").before(moment) == datetime(2025, 2, 28, 12, tzinfo=timezone.utc)
    assert parse_duration("2y").before(moment).year == 2024
    assert parse_duration("30d").before(moment) == datetime(2026, 3, 1, 12, tzinfo=timezone.utc)
    assert parse_duration("2m").seconds() == 120
    assert parse_rate("20/s") == 20 and parse_rate("600/m") == 10 and parse_rate("0") == 0
    for bad in ("x", "10/d", "-1"):
        with pytest.raises(ValueError):
            parse_rate(bad)


def test_config_show_spells_defaults_as_the_file_would(project: Path, cli: Cli) -> None:
    # Without rate and retry_window in the file, the defaults (no ceiling, two
    # minutes) are shown as a person writes them; a value is shown as written.
    config = project / "mailcli.toml"
    lines = config.read_text(encoding="utf-8").splitlines()
    config.write_text("\n".join(line for line in lines if not line.startswith(("rate =", "retry_window ="))) + "\n",
                      encoding="utf-8")
    shown = cli("config", "show")
    assert shown.exit_code == 0, shown.output
    assert 'rate = "0"' in shown.stdout and 'retry_window = "2m"' in shown.stdout
    config.write_text(config.read_text(encoding="utf-8").replace("[smtp]\n", '[smtp]\nrate = "1200/m"\nretry_window = "90s"\n'),
                      encoding="utf-8")
    shown = cli("config", "show")
    assert 'rate = "1200/m"' in shown.stdout and 'retry_window = "90s"' in shown.stdout


# ------------------------------------------------------------ ranges


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("timeout = 30", "timeout = nan", "smtp.timeout: must be more than 0 and at most 3600 seconds (got nan)"),
        ("timeout = 30", "timeout = inf", "smtp.timeout: must be more than 0 and at most 3600 seconds (got inf)"),
        ("timeout = 30", "timeout = -1", "smtp.timeout: must be more than 0 and at most 3600 seconds (got -1)"),
        ("timeout = 30", "timeout = 1e308", "(got 1e+308)"),
        ('rate = "20/s"', 'rate = "inf/s"', 'smtp.rate: must be a rate like "20/s", "600/m" or "3600/h": 0 (no limit)'
                                            ' or from "1/h" to "10000/s" (got \'inf/s\')'),
        ('rate = "20/s"', "rate = inf", 'smtp.rate: must be 0 (no limit) or from "1/h" to "10000/s" (got inf)'),
        ('rate = "20/s"', "rate = nan", "(got nan)"),
        ('rate = "20/s"', "rate = -5", "(got -5)"),
        ('rate = "20/s"', 'rate = "20000/s"', "(got '20000/s')"),
        ('rate = "20/s"', 'rate = "1/d"', "(got '1/d')"),
        ("concurrency = 4", "concurrency = 99999999999999999999", "smtp.concurrency: must be from 1 to 64"),
        ('retry_window = "2m"', 'retry_window = "99999999999y"', "smtp.retry_window: must be a duration such as 90s,"
                                                                  " 30m, 12h, 30d, 12w, 13mo or 2y, from 0 to 24h"),
        ('retry_window = "2m"', 'retry_window = "25h"', "from 0 to 24h (got '25h')"),
        ('inactive = "2y"', 'inactive = "101y"', "retention.inactive: must be a duration such as 90s, 30m, 12h, 30d,"
                                                 " 12w, 13mo or 2y, from 0 to 100y (got '101y')"),
        ('inactive = "2y"', 'inactive = "9' + "9" * 400 + 'd"', "retention.inactive: must be a duration"),
        ('inactive = "2y"', 'inactive = "-1d"', "retention.inactive: must be a duration"),
        ('inactive = "2y"', 'inactive = "\u0663d"', "retention.inactive: must be a duration"),  # an Arabic-Indic 3
        ("[retention]", "[bounces]\nsoft_limit = -3\n[retention]", "bounces.soft_limit: must be from 1 to 1000 (got -3)"),
        ("port = 8025", "port = 0", "serve.port: must be from 1 to 65535 (got 0)"),
        ('host = "127.0.0.1"', 'host = "999.1.1.1"', "serve.host: must be a host name or an IP address (got '999.1.1.1')"),
        ("port = 8025", "port = 8025.5", "serve.port: must be an integer, not float 8025.5"),
        ("concurrency = 4", "concurrency = 4\ndomain_concurrency = 65", "smtp.domain_concurrency: must be from 0 to 64"),
        ('database = "mailcli.db"', 'database = "."', "project.database: is a folder, not a database file"),
    ],
)
def test_numbers_and_durations_out_of_range_name_the_range(
        project: Path, cli: Cli, old: str, new: str, message: str) -> None:
    _replace(project, old, new)
    result = cli("config", "show")
    assert result.exit_code == ExitCode.CONFIG, result.output
    assert message in result.stderr.splitlines()[0]


def test_retention_of_99999999999y_stops_purge_with_the_range_not_an_overflow(project: Path) -> None:
    _replace(project, 'inactive = "2y"', 'inactive = "99999999999y"')
    proc = run_mailcli("privacy", "purge", "--dry-run", cwd=project)
    assert proc.returncode == 4
    assert proc.stderr.splitlines()[0] == (
        "Error: mailcli.toml: retention.inactive: must be a duration such as 90s, 30m, 12h, 30d, 12w, 13mo or 2y,"
        " from 0 to 100y (got '99999999999y')")


def test_send_rate_inf_per_second_is_refused_with_the_range(project: Path, cli: Cli) -> None:
    result = cli("send", "c", "--template", "newsletter", "--list", "news", "--rate", "inf/s", "--dry-run")
    assert result.exit_code == ExitCode.USAGE
    assert '--rate \'inf/s\': must be a rate like "20/s"' in result.stderr


@pytest.mark.parametrize("text", ["a = " + "[" * 5000 + "]" * 5000, "a = " + "{b = " * 5000 + "1" + "}" * 5000])
def test_toml_nested_5000_deep_is_invalid_toml_not_a_recursion_error(project: Path, text: str) -> None:
    (project / "mailcli.toml").write_text(text + "\n", encoding="utf-8")
    proc = run_mailcli("config", "show", cwd=project)
    assert proc.returncode == 4
    assert proc.stderr.splitlines()[0] == "Error: mailcli.toml: invalid TOML: values nested too deeply"


def test_a_2_mib_config_file_is_refused_unread(project: Path) -> None:
    with (project / "mailcli.toml").open("a", encoding="utf-8") as handle:
        handle.write("#" * (2 * 1024 * 1024) + "\n")
    proc = run_mailcli("config", "show", cwd=project)
    assert proc.returncode == 4
    assert proc.stderr.splitlines()[0] == "Error: mailcli.toml: larger than 1024 KiB, which no configuration is"


def test_durations_have_a_maximum_and_moments_before_the_year_1_are_the_year_1() -> None:
    assert parse_duration("100y").text == "100y"
    assert parse_duration("36500d").amount == 36500
    for bad in ("101y", "1300mo", "5300w", "99999999999y"):
        with pytest.raises(ValueError, match="from 0 to 100y"):
            parse_duration(bad)
    assert parse_duration("2y").before(datetime(1, 6, 1, tzinfo=timezone.utc)) == datetime.min.replace(
        tzinfo=timezone.utc)
