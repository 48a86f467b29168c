"""The allocator settings: freed heap pages go back to the system when asked, so a long CPU run's
resident memory does not grow with the varying size of its masked-head tensors."""

import platform

import psutil
import pytest
import torch

from core.allocator import release_free_memory, tune_allocator

pytestmark = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
    reason="the allocator settings apply to glibc only",
)


def rss_mb() -> float:
    return psutil.Process().memory_info().rss / 2**20


def test_freed_blocks_between_live_ones_are_returned_on_release():
    assert tune_allocator()
    # Blocks of varying size with small live tensors between them: once the big ones are freed, their
    # pages sit inside the heap, where the tuned allocator keeps them resident until released.
    big, small = [], []
    for i in range(40):
        big.append(torch.ones(1_000_000 + 37_000 * i))  # 4-9 MB each, touched
        small.append(torch.ones(1000))
    del big
    before = rss_mb()
    assert release_free_memory()
    after = rss_mb()
    assert before - after > 100, (before, after)  # about 250 MB were free inside the heap
