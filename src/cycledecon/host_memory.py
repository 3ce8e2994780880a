"""Cheap first touches of the networks' large CPU tensors: huge pages, and reuse of freed memory.

PyTorch takes CPU tensors from malloc. glibc maps every block above its mmap threshold (at most
32 MiB by default) afresh and unmaps it on free, so each large intermediate of a forward or
backward pass pays a page fault per 4 KiB page on first touch, which on a CPU can cost as much as
the element-wise arithmetic. Inside `reusing_freed_memory` the mmap and trim thresholds are raised,
so such blocks come from the heap and stay there after a free, and one arena serves all threads.
On leaving, the thresholds and the arena limit go back to what glibc settles on by itself and the
heap's free pages are handed back. Training uses it, as every step allocates the same tensors;
blockwise inference does not, as tensors of changing sizes leave fragments that raise its peak
memory above the block budget's estimate. Written here because neither PyTorch (its CPU caching
allocator is for mobile builds) nor another library exposes it; a no-op where the C library has no
`mallopt` (macOS, musl, Windows).

`use_huge_pages_for_tensors`, called when cycledecon is imported, turns on PyTorch's own switch for
transparent huge pages on CPU tensors of 2 MiB and more (Linux), so a fresh tensor costs one page
fault per 2 MiB; it keeps no freed memory, so it suits inference too. It has no effect where the
kernel's THP setting is `never`.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import os
from collections.abc import Iterator

#: mallopt parameters (glibc's malloc.h).
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_ARENA_MAX = -1, -3, -8
#: mallopt takes an int: inside, blocks up to 2 GiB come from the heap and stay there when freed.
REUSE = {M_MMAP_THRESHOLD: 2**31 - 1, M_TRIM_THRESHOLD: 2**31 - 1, M_ARENA_MAX: 1}
#: After: glibc's largest dynamic mmap threshold, its trim threshold at twice that (as glibc sets
#: it), and glibc's default arena limit on 64-bit systems, 8 per core (mallopt ignores 0).
AFTER = {M_MMAP_THRESHOLD: 32 * 2**20, M_TRIM_THRESHOLD: 64 * 2**20, M_ARENA_MAX: 8 * (os.cpu_count() or 1)}


@functools.cache
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    return ctypes.CDLL(name) if name else None


def _set(settings: dict[int, int]) -> bool:
    mallopt = getattr(_libc(), "mallopt", None)
    # a list, not a generator: every setting is applied even if one is refused
    return mallopt is not None and all([mallopt(parameter, value) == 1 for parameter, value in settings.items()])


@contextlib.contextmanager
def reusing_freed_memory() -> Iterator[bool]:
    """Large freed blocks are kept in the heap and reused while inside (module doc); yields
    whether glibc took the setting."""
    applied = _set(REUSE)
    try:
        yield applied
    finally:
        if applied:
            _set(AFTER)
            _libc().malloc_trim(0)


#: PyTorch's switch (read by its CPU allocator at its first allocation of 2 MiB or more).
TORCH_HUGE_PAGES = "THP_MEM_ALLOC_ENABLE"


def use_huge_pages_for_tensors() -> None:
    """Back PyTorch's large CPU tensors with transparent huge pages unless the user set the switch.

    PyTorch reads it once, so this must run before the process's first large tensor.
    """
    os.environ.setdefault(TORCH_HUGE_PAGES, "1")
