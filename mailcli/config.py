"""Finding, reading and validating ``mailcli.toml`` into a frozen ``Settings``.

The file is validated whole on every command: the first problem becomes a
``ConfigError`` (exit 4) naming the key and the file. Secrets never live in the
file; it names environment variables instead, and a file that tries to hold a
password is refused (STANDARDS F17).
"""

from __future__ import annotations

import difflib
import ipaddress
import math
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.utils import getaddresses
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .errors import ConfigError
from .net import is_localhost_name, is_loopback

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

CONFIG_NAME = "mailcli.toml"
SECRET_FILE = Path(".mailcli") / "secret"
MAX_TIMEOUT = 3600  # seconds: an SMTP reply slower than an hour is no reply
MAX_CONFIG_BYTES = 1024 * 1024  # a configuration is a few kilobytes


class EnvVars:
    """Every environment variable mailcli reads, in one place."""

    CONFIG = "MAILCLI_CONFIG"
    SECRET = "MAILCLI_SECRET"
    SMTP_PASSWORD = "MAILCLI_SMTP_PASSWORD"
    IMAP_PASSWORD = "MAILCLI_IMAP_PASSWORD"


# ---------------------------------------------------------------------------
# Value types


_DURATION = re.compile(r"^\s*([0-9]+)\s*(s|m|h|d|w|mo|y)\s*$")
_UNIT_WORDS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks", "mo": "months", "y": "years"}


@dataclass(frozen=True, slots=True)
class Duration:
    """A retention period such as ``30d``, ``12w``, ``13mo`` or ``2y``.

    Months and years are calendar months, so ``13mo`` before 31 March is
    28/29 February of the year before, as a person would count.
    """

    amount: int
    unit: str

    @property
    def text(self) -> str:
        return f"{self.amount}{self.unit}"

    def describe(self) -> str:
        word = _UNIT_WORDS[self.unit]
        return f"{self.amount} {word[:-1] if self.amount == 1 else word}"

    def before(self, moment: datetime) -> datetime:
        """The moment this duration before ``moment``, or the earliest one
        there is (1 January of the year 1) if that is earlier."""
        try:
            if self.unit in ("mo", "y"):
                months = self.amount * (12 if self.unit == "y" else 1)
                return _minus_months(moment, months)
            seconds = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[self.unit]
            return moment - timedelta(seconds=self.amount * seconds)
        except (OverflowError, ValueError):
            return datetime.min.replace(tzinfo=moment.tzinfo)

    def seconds(self) -> float:
        """Approximate length in seconds (months as 30 days)."""
        per = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "mo": 2592000, "y": 31536000}
        return float(self.amount * per[self.unit])


def _minus_months(moment: datetime, months: int) -> datetime:
    import calendar

    total = moment.year * 12 + (moment.month - 1) - months
    year, month = divmod(total, 12)
    month += 1
    day = min(moment.day, calendar.monthrange(year, month)[1])
    return moment.replace(year=year, month=month, day=day)


def parse_duration(text: str, longest: str = "100y") -> Duration:
    """``30d`` and the like, from 0 to ``longest`` (months as 30 days, years as 365)."""
    duration = _duration(text)
    if duration is None or duration.seconds() > _duration(longest).seconds():  # type: ignore[union-attr]
        raise ValueError(f"must be a duration such as 90s, 30m, 12h, 30d, 12w, 13mo or 2y, from 0 to {longest}"
                         f" (got {text!r})")
    return duration


def _duration(text: str) -> Duration | None:
    match = _DURATION.match(str(text))
    # A number of hundreds of digits is refused without being converted.
    if not match or len(match.group(1).lstrip("0")) > 15:
        return None
    return Duration(int(match.group(1)), match.group(2))


# A sending rate above this is no limit a relay would give; 0 means no limit.
MAX_RATE = 10_000.0
_RATE_RANGE = f"0 (no limit) or from \"1/h\" to \"{MAX_RATE:.0f}/s\""


def parse_rate(value: Any) -> float:
    """``"20/s"``, ``"600/m"``, ``"3600/h"`` or a number per second; 0 = unlimited."""
    if isinstance(value, bool):
        raise ValueError(f"must be {_RATE_RANGE}, not true/false")
    if isinstance(value, (int, float)):
        rate = float(value) if value == value and abs(value) <= 1e300 else math.nan
        shown = repr(value)
    else:
        text = str(value).strip()
        match = re.fullmatch(r"([0-9]{1,12}(?:\.[0-9]{1,12})?)\s*(?:/\s*(s|m|h))?", text)
        if not match:
            raise ValueError(f"must be a rate like \"20/s\", \"600/m\" or \"3600/h\": {_RATE_RANGE} (got {text!r})")
        per = {"s": 1.0, "m": 60.0, "h": 3600.0}[match.group(2) or "s"]
        rate = float(match.group(1)) / per
        shown = repr(text)
    if rate != 0 and not 1 / 3600 - 1e-12 <= rate <= MAX_RATE:
        raise ValueError(f"must be {_RATE_RANGE} (got {shown})")
    return rate


def format_rate(per_second: float) -> str:
    """A rate as a person writes it: ``20.0`` → ``"20/s"``, ``0.5`` → ``"30/m"``; 0 → ``"0"``."""
    if per_second <= 0:
        return "0"
    for unit, factor in (("s", 1), ("m", 60), ("h", 3600)):
        count = per_second * factor
        if abs(count - round(count)) < 1e-9:
            return f"{round(count)}/{unit}"
    return f"{per_second:g}/s"


def format_seconds(seconds: float) -> str:
    """A length of time as a person writes it: ``120.0`` → ``"2m"``, ``90.0`` → ``"90s"``."""
    for unit, factor in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= factor and seconds % factor == 0:
            return f"{int(seconds // factor)}{unit}"
    return f"{seconds:g}s"


# ---------------------------------------------------------------------------
# Settings


@dataclass(frozen=True, slots=True)
class ProjectSettings:
    name: str
    database: Path
    root: Path


@dataclass(frozen=True, slots=True)
class SenderSettings:
    from_name: str
    from_address: str
    reply_to: str | None
    list_id: str
    postal_address: str
    bounce_address: str | None
    feedback_id: str | None
    verp: bool = False

    @property
    def domain(self) -> str:
        return self.from_address.rsplit("@", 1)[1]

    @property
    def from_header(self) -> str:
        return f"{self.from_name} <{self.from_address}>" if self.from_name else self.from_address


@dataclass(frozen=True, slots=True)
class SmtpSettings:
    host: str
    port: int
    security: str
    username: str | None
    password_env: str
    timeout: float
    ca_file: Path | None
    concurrency: int
    rate: float
    retry_window: float
    domain_concurrency: int
    helo_name: str | None = None  # None: this host's FQDN (see send.smtp.ehlo_name)
    connect_backoff: float = 1.0  # first wait after a refused connection, doubling

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def password(self) -> str | None:
        return os.environ.get(self.password_env) or None


@dataclass(frozen=True, slots=True)
class UnsubscribeSettings:
    url: str
    mailto: str | None
    secret_env: str


@dataclass(frozen=True, slots=True)
class RetentionSettings:
    unconfirmed: Duration
    unsubscribed: Duration
    bounced: Duration
    inactive: Duration
    send_log: Duration
    audit_log: Duration
    backups: Duration

    def items(self) -> list[tuple[str, Duration]]:
        return [(name, getattr(self, name)) for name in RETENTION_KEYS]


RETENTION_KEYS = ("unconfirmed", "unsubscribed", "bounced", "inactive", "send_log", "audit_log", "backups")


@dataclass(frozen=True, slots=True)
class DkimSettings:
    domain: str
    selector: str
    private_key_env: str | None
    private_key_file: Path | None


@dataclass(frozen=True, slots=True)
class BounceSettings:
    soft_limit: int
    imap_password_env: str


@dataclass(frozen=True, slots=True)
class ServeSettings:
    host: str
    port: int
    # Peers whose X-Forwarded-For / Forwarded headers name the real client
    # (the reverse proxy in front of serve); anyone else's are ignored.
    trusted_proxies: tuple[IPNetwork, ...] = (ipaddress.ip_network("127.0.0.1/32"), ipaddress.ip_network("::1/128"))


@dataclass(frozen=True, slots=True)
class Settings:
    path: Path
    project: ProjectSettings
    sender: SenderSettings
    smtp: SmtpSettings
    unsubscribe: UnsubscribeSettings
    retention: RetentionSettings
    dkim: DkimSettings | None
    bounces: BounceSettings
    serve: ServeSettings
    _secret_cache: dict[str, bytes] = field(default_factory=dict, compare=False, repr=False)

    @property
    def root(self) -> Path:
        return self.project.root

    @property
    def templates_dir(self) -> Path:
        return self.project.root / "templates"

    @property
    def data_dir(self) -> Path:
        """``.mailcli/`` beside the config: secret, locks, erasure ledger (mode 0700)."""
        return self.project.root / ".mailcli"

    @property
    def backups_dir(self) -> Path:
        return self.project.root / "backups"

    def secret(self) -> bytes:
        """The HMAC key: the named environment variable, else ``.mailcli/secret``."""
        if "key" in self._secret_cache:
            return self._secret_cache["key"]
        value = os.environ.get(self.unsubscribe.secret_env)
        if value:
            key = value.encode("utf-8")
        else:
            secret_path = self.project.root / SECRET_FILE
            try:
                key = secret_path.read_bytes().strip()
            except FileNotFoundError:
                raise ConfigError(
                    f"No secret: {self.unsubscribe.secret_env} is not set and {secret_path} does not exist",
                    hint=f"set {self.unsubscribe.secret_env}, or restore the backed-up .mailcli/secret",
                ) from None
            except OSError as exc:
                raise ConfigError(f"Cannot read the secret {secret_path}: {exc.strerror}") from None
        if len(key) < 16:
            raise ConfigError(f"The secret in {self.unsubscribe.secret_env} is too short (at least 16 characters)")
        self._secret_cache["key"] = key
        return key


# ---------------------------------------------------------------------------
# Discovery


def find_config(*, config_file: str | os.PathLike[str] | None = None, directory: str | os.PathLike[str] | None = None) -> Path:
    """Locate ``mailcli.toml`` as git locates a repository.

    ``--config FILE`` wins, then ``MAILCLI_CONFIG``, then the first
    ``mailcli.toml`` in ``-C DIR`` (or the current folder) and its parents.
    """
    if config_file:
        path = Path(config_file).expanduser()
        if not path.is_file():
            raise ConfigError(f"Config file not found: {path}")
        return path.resolve()
    env = os.environ.get(EnvVars.CONFIG)
    if env and directory is None:
        path = Path(env).expanduser()
        if not path.is_file():
            raise ConfigError(f"Config file not found: {path} (from {EnvVars.CONFIG})")
        return path.resolve()
    start = Path(directory).expanduser() if directory else Path.cwd()
    if not start.is_dir():
        raise ConfigError(f"Not a directory: {start}")
    for folder in [start.resolve(), *start.resolve().parents]:
        candidate = folder / CONFIG_NAME
        if candidate.is_file():
            return candidate
    raise ConfigError(
        f"No {CONFIG_NAME} found in {start.resolve()} or any parent folder",
        hint="run `mailcli init` to create a project, or pass -C DIR / --config FILE",
    )


# ---------------------------------------------------------------------------
# Validation

_SCHEMA: dict[str, set[str]] = {
    "project": {"name", "database"},
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
}
_FORBIDDEN = {"password", "smtp_password", "secret", "private_key", "pass"}
_DEFAULT_RETENTION = {
    "unconfirmed": "30d", "unsubscribed": "30d", "bounced": "90d", "inactive": "2y",
    "send_log": "13mo", "audit_log": "2y", "backups": "30d",
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


def _check_keys(reader: _Reader) -> None:
    for section, value in reader.data.items():
        if section in _FORBIDDEN:
            raise reader.fail(section, "secrets do not belong in the config file", hint="name an environment variable instead")
        if section not in _SCHEMA:
            guess = difflib.get_close_matches(section, list(_SCHEMA), n=1)
            raise reader.fail(section, "unknown section" + (f" (did you mean [{guess[0]}]?)" if guess else ""))
        if not isinstance(value, Mapping):
            raise reader.fail(section, "must be a table")
        for key in value:
            if key in _FORBIDDEN:
                raise reader.fail(
                    f"{section}.{key}", "secrets do not belong in the config file",
                    hint=f"set `{key}_env = \"MAILCLI_...\"` and put the value in that environment variable",
                )
            if key not in _SCHEMA[section]:
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
    """``local@domain`` with the domain as an IDNA2008 A-label (STANDARDS A12)."""
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


def parse_settings(data: Mapping[str, Any], path: Path) -> Settings:
    """Validate parsed TOML into ``Settings``; raises ConfigError on the first problem."""
    reader = _Reader(data, path)
    _check_keys(reader)
    root = path.parent

    name = reader.get("project", "name", str, required=True).strip()
    if not name:
        raise reader.fail("project.name", "must not be empty")
    database = _resolve_path(root, reader.get("project", "database", str, "mailcli.db"))
    if database.is_dir():
        raise reader.fail("project.database", f"is a folder, not a database file: {database}")
    project = ProjectSettings(name=name, database=database, root=root)

    from_name, from_address = _parse_mailbox(reader, "sender.from", reader.get("sender", "from", str, required=True), allow_name=True)
    reply_to = reader.get("sender", "reply_to", str, "") or None
    if reply_to:
        reply_to = _parse_mailbox(reader, "sender.reply_to", reply_to, allow_name=True)[1]
    domain = from_address.rsplit("@", 1)[1]
    list_id = reader.get("sender", "list_id", str, "") or f"{_slug(name)}.{domain}"
    if len(list_id) > 255 or not re.fullmatch(r"[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~.]+", list_id) or "." not in list_id:
        raise reader.fail("sender.list_id", f"must look like news.acme.example (got {list_id!r})")
    bounce = reader.get("sender", "bounce_address", str, "") or None
    if bounce:
        bounce = _parse_mailbox(reader, "sender.bounce_address", bounce, allow_name=False)[1]
    feedback_id = reader.get("sender", "feedback_id", str, "") or None
    verp = reader.get("sender", "verp", bool, False)
    if verp:
        _check_verp(reader, bounce)
    sender = SenderSettings(
        from_name=from_name or name,
        from_address=from_address,
        reply_to=reply_to,
        list_id=list_id,
        postal_address=reader.get("sender", "postal_address", str, "").strip(),
        bounce_address=bounce,
        feedback_id=feedback_id,
        verp=verp,
    )

    host = reader.get("smtp", "host", str, "localhost").strip()
    port = _number(reader, "smtp", "port", 587, 1, 65535)
    security = reader.get("smtp", "security", str, "starttls")
    if security not in ("starttls", "tls", "none"):
        raise reader.fail("smtp.security", f"must be \"starttls\", \"tls\" or \"none\" (got {security!r})")
    if security == "none" and not is_loopback(host):
        raise reader.fail(
            "smtp.security", f"\"none\" sends passwords and mail in clear text; it is only allowed to localhost, not {host}",
            hint="use security = \"starttls\" (port 587) or \"tls\" (port 465)",
        )
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
    smtp = SmtpSettings(
        host=host, port=port, security=security,
        username=reader.get("smtp", "username", str, "") or None,
        password_env=_env_name(reader, "smtp", "password_env", EnvVars.SMTP_PASSWORD),
        timeout=float(timeout), ca_file=ca_file, concurrency=concurrency, rate=rate,
        retry_window=retry_window, domain_concurrency=domain_concurrency, helo_name=helo_name,
        connect_backoff=connect_backoff,
    )

    url = reader.get("unsubscribe", "url", str, required=True).strip()
    parts = urlsplit(url)
    if parts.scheme != "https" and not (parts.scheme == "http" and parts.hostname and is_loopback(parts.hostname)):
        raise reader.fail("unsubscribe.url", f"must be an https:// URL (RFC 8058), got {url!r}")
    if not parts.hostname or parts.query or parts.fragment:
        raise reader.fail("unsubscribe.url", f"must be a plain https://host/path URL without ?query or #fragment, got {url!r}")
    mailto = reader.get("unsubscribe", "mailto", str, "") or None
    if mailto:
        mailto = _parse_mailbox(reader, "unsubscribe.mailto", mailto.removeprefix("mailto:"), allow_name=False)[1]
    unsubscribe = UnsubscribeSettings(url=url, mailto=mailto, secret_env=_env_name(reader, "unsubscribe", "secret_env", EnvVars.SECRET))

    periods: dict[str, Duration] = {}
    for key in RETENTION_KEYS:
        try:
            periods[key] = parse_duration(reader.get("retention", key, str, _DEFAULT_RETENTION[key]))
        except ValueError as exc:
            raise reader.fail(f"retention.{key}", str(exc)) from None
    retention = RetentionSettings(**periods)

    dkim = None
    if "dkim" in data:
        selector = reader.get("dkim", "selector", str, required=True).strip()
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", selector):
            raise reader.fail("dkim.selector", f"must be a DNS label (got {selector!r})")
        key_env = reader.get("dkim", "private_key_env", str, "") or None
        key_file_text = reader.get("dkim", "private_key_file", str, "")
        key_file = _resolve_path(root, key_file_text) if key_file_text else None
        if bool(key_env) == bool(key_file):
            raise reader.fail("dkim", "set exactly one of private_key_env or private_key_file")
        dkim_domain = reader.get("dkim", "domain", str, domain).strip().lower()
        dkim = DkimSettings(domain=dkim_domain, selector=selector, private_key_env=key_env, private_key_file=key_file)

    soft_limit = _number(reader, "bounces", "soft_limit", 3, 1, 1000)
    bounces = BounceSettings(soft_limit=soft_limit, imap_password_env=_env_name(reader, "bounces", "imap_password_env", EnvVars.IMAP_PASSWORD))

    serve = _serve_settings(reader)

    return Settings(
        path=path, project=project, sender=sender, smtp=smtp, unsubscribe=unsubscribe,
        retention=retention, dkim=dkim, bounces=bounces, serve=serve,
    )


def _check_verp(reader: _Reader, bounce: str | None) -> None:
    """VERP needs a bounce mailbox whose name leaves room for the token."""
    from .tokens import VERP_TOKEN_LENGTH

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


def _serve_settings(reader: _Reader) -> ServeSettings:
    port = _number(reader, "serve", "port", 8025, 1, 65535)
    host = reader.get("serve", "host", str, "127.0.0.1").strip()
    if not host or any(ch.isspace() for ch in host):
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


def load_settings(path: Path) -> Settings:
    """Read and validate one config file."""
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"Cannot read {path}: {exc.strerror}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path.name}: larger than {MAX_CONFIG_BYTES // 1024} KiB, which no configuration is",
                          hint=f"check that {path} is the project's mailcli.toml")
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{path.name}: not UTF-8 text", hint=f"save {path} as UTF-8") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path.name}: invalid TOML: {exc}", hint=f"edit {path}") from None
    except RecursionError:  # the parser recurses into nested arrays and tables
        raise ConfigError(f"{path.name}: invalid TOML: values nested too deeply", hint=f"edit {path}") from None
    return parse_settings(data, path.resolve())


def resolve(*, config_file: str | None = None, directory: str | None = None) -> Settings:
    """Find and load the project's settings (the one entry point commands use)."""
    return load_settings(find_config(config_file=config_file, directory=directory))
