"""The configuration part of ``mailcli doctor``: what the file alone can tell.

Loading the config already rejects invalid files (exit 4). What remains are
things that are valid but risky: a secret that exists only in
``.mailcli/secret`` (lose it and the suppression list can no longer be matched),
secrets, the database, backups, exports or ledgers readable by other users or
a configuration they may change (``docs/guarantees.md#file-modes``), backups
that leave the database's disk unencrypted, a DKIM key that will not load,
plaintext SMTP to a remote host, an unsubscribe URL that is not https.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mailcli.deliverability.check import Check
from mailcli.errors import MailcliError
from mailcli.net import is_loopback

SECRET_FILE = Path(".mailcli") / "secret"


def _loose_mode(path: Path) -> int | None:
    from mailcli.filemodes import open_to_others

    return open_to_others(path)


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


def _project_paths(settings: Any) -> list[tuple[Path, str]]:
    """What holds personal data, keys or the configuration, with what its mode must keep out:
    "rw" (others may neither read nor write) or "w" (others may not write)."""
    from mailcli.ledgers import ledger_folder
    from mailcli.locks import lock_folder

    root = Path(settings.project.root)
    database = Path(settings.project.database)
    paths: list[tuple[Path, str]] = [
        (Path(settings.path), "w"), (root, "w"), (root / ".mailcli", "rw"),
        (database, "rw"), (Path(f"{database}-wal"), "rw"), (Path(f"{database}-shm"), "rw"),
        (ledger_folder(database), "rw"), (lock_folder(database), "rw"),
    ]
    ledgers = ledger_folder(database)
    for folder in (Path(settings.backups_dir), root / "exports", ledgers):
        paths.append((folder, "rw"))
        try:
            paths += [(item, "rw") for item in sorted(folder.iterdir()) if item.is_file()]
        except OSError:
            pass
    dkim = getattr(settings, "dkim", None)
    if dkim is not None and dkim.private_key_file:
        paths.append((Path(dkim.private_key_file), "rw"))
    return list(dict.fromkeys(paths))


def check_file_modes(settings: Any) -> Check:
    """Personal data and keys must be private to their owner; the configuration
    and the folder it is in may be changed by their owner only."""
    from mailcli.filemodes import open_to_others, writable_by_others

    loose: list[str] = []
    fixes: list[str] = []
    for path, keep_out in _project_paths(settings):
        mode = open_to_others(path) if keep_out == "rw" else writable_by_others(path)
        if mode is None:
            continue
        if keep_out == "rw":
            loose.append(f"{path} ({mode:04o}, readable by others)")
            fixes.append(f"chmod {'700' if path.is_dir() else '600'} {path}")
        else:
            loose.append(f"{path} ({mode:04o}, writable by others)")
            fixes.append(f"chmod go-w {path}")
    if loose:
        return Check("file-modes", "fail", "not private: " + ", ".join(loose), "; ".join(fixes), {"loose": loose})
    return Check("file-modes", "pass", "database, backups, exports, ledgers and keys are private to their owner;"
                 " only the owner may change mailcli.toml", None, {})


def check_backups(settings: Any, environ: Mapping[str, str]) -> Check:
    """Encrypted backups need their key; plain ones should not leave the database's disk."""
    backup = settings.backup
    folder = Path(settings.backups_dir)
    details: dict[str, Any] = {"encrypt": backup.encrypt, "folder": str(folder)}
    if backup.encrypt:
        if not environ.get(backup.key_env):
            return Check("backups", "fail", f"[backup] encrypt is true but {backup.key_env} is not set: backup create"
                         " fails", f"set {backup.key_env} to a long passphrase or an age identity (age-keygen)",
                         details)
        return Check("backups", "pass", f"backups are encrypted (age) with the key in {backup.key_env}", None, details)
    if _device(folder) != _device(Path(settings.project.database)):
        return Check("backups", "warn", f"backups go unencrypted to {folder}, on another filesystem than the"
                     " database: a copy of everyone's data that may leave this machine",
                     'set encrypt = true under [backup] (key in MAILCLI_BACKUP_KEY), or keep backups/ on this disk',
                     details)
    return Check("backups", "pass", f"backups in {folder} stay on the database's filesystem (unencrypted;"
                 " set [backup] encrypt = true before copying them elsewhere)", None, details)


def _device(path: Path) -> int | None:
    """The filesystem a path is on (or would be on: its nearest existing folder)."""
    for candidate in (path, *path.parents):
        try:
            return os.stat(candidate).st_dev
        except OSError:
            continue
    return None


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
        check_backups(settings, env),
        check_dkim_config(settings, env),
        check_smtp_config(settings, env),
    ]
    return checks
