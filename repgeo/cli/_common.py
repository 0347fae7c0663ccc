"""What every subcommand shares: the global flags (``-v``, ``-q``, ``--debug``), argument types that refuse bad
numbers by the argument's name, the help formatter that shows defaults, and the one-line error report.

Errors: a command raises; :func:`report` turns the exception into one line on stderr (``repgeo CMD: message``,
newlines folded) and the exit status 2, unless ``--debug`` asks for the traceback.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any


class Formatter(argparse.ArgumentDefaultsHelpFormatter):
    """``(default: X)`` after every option that has a default and does not show it already."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if "default" in text or action.default in (None, False, argparse.SUPPRESS) or action.nargs == 0:
            return text
        return super()._get_help_string(action)


class CommandListFormatter(Formatter):
    """The top-level help: each command and its one-line help on one line (argparse measures the listed commands
    two columns short of where it prints them)."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=26, width=100)

    def add_argument(self, action: argparse.Action) -> None:
        super().add_argument(action)
        if isinstance(action, argparse._SubParsersAction):
            self._action_max_length += 2


class RawFormatter(Formatter, argparse.RawDescriptionHelpFormatter):
    """:class:`Formatter` that prints the description as written (for module docstrings with examples)."""


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose usage errors are one line on stderr (status 2), naming the command."""

    def error(self, message: str) -> Any:  # type: ignore[override]
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


class CommandError(Exception):
    """A refused command: ``message`` is printed as one line, the process exits with ``status``."""

    def __init__(self, message: str, status: int = 2) -> None:
        super().__init__(message)
        self.status = status


def add_global_flags(parser: argparse.ArgumentParser, *, on_subcommand: bool) -> None:
    """``-v``, ``-q`` and ``--debug``; on a subcommand they default to "unset", so ``repgeo -v audit`` and
    ``repgeo audit -v`` both count."""
    default: dict[str, Any] = {"default": argparse.SUPPRESS} if on_subcommand else {}
    g = parser.add_argument_group("output")
    g.add_argument("-v", "--verbose", action="count", help="more detail, and the libraries' own messages and bars",
                   **(default or {"default": 0}))
    g.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors, no progress bars",
                   **default)
    g.add_argument("--debug", action="store_true", help="show the traceback of an error", **default)


def count(minimum: int) -> Any:
    """An argparse type: an integer >= ``minimum`` (argparse names the argument in its error)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    parse.__name__ = f"integer >= {minimum}"
    return parse


def one_line(message: str) -> str:
    """``message`` with its lines joined by ``"; "`` (a multi-line library message stays one line)."""
    parts = [p.strip() for p in str(message).splitlines() if p.strip()]
    return "; ".join(parts)


def _expected(exc: BaseException) -> bool:
    """Whether ``exc`` reports bad input: one of repgeo's own errors, or an ``OSError`` / ``ValueError`` /
    ``TypeError`` (the types bad data, files and arguments raise)."""
    return type(exc).__module__.startswith("repgeo") or isinstance(exc, (OSError, ValueError, TypeError))


def describe(exc: BaseException) -> str:
    """The user-facing text of an exception: its message; a configuration error says so; an unexpected kind of
    error carries its type name and points at ``--debug``."""
    text = str(exc) or type(exc).__name__
    if type(exc).__name__ == "ConfigError":
        return f"configuration error: {text}"
    if not _expected(exc):
        return f"{type(exc).__name__}: {text} (rerun with --debug for the traceback)"
    return text


def report(command: str, exc: BaseException) -> int:
    """Print ``exc`` as one line on stderr for ``repgeo COMMAND``; returns the exit status (that of a
    :class:`CommandError`, else 2)."""
    status = exc.status if isinstance(exc, CommandError) else 2
    print(one_line(f"repgeo {command}: {describe(exc)}"), file=sys.stderr)
    return status


def leave_process_group() -> None:
    """Destroy the default ``torch.distributed`` process group if one is up (under torchrun, before exit)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
