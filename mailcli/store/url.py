"""Where the project database lives: a SQLite file, or a PostgreSQL server named by a URL.

``[project] database`` is a file path (SQLite, the default) or a
``postgresql://user@host:5432/dbname`` URL; ``MAILCLI_DATABASE_URL`` names a
server instead of the file's setting. The password never lives in the
configuration file: libpq reads it from ``PGPASSWORD`` or a ``~/.pgpass``
line, or ``[project] database_password_env`` names a variable that holds it.
A URL given in ``MAILCLI_DATABASE_URL`` may carry one (CI systems hand out
such URLs as secrets); it is used to connect and never shown.

Only the standard library is used here, so reading a configuration never
needs the PostgreSQL driver.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, quote, unquote, urlsplit

SCHEMES = ("postgresql", "postgres")
# libpq's own URI parameters that may never come from the configuration file.
_SECRET_PARAMS = {"password", "sslpassword"}
CONNECT_TIMEOUT = 10  # seconds; libpq waits forever by default for a host that never answers


class DatabaseURLError(ValueError):
    """A database URL that cannot be used; the message never contains a password."""


def looks_like_url(text: str) -> bool:
    """True when ``text`` is meant as a URL rather than a file path (it has ``scheme://``)."""
    head, sep, _ = text.partition("://")
    return bool(sep) and head.replace("+", "").isalnum()


@dataclass(frozen=True, slots=True)
class DatabaseURL:
    """A PostgreSQL server and database; ``str()`` and ``display`` never show the password."""

    user: str
    host: str
    port: int | None
    dbname: str
    params: tuple[tuple[str, str], ...] = ()
    password: str | None = field(default=None, repr=False, compare=False)
    password_env: str | None = None

    @property
    def display(self) -> str:
        """The URL as a message may show it: user, host, port and database, never a password."""
        user = f"{quote(self.user, safe='')}@" if self.user else ""
        host = f"[{self.host}]" if ":" in self.host else self.host
        port = f":{self.port}" if self.port else ""
        return f"postgresql://{user}{host}{port}/{quote(self.dbname, safe='')}"

    def __str__(self) -> str:
        return self.display

    def connect_kwargs(self) -> dict[str, str]:
        """libpq connection keywords (the password from the URL or the named variable, if any)."""
        kwargs = dict(self.params)
        if self.user:
            kwargs["user"] = self.user
        if self.host:
            kwargs["host"] = self.host
        if self.port:
            kwargs["port"] = str(self.port)
        kwargs["dbname"] = self.dbname
        kwargs.setdefault("connect_timeout", str(CONNECT_TIMEOUT))
        kwargs.setdefault("application_name", "mailcli")
        password = self.password
        if self.password_env and os.environ.get(self.password_env):
            password = os.environ[self.password_env]
        if password:
            kwargs["password"] = password
        return kwargs


# Complexity: one refusal per way a URL can be wrong (scheme, port, password, database, parameters), each saying how.
def parse_database_url(text: str, *, from_file: bool, password_env: str | None = None) -> DatabaseURL:
    """Check and split a ``postgresql://`` URL.

    ``from_file``: the URL comes from ``mailcli.toml``, where a password (in
    the user part or as a parameter) is refused. Every message names the URL
    without its password.
    """
    try:
        parts = urlsplit(text.strip())
        port = parts.port
    except ValueError as exc:
        raise DatabaseURLError(f"is not a valid PostgreSQL URL ({exc})") from None
    if parts.scheme.lower() not in SCHEMES:
        raise DatabaseURLError(
            f"must be a SQLite file path or a postgresql:// URL (got a {parts.scheme}:// URL)")
    user = unquote(parts.username or "")
    password = unquote(parts.password) if parts.password is not None else None
    params = tuple(parse_qsl(parts.query, keep_blank_values=True))
    secret_params = [key for key, _ in params if key in _SECRET_PARAMS]
    if from_file and (password is not None or secret_params):
        raise DatabaseURLError(
            "must not contain a password: put it in PGPASSWORD, a ~/.pgpass line,"
            " or a variable named by [project] database_password_env")
    dbname = unquote(parts.path.lstrip("/"))
    if not dbname or "/" in dbname:
        raise DatabaseURLError(
            "must name one database, like postgresql://mailcli@db.example.org:5432/newsletter")
    if parts.fragment:
        raise DatabaseURLError("must not have a #fragment")
    for key, _value in params:
        if key in ("dbname", "user", "host", "hostaddr", "port"):
            raise DatabaseURLError(f"names {key} twice (in the URL and as ?{key}=); give it once, in the URL")
    passed = {key: value for key, value in params if key not in _SECRET_PARAMS}
    if password is None:
        password = dict(params).get("password")
    return DatabaseURL(
        user=user, host=parts.hostname or "", port=port, dbname=dbname,
        params=tuple(passed.items()), password=password, password_env=password_env,
    )
