"""Process hygiene: however the harness ends — a normal exit, Ctrl-C, SIGTERM from a cancelled
CI job, a crash — no QEMU process, socket or guest-RAM file stays behind.

* Each board works in a private 0700 folder (``/dev/shm/cosim-<pid>-*``): sockets and RAM file.
* Boards still running at exit are stopped (``atexit``); SIGTERM unwinds like Ctrl-C.
* Folders of harness processes that died without cleaning up are swept at the next start.
* QEMU itself dies with the harness (the engine sets PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import tempfile
import threading
import weakref
from pathlib import Path
from typing import Protocol

WORKDIR_PARENT = Path("/dev/shm") if Path("/dev/shm").is_dir() else Path(tempfile.gettempdir())
WORKDIR_PREFIX = "cosim-"


class Stoppable(Protocol):
    def stop(self) -> None: ...


_live: weakref.WeakSet[Stoppable] = weakref.WeakSet()


@atexit.register
def _stop_live() -> None:
    for board in list(_live):
        board.stop()


def _terminate_like_interrupt(signum: int, frame: object) -> None:
    # KeyboardInterrupt, not SystemExit: pytest ends a session on it (a SystemExit inside a test
    # is only that test's failure, and the run would go on booting boards).
    raise KeyboardInterrupt(f"signal {signum}")


def _unwind_on_sigterm() -> None:
    if (threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL):
        signal.signal(signal.SIGTERM, _terminate_like_interrupt)


def sweep_stale_workdirs() -> None:
    """Removes private folders of harness processes that died without cleaning up."""
    for folder in WORKDIR_PARENT.glob(f"{WORKDIR_PREFIX}*"):
        try:
            pid = int(folder.name.split("-")[1])
        except (IndexError, ValueError):
            continue
        if not Path(f"/proc/{pid}").exists():
            shutil.rmtree(folder, ignore_errors=True)


def open_workdir(board: Stoppable) -> Path:
    """A private folder for a board that is starting; the board is stopped at exit if it still
    runs then."""
    sweep_stale_workdirs()
    _unwind_on_sigterm()
    _live.add(board)
    return Path(tempfile.mkdtemp(prefix=f"{WORKDIR_PREFIX}{os.getpid()}-", dir=WORKDIR_PARENT))


def close_workdir(board: Stoppable, workdir: Path) -> None:
    shutil.rmtree(workdir, ignore_errors=True)
    _live.discard(board)
