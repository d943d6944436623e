"""Where compiled kernels live: the cache directory, its fallback, and leftovers of killed builds.

``root()`` is ``SGNN_CACHE_DIR`` when it can be created and written. Otherwise (a read-only home,
a path under a regular file) kernels go to one private temporary directory for the rest of the
process, removed at exit, and a single ``RuntimeWarning`` says so. Only when that fails too is
there a ``CompilerError``, naming ``SGNN_CACHE_DIR``.

The first time a process opens a cache directory it removes stale build files: the temporary
``.<key>.<pid>.<random>.so`` binaries and ``<key>.json.<pid>`` metadata a killed or crashed
compile leaves behind, when the owning process is gone or the file is over ``STALE_SECONDS`` old.
"""
from __future__ import annotations

import atexit
import errno
import itertools
import os
import shutil
import tempfile
import threading
import time
import warnings
from pathlib import Path

from ..config import log, settings
from ..errors import CompilerError

STALE_SECONDS = 3600
_lock = threading.Lock()
_opened: set = set()  # directories this process has checked and swept
_broken: dict = {}  # directory -> the OSError that made it unusable
_fallback: Path | None = None


def root() -> Path:
    """A writable cache directory: ``SGNN_CACHE_DIR``, else the private fallback."""
    d = settings().cache_dir
    if d in _opened:
        return d
    with _lock:
        if d in _broken:
            return _fallback_for(d, _broken[d])
        try:
            d.mkdir(parents=True, exist_ok=True)
            if not os.access(d, os.W_OK | os.X_OK):
                raise PermissionError(errno.EACCES, "not writable", str(d))
        except OSError as e:
            _broken[d] = e
            return _fallback_for(d, e)
        sweep(d)
        _opened.add(d)
    return d


def unusable(d: Path, err: OSError) -> Path:
    """Record that writing inside ``d`` failed; the directory to use instead."""
    with _lock:
        _opened.discard(d)
        _broken[d] = err
        return _fallback_for(d, err)


def _fallback_for(d: Path, err: OSError) -> Path:
    global _fallback
    if _fallback is None:
        try:
            _fallback = Path(tempfile.mkdtemp(prefix="sgnn-cache-"))
        except OSError as e:
            raise CompilerError(f"the kernel cache directory {d} is unusable ({err}) and no temporary "
                                f"directory could be created ({e}); set SGNN_CACHE_DIR to a writable "
                                f"directory") from e
        atexit.register(shutil.rmtree, _fallback, True)
        warnings.warn(f"sgnn: the kernel cache directory {d} is unusable ({err}); compiling into the private "
                      f"temporary directory {_fallback} instead (removed at exit, so kernels are rebuilt "
                      f"next run). Set SGNN_CACHE_DIR to a writable directory.", RuntimeWarning, stacklevel=4)
    return _fallback


def temp_prefix(key: str) -> str:
    """Name prefix of a build's temporary binary: the owning pid lets ``sweep`` judge it."""
    return f".{key}.{os.getpid()}."


def _owner(p: Path) -> int | None:
    parts = p.name.split(".")
    field = parts[2] if p.suffix == ".so" and len(parts) >= 5 else parts[-1]
    return int(field) if field.isdigit() else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. EPERM: it exists, under another user
        return True
    return True


def sweep(d: Path, now: float | None = None) -> int:
    """Remove stale temporary build files under ``d``; returns how many were removed."""
    now = time.time() if now is None else now
    removed = 0
    for p in itertools.chain(d.glob("*/.*.so"), d.glob("*/*.json.*")):
        try:
            pid = _owner(p)
            dead = pid is not None and pid != os.getpid() and not _alive(pid)
            if dead or now - p.stat().st_mtime > STALE_SECONDS:
                p.unlink()
                removed += 1
        except OSError:
            continue
    if removed:
        log(1, f"removed {removed} stale temporary build file(s) from {d}")
    return removed


def reset() -> None:
    """Forget opened and broken directories (tests)."""
    with _lock:
        _opened.clear()
        _broken.clear()


__all__ = ["root", "unusable", "sweep", "temp_prefix", "STALE_SECONDS"]
