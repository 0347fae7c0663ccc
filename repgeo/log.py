"""The ``repgeo`` logger and the command line's verbosity.

Library code reports progress on ``logging.getLogger("repgeo")`` (no handler of its own: an application decides
where it goes). The ``repgeo`` command calls :func:`configure` once: one handler on stderr that prints plain
messages, at INFO by default, WARNING with ``-q`` and DEBUG with ``-v``; and runs the command inside
:func:`quiet_libraries` unless ``-v``, which silences the libraries it drives (transformers' loading bars and
warnings, the hub's download bars) and restores them afterwards.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings
from collections.abc import Callable, Iterator
from typing import Any

logger = logging.getLogger("repgeo")

_HANDLER_NAME = "repgeo-cli"


def level_for(verbose: int, quiet: bool) -> int:
    """The log level of ``-v`` (counted) and ``-q``: WARNING when quiet, DEBUG with ``-v``, else INFO."""
    if quiet:
        return logging.WARNING
    return logging.DEBUG if verbose > 0 else logging.INFO


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A handler that writes to whatever ``sys.stderr`` is at the time of each record (a test's capture, a
    redirect), never to a stream that was replaced or closed since."""

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def configure(verbose: int = 0, quiet: bool = False) -> logging.Logger:
    """Route the ``repgeo`` logger to stderr at the level of ``-v`` / ``-q`` (idempotent: one handler). Returns
    the logger."""
    for handler in [h for h in logger.handlers if h.get_name() == _HANDLER_NAME]:
        logger.removeHandler(handler)
    handler = _StderrHandler()
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    logger.setLevel(level_for(verbose, quiet))
    logger.propagate = False
    return logger


_ENV = {"TRANSFORMERS_VERBOSITY": "error", "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1"}


@contextlib.contextmanager
def quiet_libraries(quiet: bool = True) -> Iterator[None]:
    """Within the block (when ``quiet``), transformers' and huggingface_hub's progress bars and info / warning
    messages are off, through their own switches: environment variables for a library imported inside the block,
    ``transformers.utils.logging`` and ``huggingface_hub.utils`` for one imported already, and once more for
    transformers on a model load (modules imported inside the block). Everything is restored at the end."""
    if not quiet:
        yield
        return
    saved_env = {k: os.environ.get(k) for k in _ENV}
    for key, value in _ENV.items():
        os.environ.setdefault(key, value)
    loaded = {m for m in ("transformers", "huggingface_hub") if m in sys.modules}
    restore = _switch_loaded()
    try:
        yield
    finally:
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        with warnings.catch_warnings():  # the hub keeps its import-time choice of bars, and would say so
            warnings.simplefilter("ignore")
            restore()
            _reset_new(loaded)


def _switch_loaded() -> Callable[[], None]:
    """Turn off the bars and messages of transformers / huggingface_hub if imported; returns the undo."""
    undo: list[Callable[[], None]] = []
    if "transformers" in sys.modules:
        from transformers.utils import logging as tlog

        level, bars = tlog.get_verbosity(), tlog.is_progress_bar_enabled()
        tlog.set_verbosity_error()
        tlog.disable_progress_bar()
        undo.append(lambda: (tlog.set_verbosity(level), tlog.enable_progress_bar() if bars else None))
    if "huggingface_hub" in sys.modules:
        from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

        was_off = are_progress_bars_disabled()
        disable_progress_bars()
        undo.append(lambda: None if was_off else enable_progress_bars())
    return lambda: [u() for u in undo] and None


def _reset_new(loaded_before: set[str]) -> None:
    """Defaults back (warnings and bars on) in transformers / huggingface_hub when first imported inside the
    quiet block, where the environment switched them off at import."""
    if "transformers" in sys.modules and "transformers" not in loaded_before:
        from transformers.utils import logging as tlog

        tlog.set_verbosity_warning()
        tlog.enable_progress_bar()
    if "huggingface_hub" in sys.modules and "huggingface_hub" not in loaded_before:
        from huggingface_hub.utils import enable_progress_bars

        enable_progress_bars()
