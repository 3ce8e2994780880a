"""Progress a person can see while Snakemake runs a long job.

A workflow script's stderr goes to the rule's log file (cycledecon.boundary), so tqdm's bars land
where nobody watching the terminal looks. `echo_progress` keeps the log file exactly as it was and
also echoes the bars to the terminal as whole lines tagged with the job: when a bar starts, then at
most once per interval, and when it ends. Snakemake passes a job's stderr through to the terminal;
whole lines from jobs running side by side stay readable where in-place bars would overwrite each
other.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any, TextIO

#: Seconds between two echoed lines of one bar (its first and last state are always echoed).
ECHO_INTERVAL_S = 30.0


class ProgressEcho:
    """A stderr stand-in: everything goes to `log`; tqdm's updates ('\\r' + the bar) are also
    written to `terminal` as '[tag] bar' lines, throttled to one per `interval` seconds."""

    def __init__(self, log: TextIO, terminal: TextIO, tag: str, interval: float = ECHO_INTERVAL_S,
                 clock: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        self.log, self.terminal, self.tag = log, terminal, tag
        self.interval, self.clock = interval, clock
        self.pending: str | None = None  # the latest bar state not echoed yet
        self.echoed_at: float | None = None  # when this bar was last echoed (None: a new bar)

    def write(self, text: str) -> int:
        written = self.log.write(text)
        if "\r" in text:
            status = text.rpartition("\r")[2].strip()
            if status:
                self.pending = status
                if self.echoed_at is None or self.clock() - self.echoed_at >= self.interval:
                    self.echo()
        elif text.strip() == "" and "\n" in text:  # tqdm ends a bar with a bare newline
            if self.pending is not None:
                self.echo()
            self.echoed_at = None
        return written

    def echo(self) -> None:
        """Write the pending bar state to the terminal as one tagged line."""
        self.terminal.write(f"[{self.tag}] {self.pending}\n")
        self.terminal.flush()
        self.pending, self.echoed_at = None, self.clock()

    def flush(self) -> None:
        self.log.flush()

    def __getattr__(self, name: str) -> Any:
        """Anything else (encoding, fileno, isatty…) is the log file's, so tqdm formats as before."""
        return getattr(self.log, name)


@contextlib.contextmanager
def echo_progress(tag: str, interval: float = ECHO_INTERVAL_S) -> Iterator[None]:
    """Within the block, progress bars written to stderr are also echoed to the process's original
    stderr (the terminal Snakemake shows), tagged with `tag` (the job's campaign or sample)."""
    with contextlib.redirect_stderr(ProgressEcho(sys.stderr, sys.__stderr__, tag, interval)):
        yield


def echo_warnings(tag: str, logger: logging.Logger, stream: TextIO | None = None) -> logging.Handler:
    """Also send `logger`'s warnings to `stream` (default: the process's original stderr, the
    terminal Snakemake shows), tagged with `tag`; the log file keeps them too. Returns the handler."""
    handler = logging.StreamHandler(stream if stream is not None else sys.__stderr__)
    handler.setLevel(logging.WARNING)
    handler.setFormatter(logging.Formatter(f"[{tag}] %(levelname)s: %(message)s"))
    logger.addHandler(handler)
    return handler
