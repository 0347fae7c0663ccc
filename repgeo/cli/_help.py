"""Help texts that name things only known after a heavy import (the asset registry, the demo's methods).

Building the parser must stay light, so such names are written as ``{placeholder}`` in a description or an
argument's help and filled in only when that help is printed.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable


def lazy_help(fill: Callable[[], dict[str, str]],
              base: type[argparse.HelpFormatter] = argparse.HelpFormatter) -> type[argparse.HelpFormatter]:
    """A ``formatter_class`` that replaces every ``{key}`` of ``fill()`` in the description, the epilog and the
    argument help strings; ``fill`` runs only when help is printed."""

    class LazyHelpFormatter(base):  # type: ignore[valid-type, misc]
        def _fill(self, text: str) -> str:
            if "{" not in text:
                return text
            for key, value in fill().items():
                text = text.replace("{" + key + "}", value)
            return text

        def _format_text(self, text: str) -> str:
            return super()._format_text(self._fill(text))

        def _get_help_string(self, action: argparse.Action) -> str | None:
            text = super()._get_help_string(action)
            return None if text is None else self._fill(text)

    return LazyHelpFormatter
