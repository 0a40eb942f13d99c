"""``AppContext``: what every command gets from the root callback (``ctx.obj``).

Settings and the store are opened lazily, so ``init``, ``demo`` and ``--help``
work without a project, and a broken config fails only commands that need it.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field

import typer

from . import config
from .config import Settings
from .errors import ConfigError
from .locks import Holder
from .output import Output
from .store import Store, open_store
from .store.db import StoreBusyError, busy_timeout
from .store.url import DatabaseURL

# The commands that work on a PostgreSQL database so far. Every other command
# refuses one with a clear error before it touches anything, rather than run
# code written for a SQLite file (lock files, the spool, SQLite's own SQL).
POSTGRES_READY = frozenset({"backup", "bounces", "campaigns", "config", "contacts", "doctor", "import", "lint", "lists",
                            "migrate-store", "privacy", "reconfirm", "render", "report", "send", "serve",
                            "unsubscribe"})


def check_engine(settings: Settings, command: str | None) -> None:
    """Refuse a command that does not work on PostgreSQL yet, when the project's database is a server."""
    url = settings.project.database_url
    if url is None or command is None or command in POSTGRES_READY:
        return
    raise ConfigError(
        f"`mailcli {command}` does not work with a PostgreSQL database yet ({url.display});"
        f" the commands that do: {', '.join(sorted(POSTGRES_READY))}",
        hint="use a SQLite file for this project for now ([project] database = \"mailcli.db\");"
             " the README's \"Sharing a project: PostgreSQL\" says what works",
    )


def apply_spool_now(store: Store, settings: Settings, out: Output) -> None:
    """Record spooled opt-outs now if the database is free; else leave them to serve or the next command."""
    from .feedback.actions import apply_spooled_optouts
    from .store import spool

    if store.url is not None or not spool.has_pending(store.path):
        return
    with store.patience(0.05):
        try:
            applied = apply_spooled_optouts(store, settings)
        except StoreBusyError:
            return
    if applied:
        out.detail(f"Recorded {applied} one-click opt-out(s) that waited in the spool")


@dataclass
class AppContext:
    out: Output
    directory: str | None = None
    config_file: str | None = None
    subcommand: str | None = None  # the command being run, for check_engine
    _settings: Settings | None = field(default=None, repr=False)
    _store: Store | None = field(default=None, repr=False)
    _said_upgrading: bool = field(default=False, repr=False)

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            from .filemodes import check_config_file

            settings = config.resolve(config_file=self.config_file, directory=self.directory)
            check_config_file(settings.path)
            check_engine(settings, self.subcommand)
            from .render.limits import configure

            configure(settings.render.timeout, settings.render.max_size_mb)
            self._settings = settings
            self.out.detail(f"Using {self._settings.path}")
        return self._settings

    @property
    def store(self) -> Store:
        """The project database, opened on first use.

        Waits for other processes like every write does (saying so on stderr
        when it lasts), refuses a secret other than the one the database is
        used with (``binding``), then records the one-click opt-outs ``serve``
        had to spool while the database was busy, if it can do so at once.
        """
        if self._store is None:
            from .binding import bind_store

            store = open_store(self.settings.project.store_location, on_wait=self.say_waiting,
                               on_upgrade=self.say_upgrading)
            self._store = store
            if store.tightened:
                self.out.warn(f"{', '.join(store.tightened)} could be read by other users; made private (0600)")
            bind_store(store, self.settings)
            apply_spool_now(store, self.settings, self.out)
        return self._store

    def command(self, *args: str) -> str:
        """A mailcli command line to suggest, with the -C / --config this run was given.

        A suggested command must do what the user expects when pasted into
        the same shell, so it carries the options that chose the project.
        """
        words = ["mailcli"]
        if self.directory:
            words += ["-C", self.directory]
        if self.config_file:
            words += ["--config", self.config_file]
        return shlex.join([*words, *args])

    def say_waiting(self, what: str) -> None:
        """Say on stderr that this command waits for the database (``open_store``'s ``on_wait``),
        naming the import, purge or restore that keeps it busy when one does."""
        from .locks import lock_holder

        database = self.settings.project.store_location
        holder = next((h for name in ("import", "maintenance") if (h := lock_holder(database, name))), None)
        who = f"`mailcli {holder.command}` (pid {holder.pid}, since {holder.since})" if holder else "another process"
        shown = database.display if isinstance(database, DatabaseURL) else database.name
        self.out.info(f"Waiting for the database {shown} (to {what}): {who} is writing to it;"
                      f" waiting up to {busy_timeout():g} s")

    def say_upgrading(self, names: list[str]) -> None:
        """Say on stderr that the database is being brought up to this version (``open_store``'s ``on_upgrade``)."""
        if self._said_upgrading:  # a busy database makes open_store try again
            return
        self._said_upgrading = True
        steps = "1 step" if len(names) == 1 else f"{len(names)} steps"
        self.out.info(f"Upgrading the database for this version of mailcli ({steps}, once;"
                      " on a large database this can take a minute)")

    def say_waiting_for(self, holder: Holder | None) -> None:
        """Say on stderr that this command waits for another run's lock to be released."""
        who = f"`mailcli {holder.command}` (pid {holder.pid}, since {holder.since})" if holder else "another run"
        self.out.info(f"Waiting for {who} to finish; waiting up to {busy_timeout():g} s")

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None


def get(ctx: typer.Context) -> AppContext:
    """The AppContext of the running command (walks up to the root)."""
    root = ctx.find_root()
    obj = root.obj
    if not isinstance(obj, AppContext):  # pragma: no cover - only if misused
        raise RuntimeError("mailcli context missing")
    return obj
