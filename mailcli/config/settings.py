"""The settings of a project, validated and frozen (see :mod:`mailcli.config.parse`)."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigError
from ..store.url import DatabaseURL
from .values import Duration

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

CONFIG_NAME = "mailcli.toml"
SECRET_FILE = Path(".mailcli") / "secret"


class EnvVars:
    """Every environment variable mailcli reads, in one place."""

    CONFIG = "MAILCLI_CONFIG"
    SECRET = "MAILCLI_SECRET"
    SMTP_PASSWORD = "MAILCLI_SMTP_PASSWORD"
    IMAP_PASSWORD = "MAILCLI_IMAP_PASSWORD"
    BACKUP_KEY = "MAILCLI_BACKUP_KEY"
    LITESTREAM = "MAILCLI_LITESTREAM"  # the litestream binary, when it is not beside mailcli or on PATH
    DATABASE_URL = "MAILCLI_DATABASE_URL"



@dataclass(frozen=True, slots=True)
class ProjectSettings:
    name: str
    database: Path
    root: Path
    # A PostgreSQL server instead of the SQLite file ``database``.
    database_url: DatabaseURL | None = None
    language: str = "en"  # "en" or "nl": every page and text a recipient sees

    @property
    def store_location(self) -> Path | DatabaseURL:
        """What ``open_store`` opens: the server when one is named, else the SQLite file."""
        return self.database_url if self.database_url is not None else self.database


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
    exports: Duration
    clicks: Duration

    def items(self) -> list[tuple[str, Duration]]:
        return [(name, getattr(self, name)) for name in RETENTION_KEYS]


RETENTION_KEYS = ("unconfirmed", "unsubscribed", "bounced", "inactive", "send_log", "audit_log", "backups", "exports",
                  "clicks")


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


LANGUAGES = ("en", "nl")  # what every page and text a recipient sees is written in


@dataclass(frozen=True, slots=True)
class ListSettings:
    """``[lists.NAME]``: what one list shows the people who join it."""

    consent_text: str | None = None  # the wording of the sign-up form's consent checkbox
    language: str | None = None  # overrides [project] language for this list's pages and mails


@dataclass(frozen=True, slots=True)
class ConsentSettings:
    confirm_within: Duration  # a double opt-in link expires after this long
    lists: dict[str, ListSettings] = field(default_factory=dict)

    def of(self, list_name: str) -> ListSettings:
        return self.lists.get(list_name, ListSettings())


@dataclass(frozen=True, slots=True)
class RenderSettings:
    timeout: float = 5.0  # seconds one render of a template may take
    max_size_mb: float = 10.0  # how large its output (or a value it makes) may grow


@dataclass(frozen=True, slots=True)
class BackupSettings:
    encrypt: bool = False  # write backups encrypted with the key or passphrase in key_env
    key_env: str = "MAILCLI_BACKUP_KEY"


@dataclass(frozen=True, slots=True)
class ServeSettings:
    host: str
    port: int
    # Peers whose X-Forwarded-For / Forwarded headers name the real client
    # (the reverse proxy in front of serve); anyone else's are ignored.
    trusted_proxies: tuple[IPNetwork, ...] = (ipaddress.ip_network("127.0.0.1/32"), ipaddress.ip_network("::1/128"))


@dataclass(frozen=True, slots=True)
class TrackingSettings:
    # Links rewritten to serve's /c/TOKEN, counted per link; never on by default.
    clicks: bool = False
    # Also who clicked (time, IP network): only with this, and then subject
    # to [retention] clicks, privacy export and erase.
    per_contact: bool = False


@dataclass(frozen=True, slots=True)
class ReplicateSettings:
    """Continuous replication of the database with Litestream (``[replicate]``).

    ``replica`` is a Litestream replica URL: ``file:///absolute/folder`` for
    a folder (a relative path in the file is resolved against it), or an
    S3-compatible ``s3://bucket/path`` (``?endpoint=...`` for other than
    AWS). Credentials are never part of it: Litestream reads them from its
    environment.
    """

    replica: str
    retention: Duration
    snapshot_interval: Duration

    @property
    def is_local(self) -> bool:
        return self.replica.startswith("file://")


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
    # Named segments: name -> expression, each checked when the file is read.
    segments: Mapping[str, str] = field(default_factory=dict)
    backup: BackupSettings = BackupSettings()
    render: RenderSettings = RenderSettings()
    tracking: TrackingSettings = TrackingSettings()
    replicate: ReplicateSettings | None = None
    consent: ConsentSettings = field(default_factory=lambda: ConsentSettings(Duration(7, "d")))
    _secret_cache: dict[str, bytes] = field(default_factory=dict, compare=False, repr=False)

    def language(self, list_name: str | None = None) -> str:
        """The language of what a recipient of ``list_name`` sees: the list's, else the project's."""
        own = self.consent.of(list_name).language if list_name else None
        return own or self.project.language

    @property
    def root(self) -> Path:
        return self.project.root

    @property
    def templates_dir(self) -> Path:
        return self.project.root / "templates"

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
            from ..filemodes import check_secret_file

            secret_path = self.project.root / SECRET_FILE
            if secret_path.exists():
                check_secret_file(secret_path)
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
