"""Binding an open database to the project's secret (``docs/guarantees.md#secrets``).

The suppression list, the ledgers and the audit subjects hold keyed hashes
of addresses; a configuration with another secret would compute other
hashes, and an erased or unsubscribed person would silently stop being
recognised. So the database keeps a keyed fingerprint of the secret it is
used with (``tokens.secret_fingerprint``, a MAC that tells nothing of the
key), recorded by the first command that holds the secret, and every command
after it compares: another secret is refused (exit 4) before anything is
read or written with it. Two configurations that name one database must
share its secret.

Binding also gives the store the key of the audit chain (``audit.bind``).
"""

from __future__ import annotations

from . import audit, clock
from .config import Settings
from .errors import ConfigError
from .store import Store
from .store.facts import SECRET_FINGERPRINT, add_fact, get_fact
from .tokens import secret_fingerprint


def secret_mismatch(settings: Settings, database: object) -> ConfigError:
    source = settings.unsubscribe.secret_env
    return ConfigError(
        f"The HMAC secret (from {source} or .mailcli/secret) is not the one the database {database} is used with:"
        " with it, nobody on the suppression list would be recognised",
        hint=f"use the secret this database was made with: restore .mailcli/secret from your backup, or set"
             f" {source} to it (two configurations that name one database must share its secret)",
    )


def check_secret(store: Store, settings: Settings) -> None:
    """Record the secret's fingerprint in a database that has none; refuse another secret (ConfigError)."""
    mine = secret_fingerprint(settings.secret())
    known = get_fact(store.conn, SECRET_FINGERPRINT)
    if known is None:
        with store.transaction() as conn:
            known = add_fact(conn, SECRET_FINGERPRINT, mine, clock.now_iso())
    if known != mine:
        raise secret_mismatch(settings, store.path.name)


def bind_store(store: Store, settings: Settings) -> None:
    """Check the secret and give the store the audit key. Without a secret at
    all nothing is checked: a command that needs it fails when it asks."""
    try:
        settings.secret()
    except ConfigError:
        return
    check_secret(store, settings)
    audit.bind(store, settings)
