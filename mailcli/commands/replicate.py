"""``mailcli replicate``: continuous replication of the database with Litestream (see :mod:`mailcli.replication`)."""

from __future__ import annotations

from typing import Annotated

import typer

from .. import context
from ..locks import replicate_lock
from ..replication import (
    config_path,
    config_text,
    find_litestream,
    litestream_version,
    prepare_replica,
    replicate_argv,
    replicate_settings,
    run_litestream,
    systemd_unit,
    write_config,
)


def replicate_cmd(
    ctx: typer.Context,
    print_systemd: Annotated[bool, typer.Option("--print-systemd",
                                                help="Print a systemd service that keeps replication running.")] = False,
    print_config: Annotated[bool, typer.Option("--print-config",
                                               help="Print the litestream.yml it would write; run nothing.")] = False,
) -> None:
    """Replicate the database continuously to \\[replicate] replica with Litestream.

    Writes .mailcli/litestream.yml (0600; no credentials: Litestream reads
    LITESTREAM_ACCESS_KEY_ID and LITESTREAM_SECRET_ACCESS_KEY from the
    environment) and then runs Litestream in the foreground until Ctrl-C or
    SIGTERM, after a last sync, and exits 0 (a service stopped, as `serve`
    does). `mailcli backup restore --from-replica`
    restores from the replica.

    Examples:

        mailcli replicate

        mailcli replicate --print-systemd | sudo tee /etc/systemd/system/mailcli-replicate.service
    """
    app = context.get(ctx)
    settings = app.settings
    rep = replicate_settings(settings)
    if print_config:
        text = config_text(settings)
        app.out.data({"path": str(config_path(settings)), "text": text}, text=text)
        return
    if print_systemd:
        text = systemd_unit(settings)
        app.out.data({"text": text}, text=text)
        return
    binary = find_litestream()
    version = litestream_version(binary)
    app.store  # noqa: B018 - creates and migrates the database first: Litestream replicates only what exists
    app.close()
    replicate_lock(settings)
    prepare_replica(settings)
    path = write_config(settings)
    app.out.info(f"Replicating {settings.project.database.name} to {rep.replica} with Litestream {version}"
                 f" ({path}); Ctrl-C stops")
    run_litestream(replicate_argv(binary, path, quiet=app.out.quiet))


def register(app: typer.Typer) -> None:
    app.command("replicate")(replicate_cmd)
