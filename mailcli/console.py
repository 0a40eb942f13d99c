"""The ``mailcli`` command (and ``python -m mailcli``): the console entry point.

Kept apart from ``app`` so that a Ctrl-C in the first moments of a command,
while Python is still loading typer, rich and mailcli's own modules, ends it
the way a Ctrl-C does once a command runs — one line and exit 130 — instead
of a ``KeyboardInterrupt`` traceback. Nothing has started then, so nothing is
lost. This module imports nothing of its own before that point.
"""

from __future__ import annotations

import sys

INTERRUPTED = 130  # ExitCode.INTERRUPTED, written out: errors.py is not loaded yet


def main() -> int:
    try:
        from mailcli.app import main as run

        return run()
    except KeyboardInterrupt:
        # Within a command app.fail says this; here, before or after one ran.
        if "--debug" in sys.argv[1:]:
            raise
        sys.stderr.write("Error: Interrupted\nHint: run the same command again\n")
        return INTERRUPTED
