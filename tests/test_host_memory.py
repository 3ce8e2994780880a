"""The malloc setting that lets large freed tensors be reused (cycledecon.host_memory)."""

import ctypes
import ctypes.util
import platform

import pytest

from cycledecon.host_memory import reusing_freed_memory

GLIBC = platform.libc_ver()[0] == "glibc"
BLOCK = 64 * 2**20  # twice glibc's largest default mmap threshold


class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]  # fmt: skip


def heap_after_malloc_and_free(size: int) -> tuple[MallInfo2, MallInfo2]:
    """glibc's statistics with a block of `size` allocated, and after it is freed."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    libc.mallinfo2.restype = MallInfo2
    block = libc.malloc(size)
    held = libc.mallinfo2()
    libc.free(block)
    return held, libc.mallinfo2()


@pytest.mark.skipif(not GLIBC, reason="mallopt is glibc's")
def test_inside_a_large_block_comes_from_the_heap_and_stays_there_when_freed():
    """By default glibc maps such a block on its own (hblkhd) and unmaps it on free; inside, the
    block is heap memory (arena) and its bytes stay free in the heap (fordblks); after leaving,
    large blocks are mapped again."""
    with reusing_freed_memory() as applied:
        held, freed = heap_after_malloc_and_free(BLOCK)
    assert applied is True
    assert held.hblkhd < BLOCK <= held.arena
    assert freed.fordblks >= BLOCK
    held_after, _ = heap_after_malloc_and_free(BLOCK)
    assert held_after.hblkhd >= BLOCK

