"""The ``mailcli`` command (and ``python -m mailcli``): the console entry point.

Kept apart from ``app`` so that a Ctrl-C or SIGTERM in the first moments of a
command, while Python is still loading typer, rich and mailcli's own modules,
ends it the way one does once a command runs — one line and exit 130 —
instead of a ``KeyboardInterrupt`` traceback or death by the signal (exit
143, nothing said). Nothing has started then, so nothing is lost. This module
imports nothing of its own before that point.
"""

from __future__ import annotations

import signal
import sys
from typing import Any

INTERRUPTED = 130  # ExitCode.INTERRUPTED, written out: errors.py is not loaded yet


def _terminate(signum: int, frame: Any) -> None:
    """SIGTERM while the modules load: a Ctrl-C (``app.main`` installs its own next)."""
    raise KeyboardInterrupt


def main() -> int:
    try:
        if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:  # an ignored SIGTERM stays ignored
            signal.signal(signal.SIGTERM, _terminate)
        from mailcli.app import main as run

        return run()
    except KeyboardInterrupt:
        # Within a command app.fail says this; here, before or after one ran.
        if "--debug" in sys.argv[1:]:
            raise
        sys.stderr.write("Error: Interrupted\nHint: run the same command again\n")
        return INTERRUPTED
