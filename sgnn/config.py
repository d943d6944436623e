"""Process-wide settings, read from the environment and overridable in code.

SGNN_DEBUG ladder (``with sgnn.config(debug=4):`` overrides it):

====  ===============================================================
 1    one line per kernel build or load (kernel, hit or miss, ms)
 2    + the schedule decisions
 3    + the loop IR
 4    + the generated C++
 5    + the compiler command line and its stderr
====  ===============================================================

Other variables: ``SGNN_CXX`` (compiler, default ``g++``), ``SGNN_CXXFLAGS`` (extra flags),
``SGNN_CACHE_DIR`` (default ``~/.cache/sgnn``; when it cannot be created or written, kernels are
compiled into a private temporary directory removed at exit, with one warning),
``SGNN_CACHE=0`` (no disk cache), ``SGNN_ASSERT_CACHED=1`` (any compile is an error; for timed
runs), ``SGNN_COMPILE_TIMEOUT`` (seconds one compiler run may take, default 300; on timeout its
whole process group is killed and a ``CompilerError`` names this variable), ``SGNN_NO_BF16_ISA=1``
(``config(portable_math=True)``: bfloat16 / float16 kernels convert with shifts and scalar code
instead of the AVX-512 BF16 / F16C instructions; part of the kernel source, so of its cache key),
``SGNN_PRECISION`` (``config(precision=...)``): ``"bf16"`` runs a float32 model's inference in the
mixed mode (sparse aggregation on bfloat16 copies of the features, float32 outputs and parameters;
one layer-planner decision, ``sgnn.explain`` shows it); ``"fp32"`` / unset: off.
``SGNN_SPILL_DIR`` (``config(spill_dir=...)``, default unset: off): buffers of at least
``SGNN_SPILL_MIN_BYTES`` (``config(spill_min_bytes=...)``, default 256 MiB) are file-backed shared
mappings of unlinked files in that directory, so the OS can write them back and evict them when RAM
is short (graphs whose activations do not fit in memory; see ``engine/memory.py``).
"""
from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import dataclass, fields, replace
from pathlib import Path


def _env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default


def _env_seconds(name: str, default: float) -> float:
    try:
        v = float(os.environ.get(name, default))
    except ValueError:
        return default
    return v if v > 0 else default


SPILL_MIN_BYTES = 256 << 20


@dataclass(frozen=True)
class Settings:
    debug: int
    cxx: str
    cxxflags: str
    cache_dir: Path
    cache: bool
    assert_cached: bool
    compile_timeout: float = 300.0
    portable_math: bool = False
    precision: str | None = None  # "bf16": the mixed mode for float32 models; None: off
    spill_dir: Path | None = None  # large buffers as mappings of unlinked files here; None: off
    spill_min_bytes: int = SPILL_MIN_BYTES


# accepted spellings of ``precision`` -> the canonical one (None: off)
PRECISIONS = {None: None, "": None, "fp32": None, "float32": None, "bf16": "bf16", "bfloat16": "bf16"}


def precision_of(value, where: str = "precision") -> str | None:
    """The canonical ``precision`` setting of ``value``, or a UserError naming the accepted ones."""
    key = value.lower() if isinstance(value, str) else value
    if (key is None or isinstance(key, str)) and key in PRECISIONS:
        return PRECISIONS[key]
    from .errors import UserError
    why = (" (float16 is not offered as a mixed mode: its range, 65504, can overflow a float32 model's "
           "features, and this engine has no fast float16 GEMM; for float16 use model.half())"
           if key in ("fp16", "float16", "half") else "")
    raise UserError(f"{where}: expected 'bf16' (mixed bfloat16 aggregation for float32 models), 'fp32' or None "
                    f"(got {value!r}){why}")


def _from_env() -> Settings:
    return Settings(
        debug=_env_int("SGNN_DEBUG", 0),
        cxx=os.environ.get("SGNN_CXX", "g++"),
        cxxflags=os.environ.get("SGNN_CXXFLAGS", ""),
        cache_dir=Path(os.environ.get("SGNN_CACHE_DIR", "~/.cache/sgnn")).expanduser(),
        cache=os.environ.get("SGNN_CACHE", "1") != "0",
        assert_cached=os.environ.get("SGNN_ASSERT_CACHED", "0") == "1",
        compile_timeout=_env_seconds("SGNN_COMPILE_TIMEOUT", 300.0),
        portable_math=os.environ.get("SGNN_NO_BF16_ISA", "0") == "1",
        precision=os.environ.get("SGNN_PRECISION") or None,  # checked where it is read (precision_of)
        # both checked where they are read (spill)
        spill_dir=Path(os.environ["SGNN_SPILL_DIR"]).expanduser() if os.environ.get("SGNN_SPILL_DIR") else None,
        spill_min_bytes=_env_int("SGNN_SPILL_MIN_BYTES", SPILL_MIN_BYTES),
    )


def spill_dir_of(value, where: str = "spill_dir") -> Path | None:
    """``value`` as a writable directory (None / empty: off), or a UserError naming it."""
    if value is None or value == "":
        return None
    path = Path(value).expanduser()
    why = ("does not exist" if not path.exists() else "is not a directory" if not path.is_dir()
           else None if os.access(path, os.W_OK | os.X_OK) else "is not writable")
    if why:
        from .errors import UserError
        raise UserError(f"{where}: the spill directory {str(path)!r} {why}; pass an existing writable "
                        f"directory on a disk with room for the activations, or None to turn spilling off")
    return path


def spill_min_bytes_of(value, where: str = "spill_min_bytes") -> int:
    """``value`` as a positive byte count (None / empty: 256 MiB), or a UserError."""
    if value is None or value == "":
        return SPILL_MIN_BYTES
    n = value
    if isinstance(value, str):
        try:
            n = int(value)
        except ValueError:
            n = None
    if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
        from .errors import UserError
        raise UserError(f"{where}: expected a positive number of bytes (got {value!r})")
    return n


_stack: list[Settings] = []


def settings() -> Settings:
    """The settings in force (the innermost ``config()`` override, else the environment)."""
    return _stack[-1] if _stack else _from_env()


def precision() -> str | None:
    """``settings().precision`` without building the settings (read on every layer call)."""
    return _stack[-1].precision if _stack else os.environ.get("SGNN_PRECISION") or None


def spill() -> tuple[Path | None, int]:
    """``(spill_dir, spill_min_bytes)`` in force, checked, without building the other settings (read
    for every buffer of 4 MiB or more; the directory may have gone since ``config`` checked it)."""
    if _stack:
        s = _stack[-1]
        return (spill_dir_of(s.spill_dir), s.spill_min_bytes) if s.spill_dir is not None else (None, 0)
    d = os.environ.get("SGNN_SPILL_DIR")
    if not d:
        return None, 0
    return (spill_dir_of(d, "SGNN_SPILL_DIR"),
            spill_min_bytes_of(os.environ.get("SGNN_SPILL_MIN_BYTES"), "SGNN_SPILL_MIN_BYTES"))


@contextlib.contextmanager
def config(**overrides):
    """Override settings for a block: ``with sgnn.config(debug=4, cxx="clang++"): ...``."""
    names = {f.name for f in fields(Settings)}
    unknown = set(overrides) - names
    if unknown:
        from .errors import UserError
        raise UserError(f"config: unknown setting(s) {sorted(unknown)}; expected some of {sorted(names)}")
    if "precision" in overrides:
        overrides["precision"] = precision_of(overrides["precision"])
    if "cache_dir" in overrides:
        overrides["cache_dir"] = Path(overrides["cache_dir"]).expanduser()
    if "spill_dir" in overrides:
        overrides["spill_dir"] = spill_dir_of(overrides["spill_dir"])
    if "spill_min_bytes" in overrides:
        overrides["spill_min_bytes"] = spill_min_bytes_of(overrides["spill_min_bytes"])
    _stack.append(replace(settings(), **overrides))
    try:
        yield _stack[-1]
    finally:
        _stack.pop()


def log(level: int, msg: str) -> None:
    """Print ``msg`` to stderr when the debug level is at least ``level``."""
    if settings().debug >= level:
        print(f"[sgnn] {msg}", file=sys.stderr, flush=True)
