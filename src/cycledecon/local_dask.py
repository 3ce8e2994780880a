"""dask without looking for a cluster where none can exist.

Left unset, dask's scheduler and its rechunk method are chosen by importing dask.distributed
(installed with bioio, slow to import) to look for a Client. While dask.distributed is not imported
no Client can exist, and dask would settle on its no-cluster choices: `local_dask` gives those
outright for the settings the caller left unset, so the same work runs without the import.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

import dask
import dask.threaded

#: dask's choices without a cluster: its threaded scheduler (as a function, not a name) and rechunking by tasks.
LOCAL_DASK = {"scheduler": dask.threaded.get, "array.rechunk.method": "tasks"}


@contextlib.contextmanager
def local_dask() -> Iterator[None]:
    """LOCAL_DASK for the settings left unset, unless dask.distributed is imported (a Client may
    exist, and dask's own lookup then costs nothing); also a decorator."""
    if "distributed" in sys.modules:
        yield
        return
    with dask.config.set({key: value for key, value in LOCAL_DASK.items() if dask.config.get(key, None) is None}):
        yield
