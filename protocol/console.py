"""The command-line entry points' shared process set-up: quiet logs by default, `-v` for
eranos's own debug logs, and a stack dump on SIGUSR1."""

import argparse
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
        logging.getLogger("eranos").setLevel(logging.DEBUG)
    faulthandler.register(signal.SIGUSR1)  # kill -USR1 <pid> prints every thread's stack


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """`--help` shows each option's default, leaving out the ones that have none."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default in (None, False) or isinstance(action.default, list):
            return action.help or ""
        return super()._get_help_string(action)
