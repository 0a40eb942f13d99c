"""Network policy shared by every client mailcli opens (SMTP, IMAP, doctor).

* Plaintext is allowed only to loopback: ``is_loopback``.
* TLS always verifies certificates and host names, from the system CAs plus an
  optional private CA file, at TLS 1.2 or newer: ``tls_context``
  (docs/guarantees.md#tls).
  The standard library's mail clients do not verify unless given a context
  like this one.
"""

from __future__ import annotations

import ipaddress
import re
import ssl
from pathlib import Path

_LOOPBACK_NAMES = {"localhost", "localhost.localdomain"}


def is_loopback(host: str) -> bool:
    """True for localhost and loopback IP literals (``127.0.0.1``, ``::1``, ``[::1]``)."""
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")


def host_problem(host: str) -> str | None:
    """Why ``host`` cannot be an address to listen on (None when it can): an
    IP address, or a host name of letters, digits and hyphens; ``999.1.1.1``
    or ``::g`` look like addresses and are none."""
    bare = host.strip("[]") if host.startswith("[") else host
    try:
        ipaddress.ip_address(bare)
        return None
    except ValueError:
        pass
    if ":" in bare or re.fullmatch(r"[0-9.]+", bare):
        return "is not an IP address"
    labels = bare.rstrip(".").split(".")
    if len(bare) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        return "is not a host name or an IP address"
    return None


def is_localhost_name(name: str) -> bool:
    """``localhost``, ``localhost.localdomain``, ``x.localdomain`` and the like:
    names that mean "this machine" and tell a relay nothing."""
    lower = name.lower().rstrip(".")
    return lower == "localhost" or lower.startswith("localhost.") or lower.endswith((".localhost", ".localdomain"))


def tls_context(ca_file: Path | str | None = None) -> ssl.SSLContext:
    """A verifying client context: system CAs (+ ``ca_file``), TLS ≥ 1.2."""
    context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context
