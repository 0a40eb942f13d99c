"""All terminal output goes through ``Output``.

Data goes to stdout (JSON with ``--json``), everything else to stderr. Progress
bars appear only when stderr is a terminal, ``--quiet`` is off and we are not
in CI; otherwise a ``NullProgress`` is handed out. Consoles are made per
invocation so tests and environment changes take effect. A failure is printed
by ``Output.error``, called from one place: ``app.fail``. A reader that
quits early (``| head -1``) fails no command (``closed_pipes_ignored``).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Iterator, Sequence
from typing import Any, TextIO

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from .errors import Interrupted, UsageError


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class _PipeSafe:
    """stdout or stderr (or the binary buffer under one) whose reader may go
    away: ``mailcli import big.csv 2>&1 | head -1``. The first write that
    finds the pipe closed points the stream's file descriptor at /dev/null,
    so that write and every later one (this process's, and its children's)
    goes nowhere, quietly; everything else is the stream's."""

    def __init__(self, stream: Any, fd: int) -> None:
        self._stream = stream
        self._fd = fd

    def write(self, data: Any) -> int:
        try:
            return int(self._stream.write(data))
        except BrokenPipeError:
            self._to_devnull()
            return len(data)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            self._to_devnull()

    @property
    def buffer(self) -> _PipeSafe:
        return _PipeSafe(self._stream.buffer, self._fd)

    def _to_devnull(self) -> None:
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, self._fd)
        finally:
            os.close(devnull)
        with contextlib.suppress(OSError, ValueError):
            self._stream.flush()  # what is still buffered goes to /dev/null now

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


@contextlib.contextmanager
def closed_pipes_ignored() -> Iterator[None]:
    """Run a command whose stdout or stderr reader may quit early (``| head``).

    A closed pipe is no failure of the command: what it did stands (an
    import has committed), so it goes on to its end and exits with its own
    code, its output after that point discarded, as ``grep`` and ``sort``
    do. Without this, Python raises BrokenPipeError at the next write, and
    click turns that into exit 1 after the work was done.
    """
    saved = sys.stdout, sys.stderr
    for name, fd in (("stdout", 1), ("stderr", 2)):
        stream = getattr(sys, name)
        try:
            if stream.fileno() == fd:
                setattr(sys, name, _PipeSafe(stream, fd))
        except (AttributeError, OSError, ValueError):  # a StringIO, a closed stream: left as it is
            pass
    try:
        yield
    finally:
        for stream in (sys.stdout, sys.stderr):
            if isinstance(stream, _PipeSafe):
                stream.flush()  # before the interpreter does, unguarded, at exit
        sys.stdout, sys.stderr = saved


def running_in_ci() -> bool:
    return any(os.environ.get(name) for name in ("CI", "GITHUB_ACTIONS", "GITLAB_CI", "BUILDKITE"))


# What a terminal takes as a command rather than text: the C0 controls but
# line feed and tab (ESC, BEL, carriage return, backspace among them), DEL
# and the C1 controls (U+0080-U+009F; U+009B starts a command as ESC [ does).
_CONTROLS = [*range(0x00, 0x09), *range(0x0B, 0x20), *range(0x7F, 0xA0)]
_SHOWN = dict.fromkeys(_CONTROLS, "\N{REPLACEMENT CHARACTER}")
_ESCAPED = {code: f"\\u{code:04x}" for code in range(0x7F, 0xA0)}


def printable(text: str) -> str:
    """``text`` safe to write to a terminal: every control character in it
    (stored data may hold any) shown as U+FFFD, line breaks and tabs kept."""
    return text if text.isprintable() else text.translate(_SHOWN)


def to_json(obj: Any) -> str:
    """JSON with every value exact. json escapes the C0 controls; DEL and
    the C1 controls, which it leaves as they are, are escaped too (they can
    stand only inside a string), so no terminal reads one as a command."""
    return json.dumps(obj, ensure_ascii=False, indent=2).translate(_ESCAPED)


class NullProgress:
    """Stands in for a progress bar where none should be drawn."""

    def update(self, completed: int, total: int | None = None, description: str | None = None) -> None:
        pass


class _RichProgress:
    def __init__(self, progress: Any, task: Any) -> None:
        self._progress = progress
        self._task = task

    def update(self, completed: int, total: int | None = None, description: str | None = None) -> None:
        if total is None:
            total = next((t.total for t in self._progress.tasks if t.id == self._task), None)
        # An estimate (bytes read ahead, a count that grew) never shows more than 100%.
        kwargs: dict[str, Any] = {"completed": min(completed, total) if total else completed}
        if total is not None:
            kwargs["total"] = total
        if description is not None:
            kwargs["description"] = description
        self._progress.update(self._task, **kwargs)


def _table(columns: Sequence[str], cells: Sequence[Sequence[str]], title: str | None) -> Table:
    """A rich table of ``cells``, as Text, not strings: a value is data, and "[/]" in a name is no markup."""
    table = Table(title=None if title is None else Text(title), show_edge=False, header_style="bold", box=None,
                  pad_edge=False)
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in cells:
        table.add_row(*(Text(cell) for cell in row))
    return table


class Output:
    """The terminal: stdout for data, stderr for people."""

    def __init__(
        self,
        *,
        json_mode: bool = False,
        quiet: bool = False,
        verbose: bool = False,
        debug: bool = False,
        no_color: bool = False,
        stdout: TextIO | None = None,
        stderr: TextIO | None = None,
    ) -> None:
        self.json = json_mode
        self.quiet = quiet
        self.verbose = verbose
        self.debug = debug
        self._stdout = stdout or sys.stdout
        self._stderr = stderr or sys.stderr
        color = not (no_color or os.environ.get("NO_COLOR"))
        # Piped tables must not wrap their headers at an assumed 80 columns.
        width = None if _isatty(self._stdout) else 1000
        self.out = Console(file=self._stdout, no_color=not color, highlight=False, soft_wrap=False, width=width)
        self.err = Console(file=self._stderr, no_color=not color, highlight=False, stderr=True, soft_wrap=True)

    # -- data -------------------------------------------------------------
    def data(self, obj: Any, *, text: str | None = None) -> None:
        """Print a result: JSON with ``--json``, else ``text`` (or JSON) on stdout."""
        if self.json or text is None:
            self._stdout.write(to_json(obj) + "\n")
        else:
            text = printable(text)
            self._stdout.write(text if text.endswith("\n") else text + "\n")
        self._stdout.flush()

    def result(self, obj: Any, *, text: str) -> None:
        """The outcome of an action: JSON with ``--json``, else ``text`` on
        stdout unless ``--quiet``, which a cron job runs with to hear only
        about failures. Data the user asked for goes through ``data``."""
        if self.json:
            self.data(obj)
        elif not self.quiet and text:
            self.data(obj, text=text)

    def table(self, columns: Sequence[str], rows: Sequence[Sequence[Any]], *, title: str | None = None) -> None:
        """A table on stdout for people (``--json`` callers use ``data``).

        On a terminal too narrow for it (an 80-column window and the ten
        columns of ``report``), the headers would break mid-word; then each
        row is printed as a block of "column  value" lines instead, as psql's
        expanded display does. Piped output is always the table.
        """
        title = printable(title) if title is not None else None
        cells = [["" if value is None else printable(str(value)) for value in row] for row in rows]
        table = _table(columns, cells, title)
        if _isatty(self._stdout):
            natural = self.out.measure(table, options=self.out.options.update_width(10_000)).maximum
            if natural > self.out.width:
                self._records(columns, cells, title)
                return
        self.out.print(table)

    def _records(self, columns: Sequence[str], rows: Sequence[Sequence[str]], title: str | None) -> None:
        width = max(len(column) for column in columns)
        lines = [title, ""] if title else []
        for number, row in enumerate(rows):
            if number:
                lines.append("")
            lines += [f"{column.ljust(width)}  {value}" for column, value in zip(columns, row, strict=True)]
        self.line("\n".join(lines))

    def line(self, text: str) -> None:
        """Plain text on stdout (data, not status)."""
        self._stdout.write(printable(text) + "\n")

    # -- people -----------------------------------------------------------
    def info(self, message: str) -> None:
        if not self.quiet:
            self.err.print(printable(message), markup=False)

    def detail(self, message: str) -> None:
        if self.verbose and not self.quiet:
            self.err.print(printable(message), markup=False, style="dim")

    def success(self, message: str) -> None:
        if not self.quiet:
            self.err.print(printable(message), markup=False, style="green")

    def warn(self, message: str) -> None:
        self.err.print(f"Warning: {printable(message)}", markup=False, style="yellow")

    def error(self, message: str, hint: str | None = None) -> None:
        self.err.print(f"Error: {printable(message)}", markup=False, style="red")
        if hint:
            self.err.print(f"Hint: {printable(hint)}", markup=False)

    # -- interaction ------------------------------------------------------
    @property
    def interactive(self) -> bool:
        try:
            return sys.stdin.isatty() and self._stderr.isatty()
        except (AttributeError, ValueError):
            return False

    def confirm(self, question: str, *, yes: bool, what: str = "this") -> None:
        """Ask on a terminal; without one, require ``--yes`` (exit 2 otherwise)."""
        if yes:
            return
        if not self.interactive:
            raise UsageError(f"Refusing to {what} without confirmation", hint="pass --yes to confirm when not on a terminal")
        try:
            answer = typer.confirm(question, default=False, err=True)
        except typer.Abort as exc:  # Ctrl-C or Ctrl-D at the question
            self.err.print()  # the cursor is still after the question
            if isinstance(exc.__context__, KeyboardInterrupt):
                raise Interrupted("Interrupted at the question; nothing was changed") from None
            answer = False
        if not answer:
            raise UsageError("Cancelled; nothing was changed")

    @contextlib.contextmanager
    def progress(self, total: int | None, label: str, *, unit: str = "items") -> Iterator[Any]:
        """A bar on a terminal (else a NullProgress); ``unit="bytes"`` counts in kB/MB."""
        show = (not self.quiet and not self.json and not running_in_ci() and self._stderr.isatty())
        if not show:
            yield NullProgress()
            return
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        with Progress(
            TextColumn("{task.description}", markup=False), BarColumn(),
            DownloadColumn() if unit == "bytes" else MofNCompleteColumn(), TimeRemainingColumn(),
            console=self.err, transient=True,
        ) as progress:
            task = progress.add_task(label, total=total)
            yield _RichProgress(progress, task)
