"""The boundary between user-facing entry points (CLI, Snakemake scripts) and the library.

User problems (CycledeconError) become one clear line and exit status 1, and so do the file
system's refusals of a named path (no permission, disk full, read-only, a file where a folder
belongs) that outputs' early checks cannot foresee; programming errors keep their traceback.
Logging goes to the rule's log file when there is one. dask runs without looking for a cluster
(`local_dask`).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import sys
from collections.abc import Iterator
from pathlib import Path

from cycledecon.errors import CycledeconError
from cycledecon.local_dask import local_dask

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
#: OSErrors on a named path that the user's file system, not the library, causes.
FILE_SYSTEM_ERRNOS = frozenset({errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT,
                                errno.ENOTDIR, errno.EISDIR, errno.EEXIST, errno.ENAMETOOLONG})


def setup_logging(log_path: str | Path | None = None, level: int = logging.INFO) -> None:
    """Send the library's logging to `log_path` (a rule's log) or to stderr."""
    handler: logging.Handler
    if log_path is None:
        handler = logging.StreamHandler(sys.stderr)
    else:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        Path(log_path).write_text("")
        # appending, as the stderr that user_errors_exit sends to the same file does: two handles
        # that each keep their own offset would overwrite each other's lines
        handler = logging.FileHandler(log_path, mode="a")
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    logging.basicConfig(level=level, handlers=[handler], force=True)


@contextlib.contextmanager
def user_errors_exit(log_path: str | Path | None = None) -> Iterator[None]:
    """Run a block; a CycledeconError prints `error: <message>` (also to the log file, if any) and exits 1.

    In a Snakemake script, stderr is redirected to the rule's log file too, so progress bars and
    warnings land there; the one-line error still reaches the terminal through the original stderr.
    dask runs inside `local_dask`: no command or rule has a cluster.
    """
    setup_logging(log_path)
    with contextlib.ExitStack() as stack:
        stack.enter_context(local_dask())
        if log_path is not None:
            stream = stack.enter_context(open(log_path, "a"))
            stack.enter_context(contextlib.redirect_stderr(stream))
        try:
            yield
        except (CycledeconError, OSError) as exc:
            if isinstance(exc, CycledeconError):
                message = f"error: {exc}"
            elif exc.errno in FILE_SYSTEM_ERRNOS and exc.filename is not None:
                message = f"error: {exc.filename}: {exc.strerror}"
            else:
                raise
            if log_path is not None:  # without a log file, logging goes to the stderr printed to here
                logging.getLogger("cycledecon").error(message)
            print(message, file=sys.__stderr__)
            raise SystemExit(1) from None
