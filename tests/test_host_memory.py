"""Huge pages for PyTorch's large CPU tensors, and the malloc setting that lets freed ones be reused
(cycledecon.host_memory)."""

import ctypes
import ctypes.util
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from cycledecon.host_memory import TORCH_HUGE_PAGES, reusing_freed_memory

GLIBC = platform.libc_ver()[0] == "glibc"
BLOCK = 64 * 2**20  # twice glibc's largest default mmap threshold
THP_SETTING = Path("/sys/kernel/mm/transparent_hugepage/enabled")
#: Run in a fresh interpreter: the switch as cycledecon left it, and the huge-page part of a 64 MiB tensor.
CHILD = """
import os, torch, cycledecon
tensor = torch.ones(64 * 2**20 // 4)
rollup = open("/proc/self/smaps_rollup").read().splitlines()
huge_kib = next(int(line.split()[1]) for line in rollup if line.startswith("AnonHugePages:"))
print(os.environ.get("THP_MEM_ALLOC_ENABLE"), huge_kib)
"""


def fresh_interpreter(**env: str) -> tuple[str, int]:
    environment = {k: v for k, v in os.environ.items() if k != TORCH_HUGE_PAGES} | env
    switch, huge_kib = subprocess.run([sys.executable, "-c", CHILD], env=environment, check=True,
                                      stdout=subprocess.PIPE, text=True).stdout.split()
    return switch, int(huge_kib)


def kernel_gives_huge_pages() -> bool:
    return THP_SETTING.exists() and "[never]" not in THP_SETTING.read_text()


@pytest.mark.skipif(not Path("/proc/self/smaps_rollup").exists(), reason="needs Linux's /proc/self/smaps_rollup")
def test_importing_cycledecon_backs_large_tensors_with_huge_pages_unless_the_user_said_no():
    switch, huge_kib = fresh_interpreter()
    assert switch == "1"
    if kernel_gives_huge_pages():  # where the kernel's setting is `never`, the switch has no effect
        assert huge_kib >= 32 * 1024  # at least half the tensor (the kernel may split the rest)
    switch, huge_kib = fresh_interpreter(**{TORCH_HUGE_PAGES: "0"})
    assert switch == "0"
    if THP_SETTING.exists() and "[madvise]" in THP_SETTING.read_text():  # `always` would give them anyway
        assert huge_kib < 32 * 1024


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

