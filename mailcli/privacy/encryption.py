"""Encrypted backups, in the age format (``docs/guarantees.md#backups``).

A backup is the whole database: everyone's address, name and history. With
``[backup] encrypt = true`` it is written encrypted, so a copy can leave the
machine (a USB disk, a mounted share, cloud storage) safely. The format is
age (age-encryption.org/v1), through ``pyrage`` (the Rust ``rage``
implementation): authenticated encryption (ChaCha20-Poly1305 in 64 KiB
chunks, so a changed, cut or re-ordered byte fails decryption), a
specified, audited format, and a file anyone can decrypt without mailcli,
with ``age -d`` or ``rage -d`` — which is what a backup is for.

The key comes from the environment variable ``[backup] key_env`` names
(``MAILCLI_BACKUP_KEY``), never from the file:

* an age identity (``AGE-SECRET-KEY-1…``, made by ``age-keygen``): the backup
  is encrypted to its public key, streamed in constant memory; keep the
  identity apart from the backups;
* anything else is a passphrase (at least 12 characters): age's scrypt
  recipient. It costs about two seconds of key derivation per backup and
  restore (that is its protection against guessing), and pyrage encrypts a
  passphrase file in memory, so for a database of several hundred MB an
  identity is the better choice.

A wrong key, or a file that is not age or was changed, is refused (exit 4)
before anything is restored; a decrypted copy exists only in a private temporary
file beside the database while a restore runs.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

from ..config import Settings
from ..errors import ConfigError, MailcliError
from ..store.backups import begins_with

SUFFIX = ".age"
MAGIC = b"age-encryption.org/v1\n"
IDENTITY_PREFIX = "AGE-SECRET-KEY-1"
MIN_PASSPHRASE = 12


@dataclass(frozen=True, slots=True, repr=False)
class BackupKey:
    """The key of encrypted backups: an age identity or a passphrase (never shown)."""

    env: str
    identity: str | None = None
    passphrase: str | None = None

    def __repr__(self) -> str:
        return f"BackupKey(from {self.env})"


def is_encrypted(path: Path) -> bool:
    """Does the file start like an age file?"""
    return begins_with(path, MAGIC)


def backup_key(settings: Settings, *, why: str) -> BackupKey:
    """The key from ``[backup] key_env``; ConfigError (exit 4) when unset or unusable."""
    env = settings.backup.key_env
    value = (os.environ.get(env) or "").strip()
    if not value:
        raise ConfigError(f"{why}, but {env} is not set",
                          hint=f"set {env} to the backups' passphrase or age identity (AGE-SECRET-KEY-1..., from"
                               " age-keygen); keep a copy apart from the backups")
    if value.upper().startswith(IDENTITY_PREFIX):
        from pyrage import x25519

        try:
            x25519.Identity.from_str(value.upper())
        except Exception:  # noqa: BLE001 - pyrage.IdentityError: the value is not usable
            raise ConfigError(f"{env} starts like an age identity but is not a valid one",
                              hint="copy the whole AGE-SECRET-KEY-1... line that age-keygen wrote") from None
        return BackupKey(env, identity=value.upper())
    if len(value) < MIN_PASSPHRASE:
        raise ConfigError(f"The passphrase in {env} is too short (at least {MIN_PASSPHRASE} characters)",
                          hint="use a long passphrase, or an age identity made by age-keygen")
    return BackupKey(env, passphrase=value)


def _private(path: Path) -> int:
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)


def encrypt_file(source: Path, dest: Path, key: BackupKey) -> None:
    """Write ``source`` encrypted into the new file ``dest`` (0600) and fsync it."""
    import pyrage

    fd = _private(dest)
    try:
        with os.fdopen(fd, "wb") as out:
            if key.identity is not None:
                from pyrage import x25519

                recipient = x25519.Identity.from_str(key.identity).to_public()
                with source.open("rb") as handle:
                    pyrage.encrypt_io(handle, out, [recipient])
            else:
                assert key.passphrase is not None
                out.write(pyrage.passphrase.encrypt(source.read_bytes(), key.passphrase))
            out.flush()
            os.fsync(out.fileno())
    except BaseException:
        with contextlib.suppress(OSError):
            dest.unlink()
        raise


def decrypt_file(source: Path, dest: Path, key: BackupKey) -> None:
    """Decrypt the backup ``source`` into the new private file ``dest``.

    A wrong key, a file that is not age or one that was changed: ConfigError
    (exit 4), and ``dest`` is removed.
    """
    import pyrage

    fd = _private(dest)
    try:
        with os.fdopen(fd, "wb") as out:
            if key.identity is not None:
                from pyrage import x25519

                with source.open("rb") as handle:
                    pyrage.decrypt_io(handle, out, [x25519.Identity.from_str(key.identity)])
            else:
                assert key.passphrase is not None
                out.write(pyrage.passphrase.decrypt(source.read_bytes(), key.passphrase))
            out.flush()
    except (pyrage.DecryptError, pyrage.IdentityError, ValueError, OSError) as exc:
        with contextlib.suppress(OSError):
            dest.unlink()
        if isinstance(exc, OSError) and exc.errno is not None:  # the disk, not the key or the bytes
            raise MailcliError(f"Cannot decrypt {source}: {exc.strerror}; nothing was restored") from None
        # A streamed decryption reports a wrong MAC in a later chunk as an
        # OSError without errno: the file was changed.
        raise ConfigError(f"Cannot decrypt {source} with the key in {key.env}: a wrong key, or the file was"
                          " changed; nothing was restored",
                          hint=f"set {key.env} to the passphrase or identity the backup was made with") from None
    except BaseException:
        with contextlib.suppress(OSError):
            dest.unlink()
        raise
