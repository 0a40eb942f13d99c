"""Validating a parsed ``mailcli.toml`` into ``Settings``, one function per section.

The file is validated whole on every command: the first problem becomes a
``ConfigError`` (exit 4) naming the key and the file, and numbers and
durations are range-checked with the range in the message. Secrets never
live in the file; it names environment variables instead, and a file that
tries to hold a password is refused.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
from collections.abc import Mapping
from email.utils import getaddresses
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ..errors import ConfigError
from ..net import host_problem, is_localhost_name, is_loopback
from ..segments import check_segments
from ..store.url import DatabaseURLError, looks_like_url, parse_database_url
from .settings import (
    LANGUAGES,
    RETENTION_KEYS,
    BackupSettings,
    BounceSettings,
    ConsentSettings,
    DkimSettings,
    EnvVars,
    IPNetwork,
    ListSettings,
    ProjectSettings,
    RenderSettings,
    ReplicateSettings,
    RetentionSettings,
    SenderSettings,
    ServeSettings,
    Settings,
    SmtpSettings,
    TrackingSettings,
    UnsubscribeSettings,
)
from .values import Duration, parse_duration, parse_rate

MAX_TIMEOUT = 3600  # seconds: an SMTP reply slower than an hour is no reply

_SCHEMA: dict[str, set[str]] = {
    "project": {"name", "database", "database_password_env", "language"},
    "sender": {"from", "reply_to", "list_id", "postal_address", "bounce_address", "feedback_id", "verp"},
    "smtp": {
        "host", "port", "security", "username", "password_env", "timeout", "ca_file",
        "concurrency", "rate", "retry_window", "domain_concurrency", "helo_name", "connect_backoff",
    },
    "unsubscribe": {"url", "mailto", "secret_env"},
    "retention": set(RETENTION_KEYS),
    "dkim": {"domain", "selector", "private_key_env", "private_key_file"},
    "bounces": {"soft_limit", "imap_password_env"},
    "serve": {"host", "port", "trusted_proxies"},
    "segments": set(),  # any name: each value is an expression (mailcli.segments)
    "backup": {"encrypt", "key_env"},
    "render": {"timeout", "max_size_mb"},
    "tracking": {"clicks", "per_contact"},
    "replicate": {"replica", "retention", "snapshot_interval"},
    "consent": {"confirm_within"},
    "lists": set(),  # one table per list, its keys in _LIST_KEYS
}
_LIST_KEYS = {"consent_text", "language"}
_FORBIDDEN = {"password", "smtp_password", "secret", "private_key", "pass"}
_DEFAULT_RETENTION = {
    "unconfirmed": "30d", "unsubscribed": "30d", "bounced": "90d", "inactive": "2y",
    "send_log": "13mo", "audit_log": "2y", "backups": "30d", "exports": "30d", "clicks": "13mo",
}


class _Reader:
    """Typed access to one parsed TOML file, raising ConfigError with key and file."""

    def __init__(self, data: Mapping[str, Any], path: Path) -> None:
        self.data = data
        self.path = path

    def fail(self, key: str, problem: str, hint: str | None = None) -> ConfigError:
        return ConfigError(f"{self.path.name}: {key}: {problem}", hint=hint or f"edit {self.path}")

    def section(self, name: str) -> Mapping[str, Any]:
        value = self.data.get(name, {})
        if not isinstance(value, Mapping):
            raise self.fail(name, "must be a table ([" + name + "])")
        return value

    # Complexity: one check per way a TOML value can be wrong, each naming the key.
    def get(self, section: str, key: str, kind: type | tuple[type, ...], default: Any = ..., *, required: bool = False) -> Any:
        table = self.section(section)
        full = f"{section}.{key}"
        if key not in table:
            if required or default is ...:
                raise self.fail(full, "missing", hint=f"add `{key} = ...` under [{section}] in {self.path}")
            return default
        value = table[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if isinstance(value, bool) and bool not in kinds:
            raise self.fail(full, f"must be {_kind_name(kinds)}, not true/false")
        if not isinstance(value, kinds):
            raise self.fail(full, f"must be {_kind_name(kinds)}, not {type(value).__name__} {value!r}")
        if isinstance(value, str) and any(ch in value for ch in "\r\n\x00"):
            raise self.fail(full, "must not contain line breaks or NUL")
        return value


def _number(reader: _Reader, section: str, key: str, default: float, low: float, high: float, *,
            integer: bool = True, above: bool = False, unit: str = "") -> Any:
    """An integer (or, unless ``integer``, a number) from ``low`` to
    ``high`` (``above``: more than ``low``); the message gives the range."""
    value = reader.get(section, key, int if integer else (int, float), default)
    inside = value > low if above else value >= low
    if value != value or not (inside and value <= high):  # value != value: NaN
        span = f"more than {low:g} and at most {high:g}" if above else f"from {low:g} to {high:g}"
        raise reader.fail(f"{section}.{key}", f"must be {span}{unit} (got {value!r})")
    return value


def _kind_name(kinds: tuple[type, ...]) -> str:
    names = {str: "a string", int: "an integer", float: "a number", bool: "true or false"}
    return " or ".join(names.get(k, k.__name__) for k in kinds)


# Complexity: one refusal per way a section or key can be wrong, each naming it; [segments] takes any name.
def _check_keys(reader: _Reader) -> None:
    for section, value in reader.data.items():
        if section in _FORBIDDEN:
            raise reader.fail(section, "secrets do not belong in the config file", hint="name an environment variable instead")
        if section not in _SCHEMA:
            guess = difflib.get_close_matches(section, list(_SCHEMA), n=1)
            raise reader.fail(section, "unknown section" + (f" (did you mean [{guess[0]}]?)" if guess else ""))
        if not isinstance(value, Mapping):
            raise reader.fail(section, "must be a table")
        if section == "lists":
            _check_list_keys(reader, value)
            continue
        for key in value:
            if key in _FORBIDDEN:
                raise reader.fail(
                    f"{section}.{key}", "secrets do not belong in the config file",
                    hint=f"set `{key}_env = \"MAILCLI_...\"` and put the value in that environment variable",
                )
            if key not in _SCHEMA[section] and section != "segments":
                guess = difflib.get_close_matches(key, list(_SCHEMA[section]), n=1)
                raise reader.fail(f"{section}.{key}", "unknown key" + (f" (did you mean {guess[0]}?)" if guess else ""))


def _parse_mailbox(reader: _Reader, key: str, value: str, *, allow_name: bool) -> tuple[str, str]:
    pairs = getaddresses([value])
    if len(pairs) != 1 or not pairs[0][1] or "@" not in pairs[0][1] or value.count("@") != 1:
        raise reader.fail(key, f"must be exactly one address, like \"Acme <news@acme.example>\" (got {value!r})")
    name, address = pairs[0]
    if name and not allow_name:
        raise reader.fail(key, f"must be a bare address (got {value!r})")
    try:
        return name.strip(), _ascii_address(address)
    except ValueError as exc:
        raise reader.fail(key, f"{exc} (got {value!r})") from None


def _ascii_address(address: str) -> str:
    """``local@domain`` with the domain as an IDNA2008 A-label (UTS #46, non-transitional: ``straße.de``
    is ``xn--strae-oqa.de``, not ``strasse.de``)."""
    import idna

    local, _, domain = address.strip().rpartition("@")
    if not local or not domain or any(ch.isspace() for ch in address.strip()):
        raise ValueError("is not a valid address")
    try:
        ascii_domain = idna.encode(domain, uts46=True, transitional=False).decode("ascii")
    except idna.IDNAError as exc:
        raise ValueError(f"has an invalid domain ({exc})") from None
    if not local.isascii():
        raise ValueError("must have an ASCII local part")
    return f"{local}@{ascii_domain.lower()}"


def _env_name(reader: _Reader, section: str, key: str, default: str) -> str:
    name = reader.get(section, key, str, default)
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise reader.fail(f"{section}.{key}", f"must name an environment variable (got {name!r})")
    return name


def _resolve_path(root: Path, text: str) -> Path:
    path = Path(text).expanduser()
    return path if path.is_absolute() else root / path


def _check_list_keys(reader: _Reader, lists: Mapping[str, Any]) -> None:
    for name, table in lists.items():
        if not isinstance(table, Mapping):
            raise reader.fail(f"lists.{name}", "must be a table ([lists." + name + "])")
        for key in table:
            if key not in _LIST_KEYS:
                guess = difflib.get_close_matches(key, list(_LIST_KEYS), n=1)
                raise reader.fail(f"lists.{name}.{key}",
                                  "unknown key" + (f" (did you mean {guess[0]}?)" if guess else ""))


def _language(reader: _Reader, key: str, value: Any) -> str:
    if not isinstance(value, str) or value.strip().lower() not in LANGUAGES:
        raise reader.fail(key, f"must be one of {', '.join(repr(x) for x in LANGUAGES)} (got {value!r})")
    return value.strip().lower()


# Complexity: one check per [consent] and [lists.NAME] key, each naming the key it refuses.
def _consent(reader: _Reader) -> ConsentSettings:
    try:
        within = parse_duration(reader.get("consent", "confirm_within", str, "7d"), longest="90d")
    except ValueError as exc:
        raise reader.fail("consent.confirm_within", str(exc)) from None
    if within.seconds() < 60:
        raise reader.fail("consent.confirm_within", "must be at least a minute (1m)")
    lists: dict[str, ListSettings] = {}
    for name, table in reader.section("lists").items():
        text = table.get("consent_text")
        if text is not None and (not isinstance(text, str) or not text.strip() or any(c in text for c in "\r\n\x00")):
            raise reader.fail(f"lists.{name}.consent_text", "must be one line of text, the wording of the checkbox")
        language = table.get("language")
        lists[str(name)] = ListSettings(
            consent_text=text.strip() if isinstance(text, str) else None,
            language=_language(reader, f"lists.{name}.language", language) if language is not None else None)
    return ConsentSettings(confirm_within=within, lists=lists)


def parse_settings(data: Mapping[str, Any], path: Path) -> Settings:
    """Validate parsed TOML into ``Settings``; raises ConfigError on the first
    problem, section by section in the order of the file's documentation."""
    reader = _Reader(data, path)
    _check_keys(reader)
    root = path.parent
    project = _project(reader, root)
    sender = _sender(reader, project.name)
    smtp = _smtp(reader, root)
    unsubscribe = _unsubscribe(reader)
    retention = _retention(reader)
    dkim = _dkim(reader, root, sender.domain) if "dkim" in data else None
    bounces = BounceSettings(
        soft_limit=_number(reader, "bounces", "soft_limit", 3, 1, 1000),
        imap_password_env=_env_name(reader, "bounces", "imap_password_env", EnvVars.IMAP_PASSWORD))
    serve = _serve(reader)
    segments = check_segments(reader.section("segments"), path.name)
    backup = BackupSettings(encrypt=reader.get("backup", "encrypt", bool, False),
                            key_env=_env_name(reader, "backup", "key_env", EnvVars.BACKUP_KEY))
    render = RenderSettings(
        timeout=_number(reader, "render", "timeout", 5.0, 0, 600, integer=False, above=True, unit=" seconds"),
        max_size_mb=_number(reader, "render", "max_size_mb", 10, 0, 1000, integer=False, above=True, unit=" MB"))
    tracking = _tracking(reader)
    replicate = _replicate(reader, root) if "replicate" in data else None
    return Settings(
        path=path, project=project, sender=sender, smtp=smtp, unsubscribe=unsubscribe,
        retention=retention, dkim=dkim, bounces=bounces, serve=serve, segments=segments, backup=backup,
        render=render, tracking=tracking, replicate=replicate, consent=_consent(reader),
    )


def _tracking(reader: _Reader) -> TrackingSettings:
    clicks = reader.get("tracking", "clicks", bool, False)
    per_contact = reader.get("tracking", "per_contact", bool, False)
    if per_contact and not clicks:
        raise reader.fail("tracking.per_contact", "needs clicks = true (there are no clicks to record otherwise)")
    return TrackingSettings(clicks=clicks, per_contact=per_contact)


def _project(reader: _Reader, root: Path) -> ProjectSettings:
    name = reader.get("project", "name", str, required=True).strip()
    if not name:
        raise reader.fail("project.name", "must not be empty")
    language = _language(reader, "project.language", reader.get("project", "language", str, "en"))
    text = reader.get("project", "database", str, "mailcli.db")
    password_env = None
    if "database_password_env" in reader.data.get("project", {}):
        password_env = _env_name(reader, "project", "database_password_env", "")
    env_url = os.environ.get(EnvVars.DATABASE_URL, "").strip()
    if env_url:
        try:
            url = parse_database_url(env_url, from_file=False, password_env=password_env)
        except DatabaseURLError as exc:
            raise ConfigError(f"{EnvVars.DATABASE_URL} {exc}") from None
        return ProjectSettings(name=name, database=root / "mailcli.db", root=root, database_url=url, language=language)
    if looks_like_url(text):
        try:
            url = parse_database_url(text, from_file=True, password_env=password_env)
        except DatabaseURLError as exc:
            raise reader.fail("project.database", str(exc)) from None
        return ProjectSettings(name=name, database=root / "mailcli.db", root=root, database_url=url, language=language)
    database = _resolve_path(root, text)
    if database.is_dir():
        raise reader.fail("project.database", f"is a folder, not a database file: {database}")
    return ProjectSettings(name=name, database=database, root=root, language=language)


# Complexity: one check per [sender] key, each naming the key it refuses.
def _sender(reader: _Reader, project_name: str) -> SenderSettings:
    from_name, from_address = _parse_mailbox(reader, "sender.from", reader.get("sender", "from", str, required=True), allow_name=True)
    reply_to = reader.get("sender", "reply_to", str, "") or None
    if reply_to:
        reply_to = _parse_mailbox(reader, "sender.reply_to", reply_to, allow_name=True)[1]
    domain = from_address.rsplit("@", 1)[1]
    list_id = reader.get("sender", "list_id", str, "") or f"{_slug(project_name)}.{domain}"
    if len(list_id) > 255 or not re.fullmatch(r"[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~.]+", list_id) or "." not in list_id:
        raise reader.fail("sender.list_id", f"must look like news.acme.example (got {list_id!r})")
    bounce = reader.get("sender", "bounce_address", str, "") or None
    if bounce:
        bounce = _parse_mailbox(reader, "sender.bounce_address", bounce, allow_name=False)[1]
    feedback_id = reader.get("sender", "feedback_id", str, "") or None
    verp = reader.get("sender", "verp", bool, False)
    if verp:
        _check_verp(reader, bounce)
    return SenderSettings(
        from_name=from_name or project_name,
        from_address=from_address,
        reply_to=reply_to,
        list_id=list_id,
        postal_address=reader.get("sender", "postal_address", str, "").strip(),
        bounce_address=bounce,
        feedback_id=feedback_id,
        verp=verp,
    )


def _smtp(reader: _Reader, root: Path) -> SmtpSettings:
    host = reader.get("smtp", "host", str, "localhost").strip()
    port = _number(reader, "smtp", "port", 587, 1, 65535)
    security = _security(reader, host)
    timeout = _number(reader, "smtp", "timeout", 30, 0, MAX_TIMEOUT, integer=False, above=True, unit=" seconds")
    ca_text = reader.get("smtp", "ca_file", str, "")
    ca_file = _resolve_path(root, ca_text) if ca_text else None
    if ca_file is not None and not ca_file.is_file():
        raise reader.fail("smtp.ca_file", f"file not found: {ca_file}")
    concurrency = _number(reader, "smtp", "concurrency", 4, 1, 64)
    try:
        rate = parse_rate(reader.get("smtp", "rate", (str, int, float), "0"))
    except ValueError as exc:
        raise reader.fail("smtp.rate", str(exc)) from None
    try:
        retry_window = parse_duration(reader.get("smtp", "retry_window", str, "2m"), "24h").seconds()
    except ValueError as exc:
        raise reader.fail("smtp.retry_window", str(exc)) from None
    domain_concurrency = _number(reader, "smtp", "domain_concurrency", 0, 0, 64, unit=" (0: no cap)")
    helo_name = _helo_name(reader, host)
    connect_backoff = _seconds(reader, "smtp", "connect_backoff", 1.0)
    if not 0 < connect_backoff <= retry_window:
        raise reader.fail("smtp.connect_backoff", f"must be more than 0 and at most retry_window ({retry_window:g} s)")
    username = reader.get("smtp", "username", str, "") or None
    if username and security == "none":
        # AUTH only over TLS: a password in clear text is readable by anyone
        # who can watch the connection, loopback included (a proxy, a capture).
        raise reader.fail(
            "smtp.username", "set with security = \"none\", but mailcli sends the login (AUTH) only over TLS",
            hint="use security = \"starttls\" or \"tls\", or remove [smtp] username for a local relay without login",
        )
    return SmtpSettings(
        host=host, port=port, security=security,
        username=username,
        password_env=_env_name(reader, "smtp", "password_env", EnvVars.SMTP_PASSWORD),
        timeout=float(timeout), ca_file=ca_file, concurrency=concurrency, rate=rate,
        retry_window=retry_window, domain_concurrency=domain_concurrency, helo_name=helo_name,
        connect_backoff=connect_backoff,
    )


def _security(reader: _Reader, host: str) -> str:
    security = reader.get("smtp", "security", str, "starttls")
    if security not in ("starttls", "tls", "none"):
        raise reader.fail("smtp.security", f"must be \"starttls\", \"tls\" or \"none\" (got {security!r})")
    if security == "none" and not is_loopback(host):
        raise reader.fail(
            "smtp.security", f"\"none\" sends passwords and mail in clear text; it is only allowed to localhost, not {host}",
            hint="use security = \"starttls\" (port 587) or \"tls\" (port 465)",
        )
    return str(security)


def _unsubscribe(reader: _Reader) -> UnsubscribeSettings:
    url = reader.get("unsubscribe", "url", str, required=True).strip()
    parts = urlsplit(url)
    if parts.scheme != "https" and not (parts.scheme == "http" and parts.hostname and is_loopback(parts.hostname)):
        raise reader.fail("unsubscribe.url", f"must be an https:// URL (RFC 8058), got {url!r}")
    if not parts.hostname or parts.query or parts.fragment:
        raise reader.fail("unsubscribe.url", f"must be a plain https://host/path URL without ?query or #fragment, got {url!r}")
    mailto = reader.get("unsubscribe", "mailto", str, "") or None
    if mailto:
        mailto = _parse_mailbox(reader, "unsubscribe.mailto", mailto.removeprefix("mailto:"), allow_name=False)[1]
    return UnsubscribeSettings(url=url, mailto=mailto, secret_env=_env_name(reader, "unsubscribe", "secret_env", EnvVars.SECRET))


def _retention(reader: _Reader) -> RetentionSettings:
    periods: dict[str, Duration] = {}
    for key in RETENTION_KEYS:
        try:
            periods[key] = parse_duration(reader.get("retention", key, str, _DEFAULT_RETENTION[key]))
        except ValueError as exc:
            raise reader.fail(f"retention.{key}", str(exc)) from None
    return RetentionSettings(**periods)


def _dkim(reader: _Reader, root: Path, domain: str) -> DkimSettings:
    selector = reader.get("dkim", "selector", str, required=True).strip()
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", selector):
        raise reader.fail("dkim.selector", f"must be a DNS label (got {selector!r})")
    key_env = reader.get("dkim", "private_key_env", str, "") or None
    key_file_text = reader.get("dkim", "private_key_file", str, "")
    key_file = _resolve_path(root, key_file_text) if key_file_text else None
    if bool(key_env) == bool(key_file):
        raise reader.fail("dkim", "set exactly one of private_key_env or private_key_file")
    dkim_domain = reader.get("dkim", "domain", str, domain).strip().lower()
    return DkimSettings(domain=dkim_domain, selector=selector, private_key_env=key_env, private_key_file=key_file)


def _check_verp(reader: _Reader, bounce: str | None) -> None:
    """VERP needs a bounce mailbox whose name leaves room for the token."""
    from ..tokens import VERP_TOKEN_LENGTH

    if not bounce:
        raise reader.fail("sender.verp", "needs [sender] bounce_address, the mailbox that receives the bounces",
                          hint='add bounce_address = "bounces@your.domain" under [sender]')
    local = bounce.rpartition("@")[0]
    room = 64 - 1 - VERP_TOKEN_LENGTH  # RFC 5321: a local part has at most 64 octets
    if len(local.encode("utf-8")) > room:
        raise reader.fail("sender.bounce_address",
                          f"with verp = true its mailbox name may have at most {room} characters "
                          f"(the VERP token takes {VERP_TOKEN_LENGTH + 1}), not {local!r}")


_HELO_HOST = re.compile(r"(?=.{1,253}$)(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_HELO_LITERAL = re.compile(r"\[(?:\d{1,3}(?:\.\d{1,3}){3}|IPv6:[0-9A-Fa-f:.]+)\]")


def _helo_name(reader: _Reader, host: str) -> str | None:
    """``[smtp] helo_name``: a fully qualified host name or an address literal."""
    name = reader.get("smtp", "helo_name", str, "").strip()
    if not name:
        return None
    if not (_HELO_HOST.fullmatch(name) or _HELO_LITERAL.fullmatch(name)):
        raise reader.fail("smtp.helo_name", f"must be this machine's fully qualified host name, like mail.acme.example,"
                          f" or an address literal like [192.0.2.10] (got {name!r})")
    if is_localhost_name(name) and not is_loopback(host):
        raise reader.fail("smtp.helo_name", f"{name!r} names no host but this one; relays such as {host} refuse or"
                          " score such a greeting", hint="set this machine's public host name, or leave it empty")
    return name


def _seconds(reader: _Reader, section: str, key: str, default: float) -> float:
    """A short interval: a number of seconds, or a duration like "2s"."""
    value = reader.get(section, key, (str, int, float), default)
    if isinstance(value, str):
        try:
            return parse_duration(value).seconds()
        except ValueError as exc:
            raise reader.fail(f"{section}.{key}", f"{exc}, or a number of seconds") from None
    return float(value)


def _serve(reader: _Reader) -> ServeSettings:
    port = _number(reader, "serve", "port", 8025, 1, 65535)
    host = reader.get("serve", "host", str, "127.0.0.1").strip()
    if not host or host_problem(host):
        raise reader.fail("serve.host", f"must be a host name or an IP address (got {host!r})")
    proxies = reader.get("serve", "trusted_proxies", list, ["127.0.0.1", "::1"])
    networks: list[IPNetwork] = []
    for number, item in enumerate(proxies, 1):
        if not isinstance(item, str):
            raise reader.fail("serve.trusted_proxies", f"entry {number} must be a string, not {item!r}")
        try:
            networks.append(ipaddress.ip_network(item.strip(), strict=False))
        except ValueError:
            raise reader.fail("serve.trusted_proxies", f"entry {number} is not an IP address or network: {item!r}",
                              hint="list the addresses of the reverse proxy, like [\"127.0.0.1\", \"::1\", \"10.0.0.0/8\"]",
                              ) from None
    return ServeSettings(host=host, port=port, trusted_proxies=tuple(networks))


def _slug(text: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return slug or "news"


# The replica kinds mailcli writes a Litestream configuration for.
_REPLICA_SCHEMES = ("file", "s3")
_CREDENTIAL_PARAMS = {"access-key-id", "secret-access-key", "access_key_id", "secret_access_key", "password", "token"}


def _replicate(reader: _Reader, root: Path) -> ReplicateSettings:
    """``[replicate]``: where Litestream copies the database, and for how long it keeps the copies."""
    text = reader.get("replicate", "replica", str, required=True).strip()
    if not text:
        raise reader.fail("replicate.replica", "must not be empty",
                          hint='a folder ("/srv/standby/news") or an S3 URL ("s3://bucket/news")')
    replica = _replica_url(reader, root, text)
    periods = {}
    for key, default in (("retention", "24h"), ("snapshot_interval", "1h")):
        try:
            periods[key] = parse_duration(reader.get("replicate", key, str, default), longest="10y")
        except ValueError as exc:
            raise reader.fail(f"replicate.{key}", str(exc)) from None
        if periods[key].seconds() < 60:
            raise reader.fail(f"replicate.{key}", f"must be at least 1 minute (got {periods[key].text!r})")
    if periods["snapshot_interval"].seconds() > periods["retention"].seconds():
        raise reader.fail("replicate.snapshot_interval",
                          f"must not be longer than replicate.retention ({periods['retention'].text})")
    return ReplicateSettings(replica=replica, retention=periods["retention"],
                             snapshot_interval=periods["snapshot_interval"])


def _replica_url(reader: _Reader, root: Path, text: str) -> str:
    if "://" not in text:
        return _resolve_path(root, text).resolve().as_uri()
    parts = urlsplit(text)
    if parts.scheme not in _REPLICA_SCHEMES:
        raise reader.fail("replicate.replica", f"{parts.scheme}:// replicas are not supported",
                          hint="use a folder or an S3-compatible s3://bucket/path URL")
    _refuse_credentials(reader, parts.username or parts.password, parts.query)
    if parts.scheme == "s3" and not parts.netloc:
        raise reader.fail("replicate.replica", f"names no bucket (got {text!r})", hint='e.g. "s3://bucket/news"')
    if parts.scheme == "file" and (parts.netloc or not parts.path.startswith("/")):
        raise reader.fail("replicate.replica", f"must be file:///absolute/folder or a plain path (got {text!r})")
    return text


def _refuse_credentials(reader: _Reader, userinfo: str | None, query: str) -> None:
    """A replica URL carries no key or password: Litestream reads those from its environment."""
    params = {name.split("=", 1)[0].lower() for name in query.split("&") if name}
    if userinfo or params & _CREDENTIAL_PARAMS:
        raise reader.fail("replicate.replica", "credentials do not belong in the config file",
                          hint="set LITESTREAM_ACCESS_KEY_ID and LITESTREAM_SECRET_ACCESS_KEY in the environment"
                               " Litestream runs in")
