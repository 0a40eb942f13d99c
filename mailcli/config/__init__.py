"""A project's configuration: finding, reading and validating ``mailcli.toml``
into a frozen ``Settings``.

* :mod:`~mailcli.config.files` finds the file as git finds a repository and
  reads it (:func:`resolve`, :func:`load_settings`);
* :mod:`~mailcli.config.parse` validates it, one function per section;
* :mod:`~mailcli.config.settings` holds the frozen settings, and
  :mod:`~mailcli.config.values` the durations and rates they contain.
"""

from .files import MAX_CONFIG_BYTES, find_config, load_settings, resolve, tomllib
from .parse import MAX_TIMEOUT, parse_settings
from .settings import (
    CONFIG_NAME,
    RETENTION_KEYS,
    SECRET_FILE,
    BackupSettings,
    BounceSettings,
    DkimSettings,
    EnvVars,
    ProjectSettings,
    RenderSettings,
    RetentionSettings,
    SenderSettings,
    ServeSettings,
    Settings,
    SmtpSettings,
    TrackingSettings,
    UnsubscribeSettings,
)
from .values import MAX_RATE, Duration, format_rate, format_seconds, parse_duration, parse_rate

__all__ = [
    "CONFIG_NAME",
    "MAX_CONFIG_BYTES",
    "MAX_RATE",
    "MAX_TIMEOUT",
    "RETENTION_KEYS",
    "SECRET_FILE",
    "BackupSettings",
    "BounceSettings",
    "DkimSettings",
    "Duration",
    "EnvVars",
    "ProjectSettings",
    "RenderSettings",
    "RetentionSettings",
    "SenderSettings",
    "ServeSettings",
    "TrackingSettings",
    "Settings",
    "SmtpSettings",
    "UnsubscribeSettings",
    "find_config",
    "format_rate",
    "format_seconds",
    "load_settings",
    "parse_duration",
    "parse_rate",
    "parse_settings",
    "resolve",
    "tomllib",
]
