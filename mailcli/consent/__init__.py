"""Consent a sender can prove: sign-ups through ``serve``'s form and their double opt-in.

* ``flow``   — the library: sign someone up (an unconfirmed membership and a
  confirmation mail to send) and confirm a sign-up from its link.
* ``mailer`` — the confirmation mail: rendered from ``templates/_confirm``
  and sent through the configured relay by ``serve`` itself, retried until
  the link expires.
* ``pages``  — the sign-up and confirmation pages, their words from
  :mod:`mailcli.locales`.
* ``web``    — the WSGI routes ``/subscribe/LIST`` and ``/confirm`` that
  ``serve`` adds next to its unsubscribe endpoint.

The SQL is in :mod:`mailcli.store.signups`.
"""
