"""``mailcli serve``: run the one-click unsubscribe endpoint (see feedback/web.py)."""

from __future__ import annotations

import logging
import sys
from typing import Annotated
from urllib.parse import urlsplit

import typer

from .. import context
from ..errors import MailcliError, UsageError
from ..net import host_problem, is_loopback


# Complexity: the address checked, logging set, the database opened, then listening; each failure with its own message.
def serve_cmd(
    ctx: typer.Context,
    host: Annotated[str | None, typer.Option("--host", help="Address to listen on (default \\[serve] host, 127.0.0.1).", metavar="H")] = None,
    port: Annotated[int | None, typer.Option("--port", help="Port (default \\[serve] port, 8025; 0 picks a free one).", metavar="P")] = None,
    threads: Annotated[int, typer.Option("--threads", help="Worker threads.", min=1, max=64)] = 4,
) -> None:
    """Serve the unsubscribe endpoint on the path of \\[unsubscribe] url.

    POST with List-Unsubscribe=One-Click unsubscribes (RFC 8058); GET shows a
    page with a button. Run it behind a reverse proxy that provides HTTPS
    (its address in \\[serve] trusted_proxies, so limits count real clients).
    While another process keeps the database busy, POSTs are written to a
    spool beside it and recorded as soon as it is free. Requests are logged
    to stderr with a token hash, never an address. SIGTERM or Ctrl-C finish
    the requests in flight and exit 0.

    Example:

        mailcli serve --host 127.0.0.1 --port 8025
    """
    from ..feedback.web import Listening, LogLines, run_server

    app = context.get(ctx)
    settings = app.settings
    host = host if host is not None else settings.serve.host
    port = port if port is not None else settings.serve.port
    if not 0 <= port <= 65535:
        raise UsageError(f"--port must be between 0 and 65535 (got {port})")
    problem = host_problem(host)
    if problem:
        raise UsageError(f"--host {host!r} {problem}", hint="give an address such as 127.0.0.1 or ::1, or a host name")
    path = urlsplit(settings.unsubscribe.url).path or "/"
    if not is_loopback(host):
        app.out.warn(f"listening on {host}, not only on this machine: keep it behind an HTTPS reverse proxy (RFC 8058)")

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(LogLines(debug=app.out.debug))
    for name in ("mailcli.serve", "waitress"):
        logger = logging.getLogger(name)
        logger.addHandler(handler)
        logger.setLevel(logging.WARNING if app.out.quiet and name == "mailcli.serve" else logging.INFO)
        logger.propagate = False

    def ready(listening: list[Listening]) -> None:
        for item in listening:
            shown = f"[{item.host}]" if ":" in item.host else item.host
            app.out.info(f"Serving {settings.unsubscribe.url} on http://{shown}:{item.port}{path} (SIGTERM or Ctrl-C stops)")
        if settings.tracking.clicks:
            from ..send.clicks import click_base, click_path

            app.out.info(f"Click redirects: {click_base(settings.unsubscribe.url)}TOKEN on"
                         f" {click_path(settings.unsubscribe.url)}TOKEN"
                         + (", who clicked kept per person" if settings.tracking.per_contact else ", counted per link"))
        sys.stderr.flush()

    app.store  # create or migrate the database now, waiting for other processes if need be  # noqa: B018
    app.close()
    try:
        run_server(settings, host, port, threads=threads, on_ready=ready)
    except OSError as exc:
        raise MailcliError(f"Cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    except ValueError as exc:  # the server's own check of the address, for a name that resolves to nothing usable
        raise UsageError(f"Cannot listen on {host}:{port}: {exc}") from None
    finally:
        for name in ("mailcli.serve", "waitress"):
            logging.getLogger(name).removeHandler(handler)
    app.out.info("Stopped")


def register(app: typer.Typer) -> None:
    app.command("serve")(serve_cmd)
