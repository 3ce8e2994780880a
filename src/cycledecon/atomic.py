"""Writing an output atomically, and replacing only what may be replaced.

Every output is written to a temporary sibling, ``.NAME.partial-<pid>``, and renamed into place
only once complete, so an interrupted run never leaves a file or store that looks finished; the
siblings a killed run left are removed by the next run of the same output. An existing output is
replaced only when it is of the expected kind (`OutputKind`): what cycledecon did not write is
refused with one line. Depends on nothing heavy, so the model files and figures use it as well.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from cycledecon.errors import CycledeconError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OutputKind:
    """What an existing output path may hold to be replaced: a test that recognises it, and its
    name for the one-line refusal."""

    name: str
    recognises: Callable[[Path], bool]


def is_regular_file(path: Path) -> bool:
    """A plain file (not a folder, not a link): what the library's fixed-name tables, reports and
    TIFFs replace when their stage is rerun."""
    return path.is_file() and not path.is_symlink()


PLAIN_FILE = OutputKind("a regular file", is_regular_file)


#: How a refusal to replace an output ends: what the user can do.
REMEDY = "move it away or choose another output"


def check_replaceable(path: str | Path, kind: OutputKind = PLAIN_FILE, remedy: str = REMEDY) -> None:
    """Refuse, before any work, an existing `path` that is not `kind`: whatever cycledecon did
    not write (a raw stack, a model, a user's folder) is never deleted."""
    path = Path(path)
    if (path.exists() or path.is_symlink()) and not kind.recognises(path):
        raise CycledeconError(f"{path}: already exists and is not {kind.name}; refusing to replace it ({remedy})")


def check_writable(path: str | Path, folder: bool = False) -> None:
    """Refuse, before any work, an output that cannot be created where it is asked for: under a
    file (`results/out.ome.zarr` with `results` a file), or in a folder without write permission.
    With `folder`, `path` is a folder to create or write into (a training's output directory)."""
    path = Path(path)
    target = path if folder else path.parent
    existing = next((p for p in (target, *target.parents) if p.exists()), Path("/"))
    if not existing.is_dir():
        raise CycledeconError(f"{path}: cannot be written: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise CycledeconError(f"{path}: cannot be written: no permission to write in {existing}")


@contextlib.contextmanager
def atomic_path(path: str | Path, kind: OutputKind = PLAIN_FILE, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling of `path`; rename it onto `path` only if the block succeeds.

    An existing `path` is replaced only when it is `kind` (checked before the block and again
    before the rename, as a long run may outlive the first check); anything else raises a
    CycledeconError and is left as it was. With `overwrite`, whatever is there is replaced (a
    link itself, not its target): the caller has made sure it is none of its inputs.
    """
    path = Path(path)
    if not overwrite:
        check_replaceable(path, kind)
    check_writable(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # made a file or locked since the check
        raise CycledeconError(f"{path}: cannot be written ({exc.strerror}: {exc.filename})") from None
    remove_leftovers(path)
    tmp = path.with_name(f".{path.name}.partial-{os.getpid()}")
    _remove(tmp)
    try:
        yield tmp
        if not overwrite:
            check_replaceable(path, kind)
    except BaseException:
        _remove(tmp)
        raise
    old = path.with_name(f".{path.name}.old-{os.getpid()}")
    if path.exists():  # moved aside first: a rename cannot replace a folder that holds files
        os.replace(path, old)
    os.replace(tmp, path)
    _remove(old)


def remove_leftovers(path: Path) -> None:
    """Remove the temporary siblings of `path` that killed runs left: `.NAME.partial-<pid>` (an
    unfinished output) and `.NAME.old-<pid>` (the previous output, killed between the renames),
    when process <pid> is no longer running. A run still going, or another output's, is left."""
    pattern = re.compile(rf"\.{re.escape(path.name)}\.(?:partial|old)-([0-9]+)")
    for sibling in path.parent.iterdir():
        match = pattern.fullmatch(sibling.name)
        if match and int(match[1]) != os.getpid() and not _running(int(match[1])):
            log.info("removing %s, left by a run that was stopped", sibling)
            _remove(sibling)


def _running(pid: int) -> bool:
    """Whether a process with this id exists (on this machine)."""
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:  # someone else's
        return True
    return True


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()
