import signal
import sys

from specialist.errors import Terminated, interrupt_exit_code


def _on_sigterm(signum: int, frame: object) -> None:
    raise Terminated()


# SIGTERM (and Ctrl-C) may come while the command line's own modules load, before main()
# installs its handler: nothing has been written yet, so say so and exit with the signal's code.
signal.signal(signal.SIGTERM, _on_sigterm)
try:
    from specialist.cli import main
except KeyboardInterrupt as exc:
    print("interrupted before the command began: nothing was written", file=sys.stderr)
    sys.exit(interrupt_exit_code(exc))

main()
