"""The command-line entry points' shared process set-up: quiet logs by default, `-v` for
eranos's own debug logs, a stack dump on SIGUSR1, and option defaults from the environment
(`ERANOS_<OPTION>`) or a TOML file, so the command line always wins over both."""

import argparse
import faulthandler
import io
import logging
import os
import signal
import tomllib
from collections.abc import Mapping
from pathlib import Path

ENV_PREFIX = "ERANOS_"
TRUE, FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off", "")


def setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.WARNING,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
        force=True,  # libraries configure the root logger on import
    )
    if verbose:
        logging.getLogger("eranos").setLevel(logging.DEBUG)
    else:  # libp2p logs every failed dial at ERROR; eranos reports unreachable peers itself
        logging.getLogger("libp2p").setLevel(logging.CRITICAL)
    try:
        faulthandler.register(signal.SIGUSR1)  # kill -USR1 <pid> prints every thread's stack
    except (io.UnsupportedOperation, ValueError):  # stderr is no file (captured, in tests)
        pass


class Parser(argparse.ArgumentParser):
    """argparse, but a mistake on the command line is one line, not the usage block and then it."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: {message} ('{self.prog} --help' lists the options)\n")


def arg_type(parse):
    """An argparse type from a parser that raises ValueError, keeping its message."""

    def typed(text: str):
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    typed.__name__ = parse.__name__
    return typed


def env_name(dest: str) -> str:
    return ENV_PREFIX + dest.upper()


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """`--help` shows each option's default (leaving out the ones that have none) and the
    environment variable that sets it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default not in (None, False) and not isinstance(action.default, list):
            text = super()._get_help_string(action)
        if _settable(action):
            text += f" [env {env_name(action.dest)}]"
        return text


def _settable(action: argparse.Action) -> bool:
    return bool(action.option_strings) and action.dest not in ("help", "version")


def _parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    found = [parser]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):
                found += _parsers(sub)
    return found


def _converted(parser: argparse.ArgumentParser, action: argparse.Action, value: object, source: str):
    if isinstance(action, argparse._StoreTrueAction):
        text = str(value).lower()
        if isinstance(value, bool) or text in TRUE + FALSE:
            return value if isinstance(value, bool) else text in TRUE
        parser.error(f"{source}: expected true or false, got {value!r}")
    if isinstance(action, argparse._AppendAction):
        items = value if isinstance(value, list) else str(value).split(",")
        return [_converted(parser, _one(action), item, source) for item in items if str(item).strip()]
    if isinstance(value, list):
        value = ",".join(str(v) for v in value)
    try:
        return action.type(str(value)) if action.type else str(value)
    except (ValueError, TypeError, argparse.ArgumentTypeError) as exc:
        parser.error(f"{source}: {exc}")


def _one(action: argparse.Action) -> argparse.Action:
    return argparse.Action(action.option_strings, action.dest, type=action.type)


def set_defaults(parser: argparse.ArgumentParser, values: Mapping[str, object], where: str) -> None:
    """Options' defaults from `values` (keys as the option names, '-' or '_'); an option given
    a value this way is no longer required on the command line."""
    actions = {a.dest: a for a in parser._actions if _settable(a)}
    for key, value in values.items():
        action = actions.get(key.replace("-", "_"))
        if action is None:
            parser.error(f"{where}: unknown option {key!r} (known: {', '.join(sorted(actions))})")
        action.default = _converted(parser, action, value, f"{where} {key}")
        action.required = False


def read_environment(parser: argparse.ArgumentParser) -> None:
    """Every option of `parser` and its subcommands settable as ERANOS_<OPTION>."""
    for p in _parsers(parser):
        for action in p._actions:
            name = env_name(action.dest)
            if _settable(action) and name in os.environ:
                set_defaults(p, {action.dest: os.environ[name]}, name)


def read_file(parser: argparse.ArgumentParser, path: Path) -> None:
    """Defaults from a TOML file of `option = value` lines; call before read_environment, so
    the environment wins over the file, and the command line over both."""
    try:
        values = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        parser.error(f"cannot read {path}: {exc}")
    set_defaults(parser, values, str(path))


def process_started() -> float:
    """When this process started (unix seconds), from /proc on Linux; now elsewhere."""
    import time

    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        boot = next(
            int(line.split()[1])
            for line in Path("/proc/stat").read_text().splitlines()
            if line.startswith("btime")
        )
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return time.time()
