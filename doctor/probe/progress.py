"""A status line on the terminal while a slow probe runs (a driver that takes seconds).

A run normally ends in well under a second and prints nothing here. When it is still going
after ``DELAY`` seconds, and standard error is a terminal, one line says what it waits for
and for how long, rewritten in place until the run ends, then erased. Nothing is written
when standard error is a file or a pipe (tickets, CI logs, ``--format json``).
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from typing import TextIO

__all__ = ["DELAY", "ProgressLine"]

DELAY = 1.0  # seconds of silence before the line appears
INTERVAL = 0.25


class ProgressLine:
    """``with ProgressLine(waiting):`` where ``waiting()`` names what still runs."""

    def __init__(
        self,
        waiting: Callable[[], list[str]],
        *,
        stream: TextIO | None = None,
        delay: float = DELAY,
    ) -> None:
        self._waiting = waiting
        self._stream = stream if stream is not None else sys.stderr
        self._delay = delay
        self._done = threading.Event()
        self._thread: threading.Thread | None = None
        self._shown = False

    def __enter__(self) -> ProgressLine:
        if _is_terminal(self._stream):
            self._thread = threading.Thread(target=self._run, name="progress", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        if self._thread is not None:
            self._thread.join()
        if self._shown:
            self._write("\r\x1b[K")

    def _run(self) -> None:
        started = time.monotonic()
        if self._done.wait(self._delay):
            return
        while not self._done.is_set():
            names = self._waiting()
            what = ", ".join(names) if names else "the checks"
            seconds = time.monotonic() - started
            self._write(f"\r\x1b[Ktorch-doctor: waiting for {what} ({seconds:.0f} s)")
            self._shown = True
            self._done.wait(INTERVAL)

    def _write(self, text: str) -> None:
        try:
            self._stream.write(text)
            self._stream.flush()
        except (OSError, ValueError):
            pass  # a closed terminal is no reason to fail the run


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
