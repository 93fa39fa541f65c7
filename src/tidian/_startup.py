"""Ctrl-C while the ``tidian`` command is still importing (torch, scikit-learn: seconds) ends
it quietly with the interrupted status (130) instead of a traceback of import machinery.

Imported first by ``tidian/__init__``; ``tidian.cli`` calls :func:`done` once its own imports
are made (the heavy ones come later, inside each command, where Ctrl-C ends it with status
130 through typer). Only for the command line: in a library user's program Ctrl-C stays a
KeyboardInterrupt.
"""

from __future__ import annotations

import os
import signal
import sys
import threading

ACTIVE = (
    bool(sys.argv)
    and os.path.basename(sys.argv[0]) == "tidian"
    and threading.current_thread() is threading.main_thread()
    and signal.getsignal(signal.SIGINT) is signal.default_int_handler
)


def _interrupted(signum: int, frame: object) -> None:
    sys.stderr.write("interrupted\n")
    os._exit(130)


if ACTIVE:
    signal.signal(signal.SIGINT, _interrupted)


def done() -> None:
    """The imports are made: Ctrl-C is a KeyboardInterrupt again (the commands handle it)."""
    if ACTIVE:
        signal.signal(signal.SIGINT, signal.default_int_handler)
