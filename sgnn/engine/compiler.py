"""C++ source → shared object → ``ctypes`` library, with an on-disk cache.

The cache key hashes the source, the flags, the compiler's version, the CPU and
``CACHE_VERSION``. An entry is ``<key>.so`` plus ``<key>.json`` holding the binary's SHA-256;
a binary whose hash does not match (truncated, corrupted) is rebuilt. Builds write to a
temporary file and ``os.replace`` it under a per-key file lock, so concurrent processes never
see half a binary and all end up loading the same one.
"""
from __future__ import annotations

import ctypes
import functools
import hashlib
import json
import os
import platform
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from filelock import FileLock

from ..config import log, settings
from ..errors import CompilerError

CACHE_VERSION = 1
CSRC = Path(__file__).resolve().parents[2] / "csrc"
BASE_FLAGS = ("-std=c++17", "-O3", "-march=native", "-fopenmp", "-fPIC", "-shared",
              # errno is never read; without it libm calls vectorise
              "-fno-math-errno", "-fno-plt")

_loaded: dict[str, ctypes.CDLL] = {}


@functools.lru_cache(maxsize=8)
def _compiler_identity(cxx: str) -> str:
    path = shutil.which(cxx)
    if path is None:
        raise CompilerError(f"C++ compiler {cxx!r} not found (set $SGNN_CXX to an installed compiler, "
                            f"e.g. g++ or clang++)")
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise CompilerError(f"C++ compiler {cxx!r} ({path}) does not run: {e}") from e
    if out.returncode != 0:
        raise CompilerError(f"C++ compiler {cxx!r} ({path}) failed on --version: {out.stderr.strip()}")
    return path + "\n" + out.stdout.splitlines()[0] if out.stdout else path


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
    fd, tmp = tempfile.mkstemp(dir=so.parent, prefix=f".{so.stem}.", suffix=".so")
    os.close(fd)
    cpp.write_text(source)
    cmd = [_compiler_identity(s.cxx).split("\n")[0], *flags(), str(cpp), "-o", tmp]
    log(5, " ".join(cmd))
    t0 = time.perf_counter()
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired) as e:
        os.unlink(tmp)
        raise CompilerError(f"compiling {name} failed to run: {e}\ncommand: {' '.join(cmd)}") from e
    if out.stderr:
        log(5, out.stderr)
    if out.returncode != 0:
        os.unlink(tmp)
        tail = "\n".join(out.stderr.splitlines()[-40:])
        raise CompilerError(f"compiling {name} failed (exit {out.returncode})\ncommand: {' '.join(cmd)}\n"
                            f"source kept at: {cpp}\n--- last lines of stderr ---\n{tail}")
    meta = {"sha256": _sha(Path(tmp)), "name": name, "compile_ms": 1e3 * (time.perf_counter() - t0)}
    os.replace(tmp, so)
    mtmp = so.with_suffix(f".json.{os.getpid()}")
    mtmp.write_text(json.dumps(meta))
    os.replace(mtmp, so.with_suffix(".json"))


def build(source: str, name: str = "kernel") -> tuple[ctypes.CDLL, dict]:
    """Compile ``source`` (or fetch it from the cache) and load it; returns (library, info)."""
    s = settings()
    key = cache_key(source)
    if key in _loaded:
        return _loaded[key], {"key": key, "hit": True, "memo": True}
    t0 = time.perf_counter()
    if s.cache:
        directory = s.cache_dir / key[:2]
        directory.mkdir(parents=True, exist_ok=True)
        so, meta = directory / f"{key}.so", directory / f"{key}.json"
        hit = _valid_entry(so, meta)
        if not hit:
            with FileLock(str(directory / f"{key}.lock"), timeout=600):
                hit = _valid_entry(so, meta)  # another process may have built it meanwhile
                if not hit:
                    if so.exists():
                        log(1, f"cache entry {so} is corrupted; rebuilding")
                    _compile(source, so, name)
    else:
        tmpdir = Path(tempfile.mkdtemp(prefix="sgnn-"))
        so, hit = tmpdir / f"{key}.so", False
        _compile(source, so, name)
    try:
        lib = ctypes.CDLL(str(so))
    except OSError as e:
        raise CompilerError(f"loading compiled kernel {name} from {so} failed: {e}") from e
    finally:
        if not s.cache:  # the loaded mapping outlives the file: leave nothing behind
            shutil.rmtree(so.parent, ignore_errors=True)
    _loaded[key] = lib
    ms = 1e3 * (time.perf_counter() - t0)
    log(1, f"{name}: {'hit' if hit else 'miss'} {ms:.1f} ms ({so})")
    return lib, {"key": key, "hit": hit, "memo": False, "path": str(so), "ms": ms}


def build_csrc(filename: str) -> ctypes.CDLL:
    """Build a hand-written runtime source from ``csrc/`` through the same cache."""
    path = CSRC / filename
    source = f'// {filename}\n#line 1 "{filename}"\n' + path.read_text()
    return build(source, name=filename)[0]
