"""Bounded, thread-safe memo tables, and the lock that serialises building cached values.

Every cache in the engine is either an ``LRU`` (bounded) or lives in a ``SparseTensor``'s own
``_derived`` table (it dies with the tensor). Reads take no lock (a dict lookup is atomic under
the GIL); inserts and evictions do. Values that own memory a kernel reads through a raw pointer
(partition bounds, converted operands) are built once under ``BUILD_LOCK`` and stored next to the
pointer, so nothing another thread does can free them while a plan still uses them.
"""
from __future__ import annotations

import threading

BUILD_LOCK = threading.RLock()  # held while a cached value is built (re-entrant: builds nest)
_MISSING = object()


class LRU:
    """At most ``maxsize`` entries; the least recently used go first.

    Two generations of ``maxsize / 2`` entries: a hit in the new one is a single dict lookup, a hit
    in the old one moves the entry to the new one, and when the new one fills up the old one is
    dropped. (Approximately LRU at the cost of a plain dict on the hot path.) A hot path may look
    in ``recent`` (the new generation, a plain dict) first and call ``get`` only on a miss."""

    def __init__(self, maxsize: int):
        self.maxsize = maxsize
        self._half = max(1, maxsize // 2)
        self._new: dict = {}
        self._old: dict = {}
        self.recent = self._new
        self._lock = threading.Lock()

    def get(self, key, default=None):
        v = self._new.get(key, _MISSING)
        if v is not _MISSING:
            return v
        v = self._old.get(key, _MISSING)
        return default if v is _MISSING else self.put(key, v)

    def put(self, key, value):
        with self._lock:
            if len(self._new) >= self._half and key not in self._new:
                self._old, self._new = self._new, {}
                self.recent = self._new
            self._new[key] = value
        return value

    def get_or_build(self, key, make):
        """The cached value for ``key``, built by ``make()`` once even when threads race."""
        v = self.get(key, _MISSING)
        if v is not _MISSING:
            return v
        with BUILD_LOCK:
            v = self.get(key, _MISSING)
            return self.put(key, make()) if v is _MISSING else v

    def clear(self) -> None:
        with self._lock:
            self._new, self._old = {}, {}
            self.recent = self._new

    def values(self) -> list:
        """The cached values (a snapshot)."""
        with self._lock:
            return list({**self._old, **self._new}.values())

    def __len__(self) -> int:
        return len(self._new.keys() | self._old.keys())

    def __contains__(self, key) -> bool:
        return key in self._new or key in self._old


__all__ = ["LRU", "BUILD_LOCK"]
