"""The configuration part of ``mailcli doctor``: what the file alone can tell.

Loading the config already rejects invalid files (exit 4). What remains are
things that are valid but risky: a secret that exists only in
``.mailcli/secret`` (lose it and the suppression list can no longer be matched),
secrets or the database readable by other users, a DKIM key that will not
load, plaintext SMTP to a remote host, an unsubscribe URL that is not https.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mailcli.deliverability.check import Check
from mailcli.errors import MailcliError
from mailcli.net import is_loopback

SECRET_FILE = Path(".mailcli") / "secret"


def _loose_mode(path: Path) -> int | None:
    """The file's mode when group or others have any access, else None."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return None
    return stat.S_IMODE(mode) if mode & (stat.S_IRWXG | stat.S_IRWXO) else None


def check_secret(settings: Any, environ: Mapping[str, str]) -> Check:
    """Where the HMAC key comes from, and whether losing it is a risk."""
    env_name = settings.unsubscribe.secret_env
    path = settings.project.root / SECRET_FILE
    if 0 < len(environ.get(env_name, "")) < 16:
        return Check(
            "secret", "fail", f"the secret in {env_name} is too short (at least 16 characters)",
            f'export {env_name}="$(openssl rand -hex 32)" (keep a copy: changing it later invalidates unsubscribe links and the suppression list)',
            {"source": "env"},
        )  # fmt: skip
    if environ.get(env_name):
        return Check(
            "secret", "pass", f"the HMAC key comes from {env_name}", None, {"source": "env"}
        )
    if not path.exists():
        return Check(
            "secret",
            "fail",
            f"no secret: {env_name} is not set and {path} does not exist",
            f"Set {env_name}, or restore your backup of .mailcli/secret",
            {"source": None},
        )
    mode = _loose_mode(path)
    if mode is not None:
        return Check(
            "secret",
            "fail",
            f"{path} is readable by other users (mode {mode:04o})",
            f"chmod 600 {path}",
            {"source": "file", "mode": f"{mode:04o}"},
        )
    return Check(
        "secret",
        "warn",
        f"the HMAC key is only in {path}: losing it makes the suppression list unreadable "
        "and every unsubscribe link invalid; back it up",
        None,
        {"source": "file"},
    )


# The reserved example domains `mailcli init` writes into mailcli.toml: a
# sender, relay or unsubscribe URL there is a setting nobody has made yet.
EXAMPLE_DOMAINS = ("example.org", "example.com", "example.net")
# The postal address and relay the scaffold ships with.
SCAFFOLD_POSTAL_ADDRESS = "Keizersgracht 1, 1015 AA Amsterdam"


def is_example_domain(host: str | None) -> bool:
    host = (host or "").lower().rstrip(".")
    return any(host == d or host.endswith("." + d) for d in EXAMPLE_DOMAINS)


def check_sender(settings: Any) -> Check:
    """From, List-Id and the postal address the footer must show."""
    sender = settings.sender
    details = {"from": sender.from_address, "list_id": sender.list_id}
    if sender.from_address.count("@") != 1:
        return Check(
            "sender", "fail", f"From {sender.from_address!r} is not one mailbox", None, details
        )
    if is_example_domain(sender.from_address.rpartition("@")[2]):
        return Check(
            "sender", "fail", f"From {sender.from_address} is still the example from mailcli init",
            'set from = "Your Name <news@your-domain>" under [sender] (and list_id, reply_to)', details,
        )  # fmt: skip
    if not sender.list_id:
        return Check(
            "sender", "fail", "no [sender] list_id: bulk mail needs a List-Id header",
            'set list_id = "news.example.com" under [sender]', details,
        )  # fmt: skip
    if not (sender.postal_address or "").strip():
        return Check(
            "sender", "warn", "no [sender] postal_address: the footer should say who sends",
            None, details,
        )  # fmt: skip
    if sender.postal_address.strip() == SCAFFOLD_POSTAL_ADDRESS:
        return Check(
            "sender", "warn", f"postal_address is still the example ({SCAFFOLD_POSTAL_ADDRESS})",
            "set your own postal address under [sender]: every footer shows it", details,
        )  # fmt: skip
    return Check(
        "sender", "pass", f"From {sender.from_address}, List-Id <{sender.list_id}>", None, details
    )


def check_unsubscribe(settings: Any) -> Check:
    """One-click unsubscribe needs an https URL (RFC 8058 §3.1)."""
    url = settings.unsubscribe.url or ""
    details = {"url": url, "mailto": settings.unsubscribe.mailto}
    if not url.lower().startswith("https://"):
        return Check(
            "unsubscribe", "fail", f"unsubscribe url {url!r} is not https",
            'set url = "https://..." under [unsubscribe] (mailcli serve behind HTTPS)', details,
        )  # fmt: skip
    from urllib.parse import urlsplit

    examples = [value for value, host in ((url, urlsplit(url).hostname),
                                          (settings.unsubscribe.mailto, (settings.unsubscribe.mailto or "").rpartition("@")[2]))
                if value and is_example_domain(host)]
    if examples:
        return Check(
            "unsubscribe", "fail", f"still the example from mailcli init: {', '.join(examples)};"
            " recipients could not unsubscribe",
            "set url (where mailcli serve is reached over HTTPS) and mailto under [unsubscribe]", details,
        )  # fmt: skip
    mailto = f", mailto:{settings.unsubscribe.mailto}" if settings.unsubscribe.mailto else ""
    return Check("unsubscribe", "pass", f"one-click {url}{mailto}", None, details)


def check_file_modes(settings: Any) -> Check:
    """Personal data and keys must not be readable by other users."""
    loose: list[str] = []
    database = Path(settings.project.database)
    candidates = [database, Path(f"{database}-wal")]
    dkim = getattr(settings, "dkim", None)
    if dkim is not None and dkim.private_key_file:
        candidates.append(Path(dkim.private_key_file))
    for path in candidates:
        mode = _loose_mode(path)
        if mode is not None:
            loose.append(f"{path} ({mode:04o})")
    if loose:
        return Check(
            "file-modes",
            "fail",
            "readable by other users: " + ", ".join(loose),
            "chmod 600 " + " ".join(item.rsplit(" (", 1)[0] for item in loose),
            {"loose": loose},
        )
    return Check("file-modes", "pass", "database and keys are private to their owner", None, {})


def check_dkim_config(settings: Any, environ: Mapping[str, str]) -> Check:
    """Does the configured DKIM key load, and is it long enough?"""
    from mailcli.deliverability.dkim import load_signer

    try:
        signer = load_signer(settings, dict(environ))
    except MailcliError as exc:
        return Check("dkim-signing", "fail", exc.message, exc.hint, {})
    if signer is None:
        return Check(
            "dkim-signing",
            "warn",
            "no [dkim]: mailcli does not sign; fine only if your relay signs for your domain",
            None,
            {},
        )
    details = {"domain": signer.domain, "selector": signer.selector, "bits": signer.key_bits}
    summary = f"signs as d={signer.domain} s={signer.selector} ({signer.key_bits}-bit RSA)"
    if signer.key_bits < 1024:
        return Check(
            "dkim-signing", "fail", summary, "Generate a 2048-bit key: openssl genrsa 2048", details
        )
    if signer.key_bits < 2048:
        return Check("dkim-signing", "warn", summary + "; use 2048 bits", None, details)
    return Check("dkim-signing", "pass", summary, None, details)


def check_smtp_config(settings: Any, environ: Mapping[str, str]) -> Check:
    """Transport settings that are valid but unsafe or incomplete."""
    smtp = settings.smtp
    details = {"host": smtp.host, "port": smtp.port, "security": smtp.security}
    if smtp.security == "none" and not is_loopback(smtp.host):
        return Check(
            "smtp-config", "fail", f"security = \"none\" to {smtp.host}: mail and password unencrypted",
            'set security = "starttls" (port 587) or "tls" (port 465)', details,
        )  # fmt: skip
    if is_example_domain(smtp.host):
        return Check(
            "smtp-config", "fail", f"[smtp] host {smtp.host} is an example, not a relay",
            "set host, port, security and username of your mail provider's relay under [smtp]", details,
        )  # fmt: skip
    if (smtp.host, smtp.port, smtp.security, smtp.username) == ("localhost", 587, "starttls", None):
        return Check(
            "smtp-config", "warn", "[smtp] is still the example from mailcli init (a mail server on this machine,"
            " port 587, no login)",
            "set host, port and username of your relay under [smtp], unless one really runs here", details,
        )  # fmt: skip
    if smtp.username and not environ.get(smtp.password_env):
        return Check(
            "smtp-config", "warn",
            f"{smtp.password_env} is not set here; sending as {smtp.username} will fail", None, details,
        )  # fmt: skip
    return Check("smtp-config", "pass", f"{smtp.host}:{smtp.port} ({smtp.security})", None, details)


def run_config_checks(settings: Any, environ: Mapping[str, str] | None = None) -> list[Check]:
    """Every configuration check, in reading order."""
    env = os.environ if environ is None else environ
    path = getattr(settings, "path", None)
    checks = [
        Check("config", "pass", f"{path or 'mailcli.toml'} is valid", None, {"path": str(path)})
    ]
    checks += [
        check_secret(settings, env),
        check_sender(settings),
        check_unsubscribe(settings),
        check_file_modes(settings),
        check_dkim_config(settings, env),
        check_smtp_config(settings, env),
    ]
    return checks
