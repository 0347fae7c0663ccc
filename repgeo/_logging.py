"""The ``repgeo`` logger and the command line's verbosity.

Library code reports progress on ``logging.getLogger("repgeo")`` (no handler of its own: an application decides
where it goes). The ``repgeo`` command calls :func:`configure` once: one handler on stderr that prints plain
messages, at INFO by default, WARNING with ``-q`` and DEBUG with ``-v``; below ``-v`` the noise of the libraries
it drives (transformers' loading bars and warnings, the hub's download bars) is silenced.
"""

from __future__ import annotations

import logging
import sys

logger = logging.getLogger("repgeo")

_HANDLER_NAME = "repgeo-cli"


def level_for(verbose: int, quiet: bool) -> int:
    """The log level of ``-v`` (counted) and ``-q``: WARNING when quiet, DEBUG with ``-v``, else INFO."""
    if quiet:
        return logging.WARNING
    return logging.DEBUG if verbose > 0 else logging.INFO


def configure(verbose: int = 0, quiet: bool = False) -> logging.Logger:
    """Route the ``repgeo`` logger to stderr at the level of ``-v`` / ``-q`` (idempotent: one handler) and
    silence transformers and the hub unless ``verbose``. Returns the logger."""
    for handler in [h for h in logger.handlers if h.get_name() == _HANDLER_NAME]:
        logger.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    logger.setLevel(level_for(verbose, quiet))
    logger.propagate = False
    quiet_libraries(not verbose)
    return logger


def quiet_libraries(quiet: bool) -> None:
    """Silence (``quiet``) or restore transformers' and huggingface_hub's progress bars and info / warning
    messages, through their own logging switches. Only modules already imported are touched, so calling this
    imports nothing heavy; :func:`quiet_loaded_libraries` repeats it after an import."""
    import os

    if quiet:
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    quiet_loaded_libraries(quiet)


def quiet_loaded_libraries(quiet: bool) -> None:
    """Apply :func:`quiet_libraries` to transformers / huggingface_hub when they are already imported."""
    if "transformers" in sys.modules:
        from transformers.utils import logging as tlog

        if quiet:
            tlog.set_verbosity_error()
            tlog.disable_progress_bar()
        else:
            tlog.set_verbosity_warning()
            tlog.enable_progress_bar()
    if "huggingface_hub" in sys.modules:
        from huggingface_hub.utils import disable_progress_bars, enable_progress_bars

        (disable_progress_bars if quiet else enable_progress_bars)()
