"""Helper processes end with the process they help, however it ends.

Render workers of ``send`` and the reader processes of ``import`` wait on
pipes their parent also holds open, so a parent killed with ``kill -9``
would leave them (and, through them, multiprocessing's resource tracker)
running for good. ``die_with_parent`` makes the kernel end the helper the
moment its parent dies (``prctl(PR_SET_PDEATHSIG)`` on Linux); elsewhere a
daemon thread checks every half second whether the parent is still there.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from pathlib import Path

_PR_SET_PDEATHSIG = 1


def _linux_pdeathsig() -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def _watch(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(1)


def die_with_parent(parent: int) -> None:
    """End this process when ``parent`` (its parent's pid) ends.

    Call first thing in the helper. If the parent is already gone (it died
    before this ran), the helper ends at once.
    """
    if not _linux_pdeathsig():
        threading.Thread(target=_watch, args=(parent,), name="mailcli-lifeline", daemon=True).start()
    if os.getppid() != parent:
        os._exit(1)


def process_alive(pid: int) -> bool:
    """Is there a process ``pid`` (of any user)? Its leftovers are then not
    ours to remove."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


def dead_process_folders(parent: Path, prefix: str) -> list[Path]:
    """Folders in ``parent`` named ``prefix``, a pid and ``-...`` whose process
    has ended: what a run killed with ``kill -9`` left, which nothing else removes."""
    found = []
    with contextlib.suppress(OSError):
        for path in parent.glob(f"{prefix}*-*"):
            pid = path.name[len(prefix):].split("-", 1)[0]
            if pid.isdigit() and path.is_dir() and not path.is_symlink() and not process_alive(int(pid)):
                found.append(path)
    return found
