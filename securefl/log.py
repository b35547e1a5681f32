"""Logging: library modules log to children of the "securefl" logger and never print; entry points
(the command line) decide where the records go with `configure`.

No handler is installed on import: until an application configures logging, Python's last-resort
handler shows WARNING and above on stderr, so a warning (e.g. DP noise that drowns the signal) is
never silent, and INFO records stay quiet.
"""

from __future__ import annotations

import logging
import sys

from rich.console import Console

LOGGER = "securefl"


class _Stderr(logging.StreamHandler):
    """Writes to whatever sys.stderr is when a record arrives (test runners and progress bars swap it)."""

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, _value: object) -> None:
        pass


_installed: list[logging.Handler] = []  # the handler `configure` added last


def configure(level: int = logging.INFO, console: Console | None = None) -> logging.Handler:
    """Route securefl's records at `level` and above: through `console` (rich, drawn above a progress bar)
    when it is a terminal, else as plain 'securefl: LEVEL: message' lines on stderr. Returns the handler,
    which replaces the one an earlier call installed. Records still propagate to the root logger."""
    logger = logging.getLogger(LOGGER)
    while _installed:
        logger.removeHandler(_installed.pop())
    if console is not None and console.is_terminal:
        from rich.logging import RichHandler

        handler: logging.Handler = RichHandler(console=console, show_time=False, show_path=False)
    else:
        handler = _Stderr()
        handler.setFormatter(logging.Formatter("securefl: %(levelname)s: %(message)s"))
    logger.addHandler(handler)
    _installed.append(handler)
    logger.setLevel(level)
    return handler
