"""The C allocator's settings for batch workloads (no torch import: the command line sets them first)."""

from __future__ import annotations

import ctypes
import functools
import os
import sys

#: glibc's ``mallopt`` parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


@functools.lru_cache(maxsize=1)
def reuse_freed_memory(mmap_threshold: int = 1 << 30) -> bool:
    """Let glibc keep freed blocks of up to ``mmap_threshold`` bytes for reuse (True when set).

    A batch's large tensors (NRMS evaluation gathers ~240 MB of cached Q/K/V per 1,024 users)
    are above glibc's default mmap threshold (at most 32 MB), so each is a fresh ``mmap`` that is
    unmapped when freed and page-faulted again, page by page, by the next batch: measured on the
    2-core Xeon, 776k page faults and ~22% of the CPU time of NRMS's evaluation of
    ``mlsmall_mind``'s dev split (9 faults with this set), and 24% of the CPU time of training
    300 NRMS batches and evaluating MIND-large's 376k dev impressions. Raising the threshold (and
    the trim threshold with it) makes glibc reuse freed memory as tcmalloc or jemalloc would
    (PyTorch's CPU tuning guide suggests those); the price is a peak RSS ~7% higher (4,365 ->
    4,653 MiB for that MIND-large run), as the heap keeps what it freed. A no-op off glibc or with
    ``NEWSRANK_MALLOC=default`` (then glibc's ``MALLOC_*_`` variables apply as usual).
    Process-wide, so the command line calls it, not the library.
    """
    if os.environ.get("NEWSRANK_MALLOC", "") == "default" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl or another libc
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, mmap_threshold)) and bool(mallopt(_M_TRIM_THRESHOLD, min(2 * mmap_threshold, 2**31 - 1)))
