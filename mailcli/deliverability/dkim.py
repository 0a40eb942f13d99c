"""DKIM signing of outgoing messages (dkimpy), and loading the key safely.

Gmail and Yahoo require DKIM for bulk mail, and RFC 8058 §4 requires the
signature to cover List-Unsubscribe and List-Unsubscribe-Post so a relay cannot
forge a one-click unsubscribe. Signing must be the very last change to the
message: anything added afterwards breaks the signature
(docs/guarantees.md#message-format).
The send engine therefore calls ``signer.sign(wire_bytes)`` on the final bytes
and transmits exactly what it returns.

The private key comes from an environment variable (PEM text) or a file that
only its owner may read; a key readable by others is refused (exit 4).
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path
from typing import Any

from mailcli.errors import ConfigError, MailcliError

#: Always signed, listed even when absent so nobody can add them later.
SIGNED_HEADERS: tuple[str, ...] = (
    "From",
    "To",
    "Subject",
    "Date",
    "Message-ID",
    "List-Id",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
)
#: Signed when the message has them.
SIGNED_IF_PRESENT: tuple[str, ...] = (
    "Reply-To",
    "MIME-Version",
    "Content-Type",
    "Content-Transfer-Encoding",
    "Feedback-ID",
)

_HEADER_NAME = re.compile(rb"^([!-9;-~]+)[ \t]*:", re.MULTILINE)


class DkimSigner:
    """Signs finished messages for one domain and selector (rsa-sha256, relaxed/relaxed)."""

    __slots__ = ("domain", "selector", "_pem", "key_bits")

    def __init__(self, domain: str, selector: str, private_key_pem: bytes) -> None:
        from dkim.crypto import UnparsableKeyError, parse_pem_private_key

        self.domain = domain.strip().rstrip(".").lower()
        self.selector = selector.strip()
        if not self.domain or not self.selector:
            raise ConfigError("[dkim] needs both domain and selector")
        pem = _normalise_pem(private_key_pem)
        try:
            parsed = parse_pem_private_key(pem)
        except (UnparsableKeyError, ValueError, IndexError) as exc:
            raise ConfigError(
                "DKIM private key is not an RSA key in PEM form (PKCS#1 or PKCS#8)",
                hint="Generate one with: openssl genrsa -out dkim.pem 2048",
            ) from exc
        self._pem = pem
        self.key_bits: int = int(parsed["modulus"]).bit_length()

    def __repr__(self) -> str:  # never show the key (docs/guarantees.md#secrets)
        return f"DkimSigner(domain={self.domain!r}, selector={self.selector!r})"

    def headers_to_sign(self, message: bytes) -> list[str]:
        """The ``h=`` list for ``message``: the fixed set plus those present."""
        present = {name.lower() for name in _header_names(message)}
        extra = [h for h in SIGNED_IF_PRESENT if h.lower() in present]
        return [*SIGNED_HEADERS, *extra]

    def sign(self, message: bytes) -> bytes:
        """Return ``message`` with a DKIM-Signature header prepended.

        Pass the exact bytes that will be transmitted and send the result
        unchanged: nothing may be added after signing.
        """
        import dkim

        linesep = b"\r\n" if b"\r\n" in message else b"\n"
        try:
            signature = dkim.sign(
                message,
                self.selector.encode("ascii"),
                self.domain.encode("ascii"),
                self._pem,
                canonicalize=(b"relaxed", b"relaxed"),
                signature_algorithm=b"rsa-sha256",
                include_headers=[h.encode("ascii") for h in self.headers_to_sign(message)],
                linesep=linesep,
            )
        except dkim.DKIMException as exc:
            raise MailcliError(f"DKIM signing failed for d={self.domain}: {exc}") from exc
        return signature + message

    def public_key_b64(self) -> str:
        """The base64 SubjectPublicKeyInfo to publish as ``p=`` in DNS."""
        return public_key_b64(self._pem)


def public_key_b64(private_key_pem: bytes) -> str:
    """Derive the DNS ``p=`` value (base64 DER SubjectPublicKeyInfo) from a PEM key."""
    import base64

    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(_normalise_pem(private_key_pem), password=None)
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(der).decode("ascii")


def _normalise_pem(pem: bytes) -> bytes:
    # Keys pasted into env files often arrive with literal "\n" and CRLF endings.
    if b"\\n" in pem and b"\n" not in pem.strip():
        pem = pem.replace(b"\\n", b"\n")
    return pem.replace(b"\r\n", b"\n").strip() + b"\n"


def _header_names(message: bytes) -> list[str]:
    head = re.split(rb"\r?\n\r?\n", message, maxsplit=1)[0]
    return [m.group(1).decode("ascii") for m in _HEADER_NAME.finditer(head)]


def check_key_file(path: Path) -> None:
    """Refuse a key file that group or others may read or write (exit 4)."""
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise ConfigError(f"[dkim] private_key_file {path}: {exc.strerror or exc}") from exc
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            f"[dkim] private_key_file {path} is readable by others "
            f"(mode {stat.S_IMODE(mode):04o}); it must be 0600 or stricter",
            hint=f"chmod 600 {path}",
        )


# Complexity: one check per [dkim] key and per way a key file can be wrong, each with its fix.
def signer_from_config(
    domain: str,
    selector: str,
    *,
    private_key_env: str | None = None,
    private_key_file: Path | str | None = None,
    root: Path | None = None,
    environ: dict[str, str] | None = None,
) -> DkimSigner:
    """Build a signer from the ``[dkim]`` keys; ``ConfigError`` names what is wrong."""
    env = os.environ if environ is None else environ
    pem: bytes | None = None
    source = ""
    if private_key_file is not None and str(private_key_file) in ("", "."):
        private_key_file = None
    if private_key_env:
        value = env.get(private_key_env, "")
        if value.strip():
            pem, source = value.encode("utf-8"), f"private_key_env {private_key_env}"
        elif not private_key_file:
            raise ConfigError(
                f"[dkim] private_key_env: environment variable {private_key_env} is not set",
                hint=f'export {private_key_env}="$(cat dkim.pem)"',
            )
    if pem is None:
        if not private_key_file:
            raise ConfigError("[dkim] needs private_key_env or private_key_file")
        path = Path(private_key_file).expanduser()
        if root is not None and not path.is_absolute():
            path = root / path
        check_key_file(path)
        try:
            pem = path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"[dkim] private_key_file {path}: {exc.strerror or exc}") from exc
        source = f"private_key_file {path}"
    try:
        return DkimSigner(domain, selector, pem)
    except ConfigError as exc:
        raise ConfigError(f"[dkim] {source}: {exc.message}", hint=exc.hint) from exc


def load_signer(settings: Any, environ: dict[str, str] | None = None) -> DkimSigner | None:
    """The signer for ``settings.dkim``, or None when DKIM signing is not configured."""
    cfg = getattr(settings, "dkim", None)
    if cfg is None:
        return None
    project = getattr(settings, "project", None)
    return signer_from_config(
        cfg.domain,
        cfg.selector,
        private_key_env=getattr(cfg, "private_key_env", None) or None,
        private_key_file=getattr(cfg, "private_key_file", None) or None,
        root=getattr(project, "root", None),
        environ=environ,
    )
