"""The command-line entry points' shared process set-up: quiet logs by default, `-v` for
agora's own debug logs, and a stack dump on SIGUSR1."""

import faulthandler
import logging
import signal


def setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.WARNING,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
        force=True,  # libraries configure the root logger on import
    )
    if verbose:
        logging.getLogger("agora").setLevel(logging.DEBUG)
    faulthandler.register(signal.SIGUSR1)  # kill -USR1 <pid> prints every thread's stack
