"""`python -m specialist` and the `specialist` program: the command line with its signals.

SIGTERM is Ctrl-C's twin (exit 143 instead of 130) from the first moment, even while the
command line's own modules load. Once the command has finished, its outputs are complete: a
signal that comes while the interpreter shuts down ends the process at once with the signal's
code and a line saying so, instead of a death by signal or a traceback from the shutdown. In
the last part of the shutdown (unloading modules, which takes seconds with torch loaded) Python
no longer runs signal handlers and would die by the signal: there the signal is ignored, and
the process ends by itself a moment later with the command's own exit code."""

import atexit
import os
import signal
import sys

from specialist.errors import Terminated, interrupt_exit_code


def _on_sigterm(signum: int, frame: object) -> None:
    raise Terminated()


def _exit_now(signum: int, frame: object) -> None:
    os.write(2, b"interrupted as it exited: the command had finished and its outputs are complete\n")
    os._exit(143 if signum == signal.SIGTERM else 130)


def _ignore_signals() -> None:
    # Python resets handled signals to their default (death) before it unloads its modules, but
    # leaves ignored ones ignored
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_IGN)


def run() -> None:
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        from specialist.cli import main
    except KeyboardInterrupt as exc:
        print("interrupted before the command began: nothing was written", file=sys.stderr)
        sys.exit(interrupt_exit_code(exc))
    try:
        main()
    finally:
        if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:  # a background job keeps ignoring Ctrl-C
            signal.signal(signal.SIGINT, _exit_now)
        signal.signal(signal.SIGTERM, _exit_now)
        atexit.register(_ignore_signals)  # registered last, so the first to run as Python exits


if __name__ == "__main__":
    run()
