"""Click counts without tracking people: the links of a campaign's messages
pointed at serve's ``/c/TOKEN`` (only with ``[tracking] clicks = true``).

* **Which links.** ``http://`` and ``https://`` links only: never the
  unsubscribe link (nor anything under serve's own paths), never
  ``mailto:``. A link is tracked when the preflight, which renders one real
  recipient of every set of contact fields, finds it in a message and it
  holds none of that recipient's data: a link that differs per person
  (``?customer={{ contact.number }}``) is left as it is, so no personal data
  ever lands in the link table and no link is made to identify anyone.
* **Where they go.** serve answers on the host of ``[unsubscribe] url``; a
  click URL is that URL with its last path segment replaced by
  ``c/TOKEN`` (``https://news.example.org/unsubscribe`` →
  ``https://news.example.org/c/TOKEN``). The token names the campaign and
  the link's number, signed (``tokens.make_click_token``); serve looks the
  URL up, so it redirects only to links a campaign really sent.
* **Both parts.** The HTML's ``href`` attributes and the same URLs in the
  text part are rewritten, so either part counts.
"""

from __future__ import annotations

import html as html_lib
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

_HREF = re.compile(r"""(\bhref\s*=\s*)(["'])(.*?)\2""", re.IGNORECASE | re.DOTALL)
MIN_VALUE_CHARS = 4  # shorter contact values ("3", "NL") are too common to tell a personal link


def click_base(unsubscribe_url: str) -> str:
    """The prefix of every click URL, ``…/c/``, beside the unsubscribe path."""
    parts = urlsplit(unsubscribe_url)
    folder = parts.path.rsplit("/", 1)[0]
    return urlunsplit((parts.scheme, parts.netloc, f"{folder}/c/", "", ""))


def click_path(unsubscribe_url: str) -> str:
    """The path prefix serve answers clicks on (``/c/``)."""
    return urlsplit(click_base(unsubscribe_url)).path


def is_trackable(url: str, unsubscribe_url: str) -> bool:
    """An absolute http(s) link, not the unsubscribe link nor one of serve's
    own (its clicks, the confirmation link of a sign-up, the sign-up form)."""
    if not url.lower().startswith(("http://", "https://")):
        return False
    if any(ord(c) < 33 or ord(c) == 127 for c in url) or len(url) > 4000:
        return False  # a header (Location) could not carry it as it is
    base = unsubscribe_url.split("?", 1)[0]
    return not (url.startswith(base) or url.startswith(click_base(unsubscribe_url)) or _signup_page(url, base))


def _signup_page(url: str, unsubscribe_url: str) -> bool:
    """A page of serve's sign-up form or its double opt-in (``/confirm``,
    ``/subscribe/LIST``) on the host of the unsubscribe link."""
    parts, serve = urlsplit(url), urlsplit(unsubscribe_url)
    if (parts.scheme.lower(), parts.netloc.lower()) != (serve.scheme.lower(), serve.netloc.lower()):
        return False
    return parts.path.rstrip("/") == "/confirm" or parts.path.startswith("/subscribe/")


def html_links(document: str) -> list[str]:
    """The ``href`` targets of a rendered HTML part, unescaped, in order."""
    return [html_lib.unescape(m.group(3)).strip() for m in _HREF.finditer(document)]


def static_links(document: str, contact: Mapping[str, Any], unsubscribe_url: str) -> list[str]:
    """The trackable links of one recipient's rendered HTML that hold none of
    their contact data (see the module docstring)."""
    values = {str(v).strip().lower() for v in contact.values() if v is not None}
    values = {v for v in values if len(v) >= MIN_VALUE_CHARS}
    out = []
    for url in html_links(document):
        if not is_trackable(url, unsubscribe_url):
            continue
        plain = unquote(url).lower()
        if any(v in plain or v in url.lower() for v in values):
            continue
        out.append(url)
    return list(dict.fromkeys(out))


def rewrite_html(document: str, target: Callable[[str], str | None]) -> str:
    """``document`` with each ``href`` whose URL ``target`` maps replaced by that."""

    def swap(match: re.Match[str]) -> str:
        url = html_lib.unescape(match.group(3)).strip()
        new = target(url)
        if new is None:
            return match.group(0)
        return f"{match.group(1)}{match.group(2)}{html_lib.escape(new, quote=True)}{match.group(2)}"

    return _HREF.sub(swap, document)


def rewrite_text(text: str, urls: Iterable[str], target: Callable[[str], str | None]) -> str:
    """``text`` with each whole occurrence of a tracked URL replaced: one not
    followed by another character a URL could go on with."""
    wanted = sorted(set(urls), key=len, reverse=True)  # the longest first: a URL may begin another
    if not wanted:
        return text
    pattern = re.compile("(" + "|".join(re.escape(u) for u in wanted) + r")(?![\w/?#&=%~+-]|\.\w)")

    def swap(match: re.Match[str]) -> str:
        return target(match.group(1)) or match.group(1)

    return pattern.sub(swap, text)


def track_links(store: Any, factory: Any, samples: list[tuple[Any, ...]]) -> dict[str, int]:
    """Register the links the preflight's recipients' messages hold (those
    that hold none of their data) and return every tracked link of the
    campaign, URL -> number, those of earlier runs included."""
    from mailcli import clock
    from mailcli.send import ledger
    from mailcli.store.clicks import link_numbers, register_links

    found: list[str] = []
    unsubscribe_url = factory.settings.unsubscribe.url
    for fields in samples:
        recipient = ledger.Recipient(*fields)
        ctx, _ = factory.context(recipient)
        try:
            parts = factory.template.render(ctx)
        except Exception:  # noqa: BLE001 - the preflight already reported what fails to render
            continue
        found += static_links(parts.html, ctx.contact, unsubscribe_url)
    with store.transaction() as conn:
        register_links(conn, factory.campaign.id, dict.fromkeys(found), clock.now_iso())
        return link_numbers(conn, factory.campaign.id)
