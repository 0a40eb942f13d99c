"""The unsubscribe URIs of a campaign message, formatted in exactly one place.

``serve`` (one-click POST and the GET page) and ``bounces`` (mailto requests)
parse these back, so the format is a contract between them and this module:

* https: ``{[unsubscribe] url}?t={token}``
* mailto: ``mailto:{local}+{token}@{domain}?subject=unsubscribe%20{token}``
  (the token in the plus-address and in the subject, so a mail client that
  drops one of them still works)

The token is ``tokens.make_unsubscribe_token``: an HMAC over the contact uid
and list id, opaque and unforgeable (docs/guarantees.md#opaque-identifiers).
The https URI comes first and is the only https one, as RFC 8058 §3.1 asks
for one-click unsubscribe (docs/guarantees.md#the-unsubscribe-endpoint).
"""

from __future__ import annotations

from typing import Any


def unsubscribe_url(settings: Any, token: str) -> str:
    """The one-click URL for ``token`` (also the body link, ``{{ unsubscribe_url }}``)."""
    base = settings.unsubscribe.url.rstrip("?&")
    return f"{base}?t={token}"


def unsubscribe_mailto(settings: Any, token: str) -> str | None:
    """The mailto URI for ``token``, or None when ``[unsubscribe] mailto`` is unset."""
    mailto = settings.unsubscribe.mailto
    if not mailto:
        return None
    local, _, domain = mailto.removeprefix("mailto:").rpartition("@")
    return f"mailto:{local}+{token}@{domain}?subject=unsubscribe%20{token}"


def list_unsubscribe_header(settings: Any, token: str) -> str:
    """The List-Unsubscribe value: ``<https://…>, <mailto:…>`` (RFC 2369, RFC 8058)."""
    value = f"<{unsubscribe_url(settings, token)}>"
    mailto = unsubscribe_mailto(settings, token)
    if mailto:
        value += f", <{mailto}>"
    return value
