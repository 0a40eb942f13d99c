"""``serve``'s sign-up and confirmation routes.

* ``GET /subscribe/LIST`` — the form. ``POST /subscribe/LIST`` — from that
  form or from a form on any other site (urlencoded or multipart; fields
  ``email``, ``first_name``, ``last_name``, ``consent`` and the honeypot
  ``website``). A request without an address (no email field, or an empty
  or blank one) or without the ticked consent box is a plain 400.
  Everything else — a new address, a member, a suppressed or erased one, an
  address that cannot be one, a filled-in honeypot — gets the same page, so
  the form tells nobody who is on a list.
  Each client (the one behind a trusted proxy, as for unsubscribes) may post
  ``SIGNUPS_PER_CLIENT`` sign-ups in ``SIGNUP_WINDOW`` seconds; then 429.
* ``GET /confirm?t=TOKEN`` shows a button and changes nothing (link scanners
  open links); ``POST /confirm`` confirms. A bad or tampered token counts
  against the client like a bad unsubscribe token.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote

from .. import clock
from ..addresses import AddressError
from ..config import Settings
from ..feedback.clients import FailureLimiter, client_ip, client_key
from ..feedback.forms import BadRequest, read_form
from ..locales import days, text
from ..store import Store
from . import flow, pages

SIGNUPS_PER_CLIENT = 10
SIGNUP_WINDOW = 600.0  # seconds
HONEYPOT = "website"


@dataclass(frozen=True, slots=True)
class Answer:
    status: str
    body: bytes
    outcome: str
    headers: tuple[tuple[str, str], ...] = ()
    invalid_token: bool = False  # counts against the client's budget of bad tokens


class SignupRoutes:
    """The routes above; ``store()`` gives this thread's store, ``wake()`` the mailer."""

    def __init__(self, settings: Settings, store: Callable[[], Store], wake: Callable[[], None]) -> None:
        self.settings = settings
        self.store = store
        self.wake = wake
        self.signups = FailureLimiter(limit=SIGNUPS_PER_CLIENT, window=SIGNUP_WINDOW)
        self.sender = settings.sender.from_name or settings.project.name

    def handles(self, path: str) -> bool:
        return path.startswith("/subscribe/") or path.rstrip("/") == "/confirm"

    def __call__(self, method: str, path: str, environ: dict[str, Any]) -> Answer:
        if method not in ("GET", "HEAD", "POST"):
            return Answer("405 Method Not Allowed", self._plain("page.method"), "method",
                          (("Allow", "GET, HEAD, POST"),))
        if path.rstrip("/") == "/confirm":
            return self._confirm(method, environ)
        return self._subscribe(method, unquote(path[len("/subscribe/"):]).strip("/"), environ)

    def _plain(self, key: str, language: str | None = None) -> bytes:
        lang = language or self.settings.project.language
        return pages.page(lang, text(lang, key), f"<h1>{html.escape(text(lang, key))}</h1>")

    # -- sign-up -------------------------------------------------------------
    # Complexity: the checks of a sign-up in the order they apply (list, form, limit, honeypot, address).
    def _subscribe(self, method: str, list_name: str, environ: dict[str, Any]) -> Answer:
        if not list_name or "/" in list_name or len(list_name) > 200 \
                or not flow.list_exists(self.store(), self.settings, list_name):
            return Answer("404 Not Found", self._plain("subscribe.no_list"), "no-list")
        language = self.settings.language(list_name)
        consent = flow.consent_wording(self.settings, list_name)
        if method != "POST":
            return Answer("200 OK", pages.signup_form(language, list_name=list_name, sender=self.sender,
                                                      consent=consent), "form")
        form = read_form(environ)
        if not form.get("email", "").strip() or not form.get("consent", "").strip():
            raise BadRequest("400 Bad Request", text(language, "page.bad_request"))
        client = client_key(environ, self.settings.serve.trusted_proxies)
        if self.signups.blocked(client):
            return Answer("429 Too Many Requests", pages.message(language, text(language, "page.too_many"),
                                                                 text(language, "page.too_many_body")),
                          "limited", (("Retry-After", "60"),))
        self.signups.failed(client)  # every sign-up counts: each can send a mail
        sent = pages.signup_sent(language, list_name=list_name,
                                 days=days(language, max(1, round(self.settings.consent.confirm_within.seconds() / 86400))))
        if form.get(HONEYPOT, "").strip():
            return Answer("200 OK", sent, "honeypot")
        request = flow.SignupRequest(
            list_name=list_name, email=form["email"][:320], first_name=form.get("first_name", ""),
            last_name=form.get("last_name", ""), ip=client_ip(environ, self.settings.serve.trusted_proxies),
            form=f"form /subscribe/{list_name}", consent_text=consent)
        try:
            due = flow.sign_up(self.store(), self.settings, request)
        except AddressError:
            return Answer("200 OK", sent, "not-an-address")
        if due:
            self.wake()
        return Answer("200 OK", sent, "signed-up" if due else "nothing-to-do")

    # -- confirmation ------------------------------------------------------
    def _confirm(self, method: str, environ: dict[str, Any]) -> Answer:
        query = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
        token = (query.get("t") or [None])[0]
        if method == "POST":
            token = token or read_form(environ).get("t")
            result = flow.confirm(self.store(), self.settings, token, client_ip(environ, self.settings.serve.trusted_proxies))
            if result.outcome in ("invalid", "expired"):
                return self._invalid(result.outcome)
            language = self.settings.language(result.list_name)
            return Answer("200 OK", pages.confirmed(language, list_name=result.list_name, sender=self.sender),
                          result.outcome)
        named = flow.check_token(self.settings, token)
        if named is None:
            return self._invalid("invalid")
        if clock.now().timestamp() >= named[1]:
            return self._invalid("expired")
        from ..store.signups import signup_by_nonce

        signup = signup_by_nonce(self.store().conn, named[0])
        if signup is None:
            return self._invalid("expired")
        language = signup.language
        return Answer("200 OK", pages.confirm_button(language, list_name=signup.list_name, sender=self.sender,
                                                     token=token or ""), "page")

    def _invalid(self, outcome: str) -> Answer:
        return Answer("400 Bad Request", pages.confirm_invalid(self.settings.project.language), outcome,
                      invalid_token=outcome == "invalid")


