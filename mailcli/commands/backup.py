"""``mailcli backup``: create, list, prune, restore (thin wrappers of ``privacy.backup``)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer

from .. import clock, context
from ..errors import ConfigError, UsageError
from ..privacy.backup import create_backup, list_backups, prune_backups
from ..privacy.restore import RestoreResult, restore_backup

backup_app = typer.Typer(help="Consistent database backups; restores re-apply later erasures.",
                         no_args_is_help=True)


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


@backup_app.command("create")
def create_cmd(ctx: typer.Context) -> None:
    """Copy the database into backups/ (consistent even while a send runs; mode 0600).

    Prints the new file's path (nothing with -q, for cron); backups older
    than \\[retention] backups are removed by `mailcli privacy purge`. With
    \\[backup] encrypt = true the copy is encrypted (age) with the passphrase
    or identity in the variable \\[backup] key_env names, so it may leave the machine.

    Examples:

        mailcli backup create

        15 3 * * *  cd /srv/news && mailcli -q backup create    # crontab
    """
    app = context.get(ctx)
    info = create_backup(app.store, app.settings)
    app.out.result(info.as_json(), text=str(info.path))
    app.out.success(f"Backup written ({_size(info.size)}); kept for {app.settings.retention.backups.describe()}")


@backup_app.command("list")
def list_cmd(ctx: typer.Context) -> None:
    """List the backups, oldest first (`--json`: objects with path, created_at, size, encrypted).

    A path listed here is what `mailcli backup restore` takes.

    Examples:

        mailcli backup list

        mailcli backup list --json
    """
    app = context.get(ctx)
    backups = list_backups(app.settings)
    if app.out.json:
        app.out.data([b.as_json() for b in backups])
        return
    app.out.table(["path", "created_at", "size", "encrypted"],
                  [(str(b.path), b.created_at, _size(b.size), "yes" if b.encrypted else "no") for b in backups])
    if not backups:
        app.out.info("No backups yet; `mailcli backup create` makes one")


@backup_app.command("prune")
def prune_cmd(
    ctx: typer.Context,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List what would go; delete nothing.")] = False,
) -> None:
    """Delete backups older than \\[retention] backups (purge does this too).

    Prints the deleted files (nothing with -q).

    Examples:

        mailcli backup prune --dry-run

        mailcli -q backup prune
    """
    app = context.get(ctx)
    removed = prune_backups(app.settings, dry_run=dry_run)
    app.out.result([b.as_json() for b in removed], text="\n".join(str(b.path) for b in removed))
    verb = "Would delete" if dry_run else "Deleted"
    app.out.info(f"{verb} {len(removed)} backup(s) older than {app.settings.retention.backups.describe()}")


@backup_app.command("restore")
def restore_cmd(
    ctx: typer.Context,
    file: Annotated[Path | None, typer.Argument(help="A backup file (see `mailcli backup list`).",
                                                metavar="FILE", show_default=False)] = None,
    from_replica: Annotated[bool, typer.Option("--from-replica",
                                               help="Restore from the Litestream replica of \\[replicate].")] = False,
    at: Annotated[str | None, typer.Option("--at", metavar="TIME",
                                           help="With --from-replica: the database as it was then"
                                                " (2026-12-01T09:30:00Z; UTC unless an offset is given).")] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask (needed without a terminal).")] = False,
) -> None:
    """Replace the database with a backup, then re-apply every later erasure and opt-out.

    The backup must pass PRAGMA integrity_check, have exactly the schema
    mailcli's migrations create, have been made with this project's secret and
    hold a whole audit log. On a PostgreSQL server the backup is a pg_dump
    archive (.dump), loaded by pg_restore and swapped in by one transaction. An encrypted backup (.db.age) is decrypted with the
    key in \\[backup] key_env; a wrong key changes nothing (exit 4). The
    restored database is prepared aside and swapped in in one step: `mailcli
    serve` may keep running and loses no request. The replaced database is kept
    as a backup labelled pre-restore.
    With --from-replica, Litestream rebuilds the database from the replica
    (as of --at, else its newest change) and that copy is restored the same way.

    Examples:

        mailcli backup restore backups/mailcli-20250101T030000Z.db --yes

        mailcli backup restore --from-replica --at 2026-12-01T09:30:00Z --yes
    """
    app = context.get(ctx)
    moment = _check_source(file, from_replica, at)
    if from_replica:
        result, name, shown = _restore_replica(app, moment, yes)
    else:
        assert file is not None
        result, name, shown = _restore_file(app, file, yes)
    for warning in result.warnings:
        app.out.warn(warning)
    app.out.result(
        {"source": shown, "at": clock.to_iso(moment) if moment else None,
         "safety_copy": str(result.safety_copy) if result.safety_copy else None,
         "reerased": result.reerased, "optouts_reapplied": result.optouts_reapplied,
         "suppressions_merged": result.suppressions_merged, "audit_carried": result.audit_carried},
        text=f"Restored {name}: {result.reerased} re-erasure(s) applied,"
             f" {result.optouts_reapplied} opt-out(s) re-applied",
    )
    if result.safety_copy:
        app.out.info(f"The replaced database was kept as {result.safety_copy}")
    what = "that moment" if from_replica else "the backup"
    app.out.warn(f"messages sent after {what} are not recorded in it; check `mailcli report` before sending again")


def _check_source(file: Path | None, from_replica: bool, at: str | None) -> datetime | None:
    """Exactly one source; ``--at`` only with the replica. Returns the moment asked for."""
    if (file is None) == (not from_replica):
        raise UsageError("Give a backup FILE or --from-replica (one of them)",
                         hint="`mailcli backup list` shows the backups")
    if at is not None and not from_replica:
        raise UsageError("--at goes with --from-replica", hint="a backup FILE is restored as it was written")
    if file is not None and not file.is_file():  # said before the question, which would be for nothing
        raise UsageError(f"{file} is a folder, not a backup" if file.is_dir() else f"Backup not found: {file}",
                         hint="`mailcli backup list` shows the backups")
    return _parse_at(at)


def _restore_file(app: context.AppContext, file: Path, yes: bool) -> tuple[RestoreResult, str, str]:
    settings = app.settings
    url = settings.project.database_url
    database = url.display if url is not None else settings.project.database.name
    app.out.confirm(f"Replace {database} with {file.name}? Changes made since that backup"
                    " are lost (erasures and opt-outs are re-applied).", yes=yes, what="restore")
    if url is not None:
        from ..privacy.pgrestore import restore_postgres_backup

        result = restore_postgres_backup(settings, file, on_lock_wait=app.say_waiting_for)
    else:
        result = restore_backup(settings, file, on_wait=app.say_waiting, on_lock_wait=app.say_waiting_for)
    return result, result.source.name, str(result.source)


def _restore_replica(app: context.AppContext, moment: datetime | None, yes: bool) -> tuple[RestoreResult, str, str]:
    from ..replication import replicate_settings, restore_from_replica

    settings = app.settings
    if settings.project.database_url is not None:
        raise ConfigError("--from-replica restores a SQLite database from its Litestream replica, and this"
                          f" project's database is on a PostgreSQL server ({settings.project.database_url.display})",
                          hint="restore a backup FILE (see `mailcli backup list`); the server's own replicas"
                               " and archives are restored with PostgreSQL's tools")
    replica = replicate_settings(settings).replica
    source = f"the replica {replica}" + (f" as of {clock.to_iso(moment)}" if moment else "")
    app.out.confirm(f"Replace {settings.project.database.name} with {source}? Changes made since are lost"
                    " (erasures and opt-outs are re-applied).", yes=yes, what="restore")
    result = restore_from_replica(settings, at=moment, on_wait=app.say_waiting, on_lock_wait=app.say_waiting_for)
    return result, source, replica


def _parse_at(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        return clock.parse_moment(text)
    except ValueError:
        raise UsageError(f"--at: {text!r} is not a time like 2026-12-01T09:30:00Z") from None
    except OverflowError:
        raise UsageError(f"--at: {text!r} is out of range") from None


def register(app: typer.Typer) -> None:
    app.add_typer(backup_app, name="backup")
