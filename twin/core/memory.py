"""Giving freed memory back to the operating system.

CPython and numpy free their objects, but glibc's allocator keeps freed heap pages
(and, after large frees, raises its mmap threshold so later mid-sized arrays land on
the heap too). After dropping most of the state (``reset_state``) RSS would stay at
its high-water mark; ``malloc_trim`` returns the free pages.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging

log = logging.getLogger(__name__)
_libc: ctypes.CDLL | None = None
_tried = False


def _malloc_trim() -> bool:
    global _libc, _tried
    if not _tried:
        _tried = True
        name = ctypes.util.find_library("c")
        try:
            lib = ctypes.CDLL(name) if name else None
            if lib is not None and hasattr(lib, "malloc_trim"):
                _libc = lib
        except OSError:  # not glibc (musl, macOS): nothing to trim
            _libc = None
    if _libc is None:
        return False
    return bool(_libc.malloc_trim(0))


def release_memory() -> bool:
    """Collect garbage, then hand free heap pages back to the OS (glibc only)."""
    gc.collect()
    try:
        return _malloc_trim()
    except Exception:  # noqa: BLE001 - best effort, never fatal
        log.debug("malloc_trim failed", exc_info=True)
        return False
