"""C++ source → shared object → ``ctypes`` library, with an on-disk cache.

The cache key hashes the source, the flags, the compiler's version, the CPU and
``CACHE_VERSION``. An entry is ``<key>.so`` plus ``<key>.json`` holding the binary's SHA-256;
a binary whose hash does not match (truncated, corrupted) is rebuilt. Builds write to a
temporary file and ``os.replace`` it under a per-key file lock, so concurrent processes never
see half a binary and all end up loading the same one. An entry that fails to load is rebuilt once.

The compiler runs in its own process group; past ``SGNN_COMPILE_TIMEOUT`` seconds (default 300)
the whole group is killed (no orphaned ``cc1plus``) and a ``CompilerError`` names the variable.
Where the cache lives, its fallback when unwritable and the sweep of stale build files are in
``diskcache``.
"""
from __future__ import annotations

import ctypes
import functools
import hashlib
import json
import os
import platform
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import weakref
from pathlib import Path

from filelock import FileLock

from ..config import log, settings
from ..errors import CompilerError
from . import diskcache

CACHE_VERSION = 1
CSRC = Path(__file__).resolve().parents[1] / "csrc"   # sgnn/csrc: package data (a checkout: a link to csrc/)
BASE_FLAGS = ("-std=c++17", "-O3", "-march=native", "-fopenmp", "-fPIC", "-shared",
              # errno is never read; without it libm calls vectorise
              "-fno-math-errno", "-fno-plt")

# key -> loaded library, alive while some kernel holds it (a plan evicted from its LRU lets it go)
_loaded: "weakref.WeakValueDictionary[str, ctypes.CDLL]" = weakref.WeakValueDictionary()
_csrc: dict[str, ctypes.CDLL] = {}  # the hand-written runtime sources: one entry per file
_build_lock = threading.RLock()  # one build at a time in this process (processes: the file lock)


def run_tool(cmd: list[str], timeout: float, what: str) -> tuple[int, str, str]:
    """Run ``cmd`` in its own process group; (exit code, stdout, stderr). On timeout (or an
    interrupt) the whole group is killed, so no child of the compiler outlives the call."""
    try:
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             start_new_session=True)
    except OSError as e:
        raise CompilerError(f"{what} failed to start: {e}\ncommand: {' '.join(cmd)}") from e
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(p)
        raise CompilerError(f"{what} did not finish within {timeout:g} s (SGNN_COMPILE_TIMEOUT); its process "
                            f"group was killed. Raise SGNN_COMPILE_TIMEOUT for a slow machine.\n"
                            f"command: {' '.join(cmd)}") from None
    except BaseException:
        _kill_group(p)
        raise
    return p.returncode, out, err


def _kill_group(p: subprocess.Popen) -> None:
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    for f in (p.stdout, p.stderr):
        if f is not None:
            f.close()
    try:
        p.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass


@functools.lru_cache(maxsize=8)
def _compiler_identity(cxx: str) -> str:
    path = shutil.which(cxx)
    if path is None:
        raise CompilerError(f"C++ compiler {cxx!r} not found (set $SGNN_CXX to an installed compiler, "
                            f"e.g. g++ or clang++)")
    code, out, err = run_tool([path, "--version"], min(30.0, settings().compile_timeout),
                              f"C++ compiler {cxx!r} ({path}) --version")
    if code != 0:
        raise CompilerError(f"C++ compiler {cxx!r} ({path}) failed on --version: {err.strip()}")
    return path + "\n" + out.splitlines()[0] if out else path


@functools.lru_cache(maxsize=1)
def _cpu_identity() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
        keep = [ln for ln in text.splitlines() if ln.startswith(("model name", "flags"))][:2]
        return "\n".join(keep)
    except OSError:
        return platform.processor() or platform.machine()


def _headers_digest() -> str:
    h = hashlib.sha256()
    for p in sorted(CSRC.glob("*.h")):
        h.update(p.name.encode() + p.read_bytes())
    return h.hexdigest()


def flags() -> list[str]:
    return [*BASE_FLAGS, f"-I{CSRC}", *settings().cxxflags.split()]


def cache_key(source: str) -> str:
    s = settings()
    h = hashlib.sha256()
    for part in (str(CACHE_VERSION), source, " ".join(flags()), _compiler_identity(s.cxx),
                 _cpu_identity(), _headers_digest()):
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()[:32]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _valid_entry(so: Path, meta: Path) -> bool:
    try:
        return so.exists() and json.loads(meta.read_text())["sha256"] == _sha(so)
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _compile(source: str, so: Path, name: str) -> None:
    s = settings()
    if s.assert_cached:
        raise CompilerError(f"SGNN_ASSERT_CACHED=1 but kernel {name} is not in the cache ({so.parent})")
    so.parent.mkdir(parents=True, exist_ok=True)
    cpp = so.with_suffix(".cpp")
    fd, tmp = tempfile.mkstemp(dir=so.parent, prefix=diskcache.temp_prefix(so.stem), suffix=".so")
    os.close(fd)
    try:
        cpp.write_text(source)
        cmd = [_compiler_identity(s.cxx).split("\n")[0], *flags(), str(cpp), "-o", tmp]
        log(5, " ".join(cmd))
        t0 = time.perf_counter()
        code, _, err = run_tool(cmd, s.compile_timeout, f"compiling {name}")
        if err:
            log(5, err)
        if code != 0:
            tail = "\n".join(err.splitlines()[-40:])
            raise CompilerError(f"compiling {name} failed (exit {code})\ncommand: {' '.join(cmd)}\n"
                                f"source kept at: {cpp}\n--- last lines of stderr ---\n{tail}")
        meta = {"sha256": _sha(Path(tmp)), "name": name, "compile_ms": 1e3 * (time.perf_counter() - t0)}
        os.replace(tmp, so)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    mtmp = so.with_suffix(f".json.{os.getpid()}")
    mtmp.write_text(json.dumps(meta))
    os.replace(mtmp, so.with_suffix(".json"))


def _cached(source: str, key: str, name: str, root: Path) -> tuple[Path, bool]:
    """The cache entry of ``key`` under ``root``, compiled first unless valid; (path, hit)."""
    directory = root / key[:2]
    directory.mkdir(parents=True, exist_ok=True)
    so, meta = directory / f"{key}.so", directory / f"{key}.json"
    if _valid_entry(so, meta):
        return so, True
    with FileLock(str(directory / f"{key}.lock"), timeout=600):
        if _valid_entry(so, meta):  # another process may have built it meanwhile
            return so, True
        if so.exists():
            log(1, f"cache entry {so} is corrupted; rebuilding")
        _compile(source, so, name)
    return so, False


def _entry(source: str, key: str, name: str) -> tuple[Path, bool]:
    """Compile into (or fetch from) the cache; an unwritable cache falls back to a private directory."""
    root = diskcache.root()
    try:
        return _cached(source, key, name, root)
    except OSError as e:  # PermissionError, read-only file system, ENOSPC, ...
        fallback = diskcache.unusable(root, e)
        if fallback == root:
            raise CompilerError(f"cannot write compiled kernels to {root} ({e}); set SGNN_CACHE_DIR to a "
                                f"writable directory") from e
        return _cached(source, key, name, fallback)


def _load(so: Path, name: str) -> ctypes.CDLL:
    try:
        return ctypes.CDLL(str(so))
    except OSError as e:
        raise CompilerError(f"loading compiled kernel {name} from {so} failed: {e}") from e


def _uncached(source: str, key: str, name: str) -> ctypes.CDLL:
    """SGNN_CACHE=0: compile into a fresh temporary directory, load, and remove it."""
    try:
        tmpdir = Path(tempfile.mkdtemp(prefix="sgnn-"))
    except OSError as e:
        raise CompilerError(f"SGNN_CACHE=0 but no temporary directory could be created: {e}") from e
    try:
        so = tmpdir / f"{key}.so"
        _compile(source, so, name)
        return _load(so, name)
    finally:  # the loaded mapping outlives the file: leave nothing behind
        shutil.rmtree(tmpdir, ignore_errors=True)


def build(source: str, name: str = "kernel") -> tuple[ctypes.CDLL, dict]:
    """Compile ``source`` (or fetch it from the cache) and load it; returns (library, info).

    The library stays loaded while the caller holds it (the in-process memo is weak)."""
    key = cache_key(source)
    lib = _loaded.get(key)
    if lib is not None:
        return lib, {"key": key, "hit": True, "memo": True}
    with _build_lock:
        lib = _loaded.get(key)
        if lib is not None:
            return lib, {"key": key, "hit": True, "memo": True}
        t0 = time.perf_counter()
        if not settings().cache:
            lib, so, hit = _uncached(source, key, name), None, False
        else:
            so, hit = _entry(source, key, name)
            lib = _load_or_rebuild(source, key, name, so, hit)
        _loaded[key] = lib
    ms = 1e3 * (time.perf_counter() - t0)
    log(1, f"{name}: {'hit' if hit else 'miss'} {ms:.1f} ms ({so or 'not cached'})")
    return lib, {"key": key, "hit": hit, "memo": False, "path": str(so), "ms": ms}


def _load_or_rebuild(source: str, key: str, name: str, so: Path, hit: bool) -> ctypes.CDLL:
    """Load a cache entry; one that passed its hash check but does not load is rebuilt once."""
    try:
        return _load(so, name)
    except CompilerError:
        if not hit:
            raise
    log(1, f"cache entry {so} does not load; rebuilding")
    for p in (so, so.with_suffix(".json")):
        p.unlink(missing_ok=True)
    so, _ = _entry(source, key, name)
    return _load(so, name)


def build_csrc(filename: str) -> ctypes.CDLL:
    """Build a hand-written runtime source from ``csrc/`` through the same cache (kept loaded)."""
    lib = _csrc.get(filename)
    if lib is None:
        path = CSRC / filename
        source = f'// {filename}\n#line 1 "{filename}"\n' + path.read_text()
        lib = _csrc[filename] = build(source, name=filename)[0]
    return lib
