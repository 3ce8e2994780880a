"""Reuse of freed host memory between the networks' large CPU tensors (glibc's malloc).

PyTorch takes CPU tensors from malloc. glibc maps every block above its mmap threshold (at most
32 MiB by default) afresh and unmaps it on free, so each large intermediate of a forward or
backward pass pays a page fault per 4 KiB page on first touch — on a CPU that costs about as much
as the element-wise operations themselves. `reuse_freed_memory` raises the mmap and trim thresholds
so such blocks come from the heap and stay there after a free, and keeps one arena, so that blocks
freed by one thread (dask runs G in worker threads) serve the next. At most TRIM_THRESHOLD_BYTES of
free memory are kept above the heap's top before it is returned. Written here because neither
PyTorch (its CPU caching allocator is for mobile builds) nor another library exposes it; a no-op
where the C library has no `mallopt` (macOS, musl, Windows).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging

log = logging.getLogger(__name__)

#: mallopt parameters (glibc's malloc.h).
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_ARENA_MAX = -1, -3, -8
#: mallopt takes an int: blocks up to 2 GiB come from the heap, and up to as much free memory stays.
MMAP_THRESHOLD_BYTES = TRIM_THRESHOLD_BYTES = 2**31 - 1


@functools.cache
def reuse_freed_memory() -> bool:
    """Set glibc's malloc to keep and reuse large freed blocks (module doc), once per process;
    whether it took effect."""
    name = ctypes.util.find_library("c")
    libc = ctypes.CDLL(name) if name else None
    mallopt = getattr(libc, "mallopt", None)
    if mallopt is None:
        return False
    applied = all(mallopt(parameter, value) == 1 for parameter, value in
                  ((M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES), (M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES),
                   (M_ARENA_MAX, 1)))  # fmt: skip
    log.debug("malloc keeps freed blocks for reuse: %s", applied)
    return applied
