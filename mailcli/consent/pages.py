"""The pages ``serve`` shows a person: sign-up, confirmation and unsubscribe.

Small, accessible HTML: no JavaScript, no third-party assets (a Content
Security Policy allows only the page's own style), one column that fits a
375 px screen, labels tied to their fields, the language of the list in
``<html lang>``. Every word comes from :mod:`mailcli.locales`; names given
by the sender (list, sender) and the person are escaped.
"""

from __future__ import annotations

import base64
import hashlib
import html
from urllib.parse import quote

from ..locales import text

STYLE = (
    "*{box-sizing:border-box}"
    "body{font-family:system-ui,sans-serif;max-width:32rem;margin:2rem auto;padding:0 1rem;line-height:1.5;"
    "color:#222;background:#fff;overflow-wrap:anywhere}"
    "h1{font-size:1.5rem;line-height:1.25}"
    "label{display:block;margin:.9rem 0 .2rem;font-weight:600}"
    "input[type=email],input[type=text]{width:100%;font-size:1rem;padding:.55rem;border:1px solid #767676;"
    "border-radius:.3rem}"
    ".check{display:flex;gap:.6rem;align-items:flex-start;margin:1.2rem 0}"
    ".check input{width:1.3rem;height:1.3rem;margin:.15rem 0 0;flex:none}"
    ".check label{margin:0;font-weight:400}"
    ".hp{position:absolute;left:-10000px;width:1px;height:1px;overflow:hidden}"
    "button{font-size:1rem;padding:.65rem 1.3rem;border:0;border-radius:.3rem;background:#1a5fb4;color:#fff;"
    "cursor:pointer;max-width:100%}"
    "button:focus,input:focus{outline:3px solid #f5c211;outline-offset:2px}"
    ".small{font-size:.9rem;color:#555}"
    "@media (prefers-color-scheme:dark){body{background:#1e1e1e;color:#eee}.small{color:#bbb}"
    "input[type=email],input[type=text]{background:#2a2a2a;color:#eee;border-color:#999}}"
)
_STYLE_HASH = base64.b64encode(hashlib.sha256(STYLE.encode()).digest()).decode()

SECURITY_HEADERS = [
    ("Cache-Control", "no-store"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("X-Frame-Options", "DENY"),
    ("Content-Security-Policy",
     f"default-src 'none'; style-src 'sha256-{_STYLE_HASH}'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"),
]


def page(language: str, title: str, body: str) -> bytes:
    """A whole page: ``title`` is plain text, ``body`` HTML already escaped."""
    lang = text(language, "page.lang")
    return (
        f"<!doctype html><html lang=\"{lang}\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">"
        "<meta name=\"robots\" content=\"noindex,nofollow\">"
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head>"
        f"<body><main>{body}</main></body></html>\n"
    ).encode()


def message(language: str, title: str, body: str) -> bytes:
    """A page with a heading and one paragraph, both plain text."""
    return page(language, title, f"<h1>{html.escape(title)}</h1><p>{html.escape(body)}</p>")


def _e(value: str) -> str:
    return html.escape(value, quote=True)


def signup_form(language: str, *, list_name: str, sender: str, consent: str) -> bytes:
    """The sign-up form of a list; it posts to itself."""
    t = {key: text(language, f"subscribe.{key}", list=list_name, sender=sender)
         for key in ("title", "intro", "email", "first_name", "last_name", "required", "submit", "privacy",
                     "honeypot")}
    action = "/subscribe/" + quote(list_name, safe="")
    body = (
        f"<h1>{_e(t['title'])}</h1><p>{_e(t['intro'])}</p>"
        f"<form method=\"post\" action=\"{_e(action)}\">"
        f"<label for=\"email\">{_e(t['email'])} <span class=\"small\">({_e(t['required'])})</span></label>"
        "<input id=\"email\" name=\"email\" type=\"email\" required autocomplete=\"email\" maxlength=\"254\">"
        f"<label for=\"first_name\">{_e(t['first_name'])}</label>"
        "<input id=\"first_name\" name=\"first_name\" type=\"text\" autocomplete=\"given-name\" maxlength=\"100\">"
        f"<label for=\"last_name\">{_e(t['last_name'])}</label>"
        "<input id=\"last_name\" name=\"last_name\" type=\"text\" autocomplete=\"family-name\" maxlength=\"100\">"
        f"<div class=\"hp\" aria-hidden=\"true\"><label for=\"website\">{_e(t['honeypot'])}</label>"
        "<input id=\"website\" name=\"website\" type=\"text\" tabindex=\"-1\" autocomplete=\"off\"></div>"
        "<div class=\"check\"><input id=\"consent\" name=\"consent\" type=\"checkbox\" value=\"yes\" required>"
        f"<label for=\"consent\">{_e(consent)}</label></div>"
        f"<button type=\"submit\">{_e(t['submit'])}</button>"
        f"<p class=\"small\">{_e(t['privacy'])}</p></form>"
    )
    return page(language, t["title"], body)


def signup_sent(language: str, *, list_name: str, days: str) -> bytes:
    """The one answer to every accepted sign-up, whoever it was for."""
    return message(language, text(language, "subscribe.sent_title"),
                   text(language, "subscribe.sent_body", list=list_name, days=days))


def confirm_button(language: str, *, list_name: str, sender: str, token: str) -> bytes:
    """The page of a confirmation link: a button that POSTs; opening it changes nothing."""
    title = text(language, "confirm.title")
    safe = _e(token)
    body = (
        f"<h1>{_e(title)}</h1><p>{_e(text(language, 'confirm.body', list=list_name, sender=sender))}</p>"
        f"<form method=\"post\" action=\"/confirm?t={safe}\"><input type=\"hidden\" name=\"t\" value=\"{safe}\">"
        f"<button type=\"submit\">{_e(text(language, 'confirm.button'))}</button></form>"
    )
    return page(language, title, body)


def confirmed(language: str, *, list_name: str, sender: str) -> bytes:
    return message(language, text(language, "confirm.done_title"),
                   text(language, "confirm.done_body", list=list_name, sender=sender))


def confirm_invalid(language: str) -> bytes:
    return message(language, text(language, "confirm.invalid_title"), text(language, "confirm.invalid_body"))


def unsubscribe_button(language: str, *, sender: str, token: str, field: tuple[str, str]) -> bytes:
    """The page of an unsubscribe link: a button that POSTs ``List-Unsubscribe=One-Click``."""
    title = text(language, "unsubscribe.title")
    safe = _e(token)
    body = (
        f"<h1>{_e(title)}</h1><p>{_e(text(language, 'unsubscribe.question', sender=sender))}</p>"
        f"<form method=\"post\" action=\"?t={safe}\">"
        f"<input type=\"hidden\" name=\"{field[0]}\" value=\"{field[1]}\">"
        f"<input type=\"hidden\" name=\"t\" value=\"{safe}\">"
        f"<button type=\"submit\">{_e(text(language, 'unsubscribe.button'))}</button></form>"
    )
    return page(language, title, body)


def unsubscribed(language: str, *, sender: str) -> bytes:
    return message(language, text(language, "unsubscribe.done_title"),
                   text(language, "unsubscribe.done_body", sender=sender))


def unsubscribe_invalid(language: str) -> bytes:
    return message(language, text(language, "unsubscribe.invalid_title"), text(language, "unsubscribe.invalid_body"))
